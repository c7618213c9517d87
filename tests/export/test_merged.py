"""`tuitune export`: a real finetune (SmolLM2 + a seeded LoRA) written as lora-gguf, merged-gguf, ollama and peft.

The LoRA is built directly with numpy and safetensors in the shapes the base GGUF declares (no torch, no
training: seconds), then exported to the llama.cpp adapter format the way a finished run does. The Modelfile is
read back with a parser written here from Ollama's Modelfile syntax, so a value that would end early and inject
an instruction shows up as an extra or a changed command. A merged GGUF is checked by behaviour: its teacher-forced
logits in llama.cpp against the base with the adapter attached at the same strength.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import one_clear_error, run_cli

np = pytest.importorskip("numpy")
pytest.importorskip("safetensors")
pytest.importorskip("gguf")

from tuitune.errors import TuituneError  # noqa: E402
from tuitune.export import end_of_turn_tokens, export, find_finetune  # noqa: E402
from tuitune.export.modelfile import render  # noqa: E402

NAME = "tuned"
BASE = "smollm2-135m-instruct"
RANK = 8


# --- a parser for Ollama's Modelfile syntax -------------------------------------------------------------------
INSTRUCTIONS = {"from", "adapter", "parameter", "template", "system", "license", "message"}


def _complete(raw: str) -> str | None:
    """The value of ``raw`` if it is a complete value: bare text, "…" or \"\"\"…\"\"\"; None while a quote is open."""
    if raw.startswith('"""'):
        return raw[3:-3] if len(raw) >= 6 and raw.endswith('"""') else None
    if raw.startswith('"'):
        return raw[1:-1] if len(raw) >= 2 and raw.endswith('"') else None
    return raw


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(instruction, value) pairs; PARAMETER gives (its name, value). ``#`` lines are comments. A value runs to
    the end of its line, or, quoted, to the first line end where the quote is closed; there are no escapes."""
    commands: list[tuple[str, str]] = []
    pos, size = 0, len(text)
    for char in text:
        assert char.isprintable() or char in " \t\n", f"{char!r} would be dropped by Ollama"
    while pos < size:
        if text[pos] in " \t\n":
            pos += 1
            continue
        if text[pos] == "#":
            end = text.find("\n", pos)
            pos = size if end < 0 else end + 1
            continue
        word = re.match(r"[A-Za-z]+", text[pos:])
        assert word and text[pos + word.end() : pos + word.end() + 1] == " ", f"bad line at {text[pos : pos + 40]!r}"
        name = word.group().lower()
        assert name in INSTRUCTIONS, name
        pos += word.end() + 1
        if name in ("parameter", "message"):
            word = re.match(r"[A-Za-z0-9_]+ ", text[pos:])
            assert word, text[pos : pos + 40]
            name = word.group()[:-1]
            pos += word.end()
        start = pos
        while True:
            end = text.find("\n", pos)
            end = size if end < 0 else end
            value = _complete(text[start:end].strip(" \t\n"))
            if value is not None or end >= size:
                break
            pos = end + 1
        assert value is not None, f"unterminated value from {text[start : start + 40]!r}"
        commands.append((name, value))
        pos = end + 1
    return commands


# --- a real finetune ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(PEFT folder, llama.cpp adapter GGUF) of a seeded rank-8 LoRA on q_proj and v_proj of SmolLM2."""
    import json

    from safetensors.numpy import save_file

    from tuitune.gguf import read_gguf
    from tuitune.training.export import _expected_shapes, export_adapter

    folder = tmp_path_factory.mktemp("lora")
    peft = folder / "adapter"
    peft.mkdir()
    info = read_gguf(smollm_path)
    shapes = _expected_shapes(info.metadata, info.architecture)
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(info.metadata[f"{info.architecture}.block_count"]):
        for module, tensor in (("q_proj", "attn_q"), ("v_proj", "attn_v")):
            rows, columns = shapes[tensor]
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((RANK, columns)) * 0.05).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((rows, RANK)) * 0.05).astype(np.float32)
    save_file(tensors, str(peft / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": 16, "lora_dropout": 0.0,
              "target_modules": ["q_proj", "v_proj"], "bias": "none", "base_model_name_or_path": None}  # fmt: skip
    (peft / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return peft, export_adapter(peft, smollm_path, folder / f"{NAME}.gguf")


def _catalog(config_dir: Path, text: str) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "models.toml").write_text(text, encoding="utf-8")


FINETUNE = f"""[[model]]
id = "{NAME}"
name = "SmolLM2 + test LoRA"
kind = "finetuned"
family = "llama"
base = "{{base}}"
adapter = "{{adapter}}"
"""


@pytest.fixture
def tune(lora: tuple[Path, Path], tuitune_dirs: dict[str, Path]) -> Path:
    """A finished run as `tuitune train` leaves it: runs/NAME/adapter/ + runs/NAME/NAME.gguf, and the catalog entry."""
    run = tuitune_dirs["data"] / "runs" / NAME
    run.mkdir(parents=True)
    shutil.copytree(lora[0], run / "adapter")
    adapter = run / f"{NAME}.gguf"
    shutil.copyfile(lora[1], adapter)
    _catalog(tuitune_dirs["config"], FINETUNE.format(base=BASE, adapter=adapter))
    return run


def _nothing_left(out: Path) -> None:
    """Neither the destination nor a temporary folder next to it exists."""
    assert not out.exists()
    assert not [path.name for path in out.parent.iterdir() if out.name in path.name]


# --- the formats ----------------------------------------------------------------------------------------------
def test_lora_gguf_is_the_catalog_adapter_and_llama_cpp_runs_it(tune: Path, smollm_path: Path, tmp_path: Path):
    from tuitune.engines import Request, Sampling
    from tuitune.engines.llama import LlamaCppEngine

    out = tmp_path / "exports" / "lora"
    result = run_cli("export", NAME, "--format", "lora-gguf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["README.txt", f"{NAME}.gguf"]
    assert (out / f"{NAME}.gguf").read_bytes() == (tune / f"{NAME}.gguf").read_bytes()
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert str(smollm_path.resolve()) in readme and BASE in readme and f"--lora {NAME}.gguf" in readme
    request = Request.raw("The capital of France is", Sampling(temperature=0.0, max_tokens=8, seed=1))
    texts = []
    for adapter in (None, out / f"{NAME}.gguf"):
        engine = LlamaCppEngine(smollm_path, n_ctx=256, adapter_path=adapter)
        try:
            texts.append(engine.generate(request).run())
        finally:
            engine.close()
    assert texts[1].strip() and texts[1] != texts[0]  # it loads, answers, and the adapter changes the answer


def test_ollama_modelfile_names_the_files_and_the_end_of_turn_token(tune: Path, smollm_path: Path, tmp_path: Path):
    out = tmp_path / "ollama"
    result = run_cli("export", NAME, "--format", "ollama", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert [path.name for path in out.iterdir()] == ["Modelfile"]
    text = (out / "Modelfile").read_text(encoding="utf-8")
    commands = parse_modelfile(text)
    assert commands[:2] == [("from", str(smollm_path.resolve())), ("adapter", str((tune / f"{NAME}.gguf").resolve()))]
    assert ("stop", "<|im_end|>") in commands[2:]
    assert all(name == "stop" for name, _ in commands[2:])
    assert f"ollama create {NAME} -f Modelfile" in text and "No TEMPLATE" in text

    copied = tmp_path / "ollama-copy"
    result = run_cli("export", NAME, "--format", "ollama", "--out", str(copied), "--copy")
    assert result.returncode == 0, result.stderr
    commands = parse_modelfile((copied / "Modelfile").read_text(encoding="utf-8"))
    assert commands[:2] == [("from", "./base.gguf"), ("adapter", "./adapter.gguf")]
    assert (copied / "adapter.gguf").read_bytes() == (tune / f"{NAME}.gguf").read_bytes()
    assert (copied / "base.gguf").stat().st_size == smollm_path.stat().st_size


def test_peft_folder_loads_and_a_missing_one_is_refused(tune: Path, tmp_path: Path):
    from peft import PeftConfig

    out = tmp_path / "peft"
    result = run_cli("export", NAME, "--format", "peft", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    config = PeftConfig.from_pretrained(str(out))
    assert config.r == RANK and set(config.target_modules) == {"q_proj", "v_proj"}
    assert (out / "adapter_model.safetensors").read_bytes() == (tune / "adapter/adapter_model.safetensors").read_bytes()

    shutil.rmtree(tune / "adapter")
    gone = tmp_path / "peft-gone"
    one_clear_error(run_cli("export", NAME, "--format", "peft", "--out", str(gone)), "PEFT adapter folder", code=1)
    _nothing_left(gone)


# --- the Modelfile against hostile text -----------------------------------------------------------------------
HOSTILE_STOPS = [
    "<|im_end|>",
    'a"\nFROM /evil.gguf',  # a plain "…" would end after the first line
    '"""x\nADAPTER /evil.gguf',  # starts like a triple quote
    'back\\slash \\n \\" end',
    " spaced ",
    "two\nlines",
]
UNWRITABLE = ['x"""\nSYSTEM pwned', "esc\x1b[31m", "bidi\u202e"]  # ends both quotings early; dropped characters


def test_hostile_stop_tokens_and_paths_read_back_exactly_or_are_left_out():
    base = '/models/we"ird\nPARAMETER temperature 9/base.gguf'
    notes = ['name with "quotes"\nFROM /evil.gguf', "esc\x1b and \r carriage"]
    text, skipped = render(base, "/a b/adapter.gguf", HOSTILE_STOPS + UNWRITABLE, notes)
    commands = parse_modelfile(text)
    assert commands == [("from", base), ("adapter", "/a b/adapter.gguf"), *[("stop", stop) for stop in HOSTILE_STOPS]]
    assert skipped == UNWRITABLE
    assert text.startswith("# name with") and "left out" in text
    with pytest.raises(ValueError, match="cannot be written"):
        render('/x"""\n/y', "/a.gguf", [], [])
    # the parser does catch an injection: the naive quoting of the same token adds a FROM
    naive = parse_modelfile(f'FROM /b.gguf\nPARAMETER stop "{HOSTILE_STOPS[1]}"\n')
    assert [name for name, _ in naive].count("from") == 2


def test_end_of_turn_tokens_come_from_the_gguf(smollm_path: Path, tmp_path: Path):
    from gguf import GGUFWriter

    assert "<|im_end|>" in end_of_turn_tokens(smollm_path)
    path = tmp_path / "hostile.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_token_list(["<unk>", 'stop"\nFROM /evil', "<end_of_turn>", "x"])
    writer.add_eos_token_id(1)
    writer.add_uint32("tokenizer.ggml.eot_token_id", 3)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert end_of_turn_tokens(path) == ['stop"\nFROM /evil', "x", "<end_of_turn>"]


# --- bad input: one line, exit 1, nothing written -------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["no-such-model", "--format", "peft"], ["unknown model 'no-such-model'"]),
        ([BASE, "--format", "peft"], ["is a chat model", "finetuned"]),
        ([NAME, "--format", "onnx"], ["unknown export format 'onnx'", "lora-gguf, merged-gguf, ollama, peft"]),
        ([NAME, "--format", "peft", "--copy"], ["--copy applies to --format ollama"]),
        ([BASE, "--format", "merged-gguf"], ["is a chat model", "finetuned"]),
        ([NAME, "--format", "merged-gguf", "--quant", "q9_9"], ["unknown quant type 'q9_9'", "f16, q8_0, q6_k"]),
        ([NAME, "--format", "ollama", "--quant", "IQ2_XS"], ["unknown quant type 'IQ2_XS'", "q4_k_m"]),
        ([NAME, "--format", "lora-gguf", "--adapter-scale", "0.5"], ["--adapter-scale applies to", "merged-gguf"]),
        ([NAME, "--format", "ollama", "--adapter-scale", "0.5"], ["--adapter-scale applies to", "with --quant"]),
        ([NAME, "--format", "peft", "--quant", "q8_0"], ["--quant applies to", "merged-gguf"]),
        ([NAME, "--format", "merged-gguf", "--adapter-scale", "1.5"], ["adapter scale 1.5 is out of range"]),
        ([NAME, "--format", "merged-gguf", "--adapter-scale", "lots"], ["adapter scale 'lots' is not a number"]),
        ([NAME, "--format", "ollama", "--quant", "q8_0", "--copy"], ["--copy and --quant exclude each other"]),
    ],
    ids=[
        "unknown",
        "not-a-finetune",
        "unknown-format",
        "copy-without-ollama",
        "merged-not-a-finetune",
        "unknown-quant",
        "i-quant",
        "scale-with-lora-gguf",
        "scale-with-plain-ollama",
        "quant-with-peft",
        "scale-out-of-range",
        "scale-not-a-number",
        "copy-and-quant",
    ],
)
def test_bad_arguments_are_one_line(tune: Path, tmp_path: Path, args: list[str], fragments: list[str]):
    out = tmp_path / "out"
    one_clear_error(run_cli("export", *args, "--out", str(out)), *fragments, code=1)
    _nothing_left(out)


def test_existing_folder_and_missing_files_are_refused(tune: Path, tuitune_dirs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    one_clear_error(run_cli("export", NAME, "--format", "lora-gguf", "--out", str(out)), "already exists", code=1)
    assert [path.name for path in out.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "fresh"
    (tune / f"{NAME}.gguf").rename(tune / "moved.gguf")
    one_clear_error(run_cli("export", NAME, "--format", "lora-gguf", "--out", str(fresh)), "adapter of", "missing",
                    code=1)  # fmt: skip
    _nothing_left(fresh)
    (tune / "moved.gguf").rename(tune / f"{NAME}.gguf")

    gone_base = '[[model]]\nid = "gone-base"\nname = "gone"\nkind = "chat"\nfamily = "llama"\n' \
                'source = { path = "/nonexistent/base.gguf" }\n\n'  # fmt: skip
    _catalog(tuitune_dirs["config"], gone_base + FINETUNE.format(base="gone-base", adapter=tune / f"{NAME}.gguf"))
    one_clear_error(run_cli("export", NAME, "--format", "ollama", "--out", str(fresh)), "does not exist", code=1)
    _nothing_left(fresh)


def test_a_full_disk_leaves_nothing_behind(tune: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tuitune.downloads import DiskSpaceError

    finetune = find_finetune(NAME)
    out = tmp_path / "full"
    with pytest.raises(DiskSpaceError, match="not enough disk space"):
        export(finetune, "ollama", out, copy=True, free=lambda _: finetune.base_gguf.stat().st_size)
    _nothing_left(out)

    def full(source, target, *args, **kwargs):
        Path(target).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(DiskSpaceError, match="filled up"):
        export(finetune, "lora-gguf", out)
    _nothing_left(out)
    with pytest.raises(TuituneError, match="unknown export format"):
        export(finetune, "onnx", out)
    _nothing_left(out)


# --- merged-gguf: the base with the adapter merged in ---------------------------------------------------------
TEXTS = (
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "<|im_start|>user\nWhat should I call you?<|im_end|>\n<|im_start|>assistant\nYou can call me",
)


def _kl(reference, other) -> float:
    """Mean KL(reference || other) of next-token distributions over the positions of teacher-forced logits."""
    p, q = (np.asarray(x, dtype=np.float64) for x in (reference, other))
    lp = p - p.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    lq = q - q.max(1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(1, keepdims=True))
    return float((np.exp(lp) * (lp - lq)).sum(1).mean())


def _logits(model: Path, adapter: Path | None = None, scale: float = 1.0) -> list:
    from tuitune.engines.llama import LlamaCppEngine

    engine = LlamaCppEngine(model, n_ctx=128, adapter_path=adapter, adapter_scale=scale, logits_all=True)
    try:
        return [engine.logits(engine.tokenize(text)) for text in TEXTS]
    finally:
        engine.close()


def _divergence(merged: list, reference: list) -> float:
    return max(_kl(ref, got) for ref, got in zip(reference, merged, strict=True))


def test_merged_f16_behaves_as_base_plus_adapter_and_keeps_the_metadata(tune: Path, smollm_path: Path, tmp_path: Path):
    from gguf import GGMLQuantizationType, GGUFReader

    out = tmp_path / "merged"
    result = run_cli("export", NAME, "--format", "merged-gguf", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "merging 60 adapted tensor(s)" in result.stderr and "writing f16" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["README.txt", f"{NAME}-f16.gguf"]
    merged = out / f"{NAME}-f16.gguf"
    # the same behaviour as the base with the adapter attached (the noise floor of Q4_1 vs f16 is ~0.005) …
    adapted = _logits(smollm_path, tune / f"{NAME}.gguf")
    assert _divergence(_logits(merged), adapted) < 0.02
    assert _divergence(_logits(smollm_path), adapted) > 0.05  # … and the adapter does change it: the check bites
    # every metadata key of the base, the chat template and vocabulary included; file type and name set
    base, new = GGUFReader(smollm_path), GGUFReader(merged)
    changed = {"general.file_type", "general.name", "general.quantization_version"}
    for key, field in base.fields.items():
        if not key.startswith("GGUF.") and key not in changed:
            assert key in new.fields and new.fields[key].contents() == field.contents(), key
    assert (
        new.fields["tokenizer.chat_template"].contents().startswith(base.fields["tokenizer.chat_template"].contents())
    )
    assert new.fields["general.file_type"].contents() == 1  # LLAMA_FTYPE_MOSTLY_F16
    assert new.fields["general.name"].contents() == "SmolLM2 + test LoRA"
    types = {tensor.name: tensor.tensor_type for tensor in new.tensors}
    assert [tensor.name for tensor in new.tensors] == [tensor.name for tensor in base.tensors]
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == GGMLQuantizationType.F32
    readme = (out / "README.txt").read_text(encoding="utf-8")
    assert f"llama-cli -m {NAME}-f16.gguf" in readme and "adapter scale 1" in readme


def test_merged_adapter_scale_blends_like_the_engine(tune: Path, smollm_path: Path, tmp_path: Path):
    finetune = find_finetune(NAME)
    adapter = tune / f"{NAME}.gguf"
    zero, _ = export(finetune, "merged-gguf", tmp_path / "zero", adapter_scale=0.0)
    assert _divergence(_logits(zero / f"{NAME}-f16.gguf"), _logits(smollm_path)) < 0.02  # scale 0 is the base
    half, _ = export(finetune, "merged-gguf", tmp_path / "half", adapter_scale="0.5")
    at_half = _logits(smollm_path, adapter, 0.5)
    assert _divergence(_logits(half / f"{NAME}-f16.gguf"), at_half) < 0.02
    assert _divergence(_logits(smollm_path, adapter, 1.0), at_half) > 0.02


def test_ollama_with_a_quant_is_from_the_merged_file(tune: Path, tmp_path: Path):
    from gguf import GGUFReader

    out = tmp_path / "ollama-merged"
    result = run_cli("export", NAME, "--format", "ollama", "--quant", "Q8_0", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "quantizing to q8_0" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["Modelfile", f"{NAME}-q8_0.gguf"]
    commands = parse_modelfile((out / "Modelfile").read_text(encoding="utf-8"))
    assert commands[0] == ("from", f"./{NAME}-q8_0.gguf")
    assert ("stop", "<|im_end|>") in commands[1:] and all(name == "stop" for name, _ in commands[1:])
    quantized = GGUFReader(out / f"{NAME}-q8_0.gguf")
    assert quantized.fields["general.file_type"].contents() == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert "tokenizer.chat_template" in quantized.fields
    adapted = _logits(find_finetune(NAME).base_gguf, tune / f"{NAME}.gguf")
    assert _divergence(_logits(out / f"{NAME}-q8_0.gguf"), adapted) < 0.03


def test_merged_refuses_an_existing_folder_and_leaves_nothing_on_failure(
    tune: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import gguf

    from tuitune.downloads import DiskSpaceError

    taken = tmp_path / "taken"
    taken.mkdir()
    one_clear_error(run_cli("export", NAME, "--format", "merged-gguf", "--out", str(taken)), "already exists", code=1)
    assert list(taken.iterdir()) == []

    finetune = find_finetune(NAME)
    out = tmp_path / "merged"
    with pytest.raises(DiskSpaceError, match="not enough disk space"):  # checked against an estimate first
        export(finetune, "merged-gguf", out, quant="q4_k_m", free=lambda _: finetune.base_gguf.stat().st_size)
    _nothing_left(out)

    def interrupt(message: str) -> None:
        if message.startswith("quantizing"):
            raise KeyboardInterrupt  # Ctrl-C with the f16 file written

    with pytest.raises(KeyboardInterrupt):
        export(finetune, "merged-gguf", out, quant="q8_0", progress=interrupt)
    _nothing_left(out)

    written = []

    def full(self, tensor, *args, **kwargs):
        written.append(tensor.nbytes)
        if len(written) == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, tensor, *args, **kwargs)

    original = gguf.GGUFWriter.write_tensor_data
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", full)
    with pytest.raises(DiskSpaceError, match="filled up"):
        export(finetune, "merged-gguf", out)
    _nothing_left(out)
    monkeypatch.undo()

    monkeypatch.setitem(__import__("sys").modules, "gguf", None)  # gguf-py not installed
    with pytest.raises(TuituneError, match=r"pip install 'tuitune\[train\]'"):
        export(finetune, "merged-gguf", out)
    _nothing_left(out)
