"""LoRA export and base + adapter in llama.cpp, checked by logits on the two real demo models.

A wrong Q/K row order in the export is invisible in a chat (the model still "learns"), so the exporter is
checked by teacher-forced KL between transformers + peft and llama.cpp + the exported adapter on the same
token ids: it must sit at the quantization noise floor, and be clearly worse with the reordering disabled.
The fp32 conversion of each GGUF (~30 s SmolLM2, ~80 s gemma) is cached in the session's cache dir.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

pytest.importorskip("torch")
pytest.importorskip("peft")

from tuitune.engines import Request, Sampling, open_engine, resolve_model
from tuitune.engines.llama import LlamaCppEngine
from tuitune.errors import ModelFileError, TuituneError
from tuitune.training.export import export_adapter

TEXT = (
    "The history of the bicycle spans more than two centuries. Early designs had no pedals: riders pushed "
    "themselves along with their feet. Pedals, chains and pneumatic tyres came later, and by 1900 the bicycle "
    "had become a cheap, practical way for millions of people to travel to work, visit friends, and explore "
    "the countryside. Today cities build protected lanes because cycling is healthy, quiet and clean."
)
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
NOISE_FLOOR = 0.02  # measured ≈ 0.003-0.004 for both base models: Q4 llama.cpp kernels vs fp32 torch
GREEDY = Sampling(temperature=0.0, max_tokens=24, seed=1)


@dataclass
class Lora:
    """A seeded, non-trivial PEFT LoRA on a real model, with transformers' logits for TEXT."""

    gguf: Path
    peft_dir: Path
    ids: list[int]
    hf_lora: np.ndarray  # logits with the adapter
    hf_base: np.ndarray  # logits with the adapter disabled
    llama_base: np.ndarray  # llama.cpp, no adapter


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean over positions of KL(p || q) between next-token distributions."""
    import torch

    p = torch.log_softmax(torch.as_tensor(p_logits, dtype=torch.float64), -1)
    q = torch.log_softmax(torch.as_tensor(q_logits, dtype=torch.float64), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def make_lora(gguf: Path, model_id: str, targets: list[str], b_std: float, out: Path, cache: Path) -> Lora:
    """Convert (cached), wrap in a seeded LoRA with random B (so it matters), save, and record logits."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuitune.training.convert import load_trainable, trainable_weights

    base = LlamaCppEngine(gguf, model_id=model_id, n_ctx=512, logits_all=True)
    try:
        ids = base.tokenize(TEXT)  # llama.cpp's tokens (with BOS when the GGUF asks for it) feed both sides
        llama_base = base.logits(ids)
    finally:
        base.close()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUITUNE_CACHE_DIR", str(cache))
        weights = trainable_weights(gguf, model_id)
    torch.manual_seed(0)
    model = get_peft_model(
        load_trainable(weights), LoraConfig(r=8, lora_alpha=16, target_modules=targets, lora_dropout=0.0)
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero: an adapter that changes nothing proves nothing
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * b_std)
    model.eval()
    with torch.inference_mode():
        tokens = torch.tensor([ids])
        hf_lora = model(tokens).logits[0].float().numpy()
        with model.disable_adapter():
            hf_base = model(tokens).logits[0].float().numpy()
    model.save_pretrained(out)
    del model
    return Lora(gguf, out, ids, hf_lora, hf_base, llama_base)


@pytest.fixture(scope="module")
def smollm_lora(smollm_path: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Lora:
    out = tmp_path_factory.mktemp("smollm-lora") / "peft"
    return make_lora(smollm_path, "smollm2-135m-instruct", ATTENTION, 0.2, out, model_cache)


@pytest.fixture(scope="module")
def gemma_lora(gemma_path: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Lora:
    out = tmp_path_factory.mktemp("gemma-lora") / "peft"
    # gemma's scaled embeddings make its MLP far more sensitive: a smaller B keeps the model coherent
    return make_lora(gemma_path, "gemma-3-270m", ATTENTION + MLP, 0.02, out, model_cache)


def llama_logits(lora: Lora, adapter: Path) -> np.ndarray:
    engine = LlamaCppEngine(lora.gguf, n_ctx=512, logits_all=True, adapter_path=adapter)
    try:
        return engine.logits(lora.ids)
    finally:
        engine.close()


def test_llama_export_matches_transformers_and_needs_the_qk_reordering(smollm_lora: Lora, tmp_path: Path):
    lora = smollm_lora
    assert kl(lora.hf_base, lora.llama_base) < NOISE_FLOOR  # the two implementations agree without adapter
    assert kl(lora.hf_lora, lora.hf_base) > 0.1  # the adapter really changes the model
    adapter = export_adapter(lora.peft_dir, lora.gguf, tmp_path / "smollm-lora.gguf")
    exact = kl(lora.hf_lora, llama_logits(lora, adapter))
    unordered = export_adapter(lora.peft_dir, lora.gguf, tmp_path / "wrong.gguf", _reorder_qk=False)
    wrong = kl(lora.hf_lora, llama_logits(lora, unordered))
    print(f"smollm2 KL(hf+peft || llama.cpp+adapter): {exact:.4f} reordered, {wrong:.4f} without")
    assert exact < NOISE_FLOOR
    assert wrong > 0.05 and wrong > 10 * exact


def test_gemma3_export_matches_transformers(gemma_lora: Lora, tmp_path: Path):
    lora = gemma_lora
    assert kl(lora.hf_base, lora.llama_base) < NOISE_FLOOR
    assert kl(lora.hf_lora, lora.hf_base) > 0.05
    adapter = export_adapter(lora.peft_dir, lora.gguf, tmp_path / "gemma-lora.gguf")
    exact = kl(lora.hf_lora, llama_logits(lora, adapter))
    print(f"gemma3 KL(hf+peft || llama.cpp+adapter): {exact:.4f} (no reordering for gemma3)")
    assert exact < NOISE_FLOOR
    assert kl(lora.hf_lora, lora.llama_base) > 5 * exact  # llama.cpp really applies the adapter


def test_scale_zero_is_the_base_and_changes_apply_without_reload(smollm_lora: Lora, tmp_path: Path):
    lora = smollm_lora
    adapter = export_adapter(lora.peft_dir, lora.gguf, tmp_path / "lora.gguf")
    engine = LlamaCppEngine(lora.gguf, n_ctx=512, logits_all=True, adapter_path=adapter, adapter_scale=0.0)
    try:
        assert engine.adapter_scale == 0.0
        assert np.array_equal(engine.logits(lora.ids), lora.llama_base)
        engine.set_adapter_scale(1.0)
        full = engine.logits(lora.ids)
        assert kl(lora.hf_lora, full) < NOISE_FLOOR
        engine.set_adapter_scale(0.5)
        half = engine.logits(lora.ids)
        apart = kl(full, lora.llama_base)
        assert 0 < kl(half, lora.llama_base) < apart and 0 < kl(half, full) < apart  # a blend, in between
        engine.set_adapter_scale(0.0)
        assert np.array_equal(engine.logits(lora.ids), lora.llama_base)
        engine.set_adapter_scale(1.0)
        assert np.array_equal(engine.logits(lora.ids), full)
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(TuituneError, match="out of range"):
                engine.set_adapter_scale(bad)
    finally:
        engine.close()


def test_scale_change_drops_the_prompt_cache(smollm_lora: Lora, smollm: LlamaCppEngine, tmp_path: Path):
    """Same prompt after a scale change: the KV cache from the old weights must not answer."""
    adapter = export_adapter(smollm_lora.peft_dir, smollm_lora.gguf, tmp_path / "lora.gguf")
    request = Request.raw(TEXT[:200], GREEDY)
    base_text = smollm.generate(request).run()
    engine = LlamaCppEngine(smollm_lora.gguf, n_ctx=1024, adapter_path=adapter)
    try:
        tuned_text = engine.generate(request).run()
        assert tuned_text != base_text
        engine.set_adapter_scale(0.0)
        assert engine.generate(request).run() == base_text
        engine.set_adapter_scale(1.0)
        assert engine.generate(request).run() == tuned_text
    finally:
        engine.close()


def _user_catalog(config_dir: Path, adapter: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "models.toml").write_text(
        f"""[[model]]
id = "smollm-tuned"
name = "SmolLM2 + test LoRA"
kind = "finetuned"
family = "llama"
base = "smollm2-135m-instruct"
adapter = "{adapter}"
""",
        encoding="utf-8",
    )


def test_finetuned_catalog_entry_runs_as_base_plus_adapter(
    smollm_lora: Lora, smollm: LlamaCppEngine, tuitune_dirs: dict[str, Path], tmp_path: Path
):
    from tuitune.catalog import load_catalog
    from tuitune.sources import is_installed, model_path

    adapter = export_adapter(smollm_lora.peft_dir, smollm_lora.gguf, tmp_path / "tuned.gguf")
    _user_catalog(tuitune_dirs["config"], adapter)
    catalog = load_catalog()
    entry = catalog.get("smollm-tuned")
    assert is_installed(entry) and model_path(entry) == smollm_lora.gguf
    request = Request.raw("The capital of France is", GREEDY)
    engine = open_engine(resolve_model("smollm-tuned", catalog), adapter_scale=0.0)
    try:
        assert engine.model_id == "smollm-tuned" and engine.adapter_scale == 0.0
        assert engine.generate(request).run() == smollm.generate(request).run()
    finally:
        engine.close()
    with pytest.raises(TuituneError, match="applies to finetuned"):
        open_engine(resolve_model("smollm2-135m-instruct", catalog), adapter_scale=0.5)

    adapter.write_bytes(adapter.read_bytes()[:100_000])  # a cut copy
    with pytest.raises(ModelFileError, match="truncated"):
        open_engine(resolve_model("smollm-tuned", catalog))
    adapter.unlink()
    assert not is_installed(entry)
    with pytest.raises(ModelFileError, match="does not exist"):
        open_engine(resolve_model("smollm-tuned", catalog))


def test_adapter_for_another_architecture_is_refused(smollm_lora: Lora, gemma_path: Path, tmp_path: Path):
    adapter = export_adapter(smollm_lora.peft_dir, smollm_lora.gguf, tmp_path / "lora.gguf")
    with pytest.raises(ModelFileError, match="made for a llama model"):
        LlamaCppEngine(gemma_path, adapter_path=adapter)
    with pytest.raises(TuituneError, match="trained on a llama model"):
        export_adapter(smollm_lora.peft_dir, gemma_path, tmp_path / "other.gguf")


def _variant(lora: Lora, tmp_path: Path, **changes) -> Path:
    directory = tmp_path / "variant"
    shutil.copytree(lora.peft_dir, directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    config.update(changes)
    (directory / "adapter_config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"use_dora": True}, ["DoRA", "retrain with plain LoRA"]),
        ({"modules_to_save": ["lm_head"]}, ["modules_to_save (lm_head)", "retrain without modules_to_save"]),
        ({"alpha_pattern": {"q_proj": 32}}, ["alpha_pattern", "one alpha"]),
        ({"bias": "all"}, ["bias = 'all'"]),
        ({"target_modules": ["q_proj", "embed_tokens"]}, ["embed_tokens", "no llama.cpp adapter tensor"]),
    ],
    ids=["dora", "modules-to-save", "alpha-pattern", "bias", "unknown-module"],
)
def test_export_refusals_are_one_clear_message(smollm_lora: Lora, tmp_path: Path, changes: dict, fragments: list[str]):
    with pytest.raises(TuituneError) as raised:
        export_adapter(_variant(smollm_lora, tmp_path, **changes), smollm_lora.gguf, tmp_path / "out.gguf")
    message = str(raised.value)
    assert message.startswith("cannot export") and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert not (tmp_path / "out.gguf").exists()


def test_cli_export_adapter_and_adapter_scale(smollm_lora: Lora, tuitune_dirs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "cli.gguf"
    result = run_cli("export-adapter", str(smollm_lora.peft_dir), "--base", "smollm2-135m-instruct", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file() and "wrote" in result.stdout
    refused = run_cli("export-adapter", str(_variant(smollm_lora, tmp_path, use_dora=True)), "--base",
                      "smollm2-135m-instruct", "--out", str(tmp_path / "dora.gguf"))  # fmt: skip
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode != 0 and len(lines) == 1 and "DoRA" in lines[0], refused.stderr

    _user_catalog(tuitune_dirs["config"], out)
    prompt, flags = "The capital of France is", ("--mode", "raw", "--temperature", "0", "--max-tokens", "12", "--json")
    pair = run_cli("compare", prompt, "--models", "smollm2-135m-instruct,smollm-tuned", *flags)
    base, tuned = (r["text"] for r in json.loads(pair.stdout)["results"])
    assert pair.returncode == 0 and base != tuned, pair.stderr  # compare: base vs finetuned at full strength
    at_zero = run_cli(
        "compare", prompt, "--models", "smollm2-135m-instruct,smollm-tuned", "--adapter-scale", "0", *flags
    )
    assert [r["text"] for r in json.loads(at_zero.stdout)["results"]] == [base, base], at_zero.stderr
    chat = run_cli("chat", "smollm-tuned", prompt, "--adapter-scale", "0", *flags)
    assert chat.returncode == 0 and json.loads(chat.stdout)["text"] == base, chat.stderr
    wrong = run_cli("chat", "smollm2-135m-instruct", "hi", "--adapter-scale", "0.5")
    assert wrong.returncode != 0 and "is not one" in wrong.stderr


def test_adapter_gguf_metadata_and_rslora_alpha(smollm_lora: Lora, tmp_path: Path):
    from gguf import GGUFReader

    def read(path: Path) -> tuple[dict, dict]:
        reader = GGUFReader(path)
        return {field.name: field.contents() for field in reader.fields.values()}, {t.name: t for t in reader.tensors}

    fields, tensors = read(export_adapter(smollm_lora.peft_dir, smollm_lora.gguf, tmp_path / "plain.gguf"))
    assert fields["general.architecture"] == "llama" and fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora" and fields["adapter.lora.alpha"] == 16.0
    assert len(tensors) == 30 * 4 * 2  # 30 layers x q,k,v,o x (a, b)
    a, b = tensors["blk.0.attn_k.weight.lora_a"], tensors["blk.0.attn_k.weight.lora_b"]
    assert a.tensor_type.name == "F32" and list(a.shape) == [576, 8] and list(b.shape) == [8, 192]  # ggml order
    rs = _variant(smollm_lora, tmp_path, use_rslora=True)
    fields, _ = read(export_adapter(rs, smollm_lora.gguf, tmp_path / "rs.gguf"))
    assert fields["adapter.lora.alpha"] == pytest.approx(16 * 8**0.5)  # PEFT's alpha/sqrt(r) as llama.cpp's alpha/r


def test_adapter_that_does_not_fit_the_base_is_a_clear_error(smollm_path: Path, tmp_path: Path):
    from gguf import GGUFWriter

    path = tmp_path / "other-base.gguf"  # a valid llama LoRA GGUF whose shapes belong to another model
    writer = GGUFWriter(path, "llama")
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 16.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((8, 100), np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((576, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelFileError, match=r"could not load the LoRA adapter .* trained on another base"):
        LlamaCppEngine(smollm_path, adapter_path=path)


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_serve_a_finetuned_model_with_its_adapter_strength(
    smollm_lora: Lora, tuitune_dirs: dict[str, Path], tmp_path: Path, scale: float
):
    """`tuitune serve` runs base + adapter at the given strength: remote text = local text at that strength."""
    pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'tuitune[server]'")
    from tests.support.serve import start_server, stop_server
    from tuitune.engines.openai import Endpoint, OpenAIEngine

    adapter = export_adapter(smollm_lora.peft_dir, smollm_lora.gguf, tmp_path / "tuned.gguf")
    _user_catalog(tuitune_dirs["config"], adapter)
    request = Request.raw("The capital of France is", GREEDY)
    local = open_engine(resolve_model("smollm-tuned"), adapter_scale=scale)
    base = open_engine(resolve_model("smollm2-135m-instruct"))
    try:
        local_text, base_text = local.generate(request).run(), base.generate(request).run()
    finally:
        local.close()
        base.close()
    assert (local_text == base_text) == (scale == 0.0)  # the test adapter changes the greedy text
    process, base_url = start_server("smollm-tuned", "--adapter-scale", str(scale))
    try:
        served = OpenAIEngine(Endpoint(name="served", base_url=base_url, model="smollm-tuned"))
        assert served.generate(request).run() == local_text
    finally:
        stop_server(process)
