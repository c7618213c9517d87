"""Where and how the trainer runs: device choice, precision, 4-bit, gradient checkpointing, starting weights in the
run's dtype — the rules tested as functions (no GPU here), the CPU paths run for real on the SmolLM2 demo model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.conftest import REPO, run_cli
from tuitune.errors import TuituneError
from tuitune.training.devices import Precision, check_4bit, pick_device, pick_precision
from tuitune.training.runs import TrainConfig, trainer_command

BASE = "smollm2-135m-instruct"
DATA = REPO / "data" / "tuitune-identity.jsonl"
SMALL = ["--rank", "4", "--alpha", "8", "--batch-size", "4", "--max-length", "256"]


@pytest.mark.parametrize(
    ("requested", "cuda", "mps", "expected"),
    [("auto", True, True, "cuda"), ("auto", False, True, "mps"), ("auto", False, False, "cpu"),
     ("cpu", True, True, "cpu"), ("cuda", True, False, "cuda"), ("mps", False, True, "mps")],
)  # fmt: skip
def test_auto_prefers_cuda_then_mps_then_cpu(requested, cuda, mps, expected):
    assert pick_device(requested, cuda=cuda, mps=mps) == expected


def test_a_missing_device_is_refused_with_what_to_do():
    with pytest.raises(TuituneError, match=r"--device cuda: torch sees no CUDA GPU.*tuitune doctor"):
        pick_device("cuda", cuda=False, mps=True)
    with pytest.raises(TuituneError, match=r"--device mps: .*not available"):
        pick_device("mps", cuda=True, mps=False)


def test_precision_bf16_on_gpus_fp16_with_scaling_on_old_ones_fp32_on_the_cpu():
    assert pick_precision("cpu", bf16_supported=True) == Precision("float32", None, False)
    assert pick_precision("cuda", bf16_supported=True) == Precision("bfloat16", "bfloat16", False)
    assert pick_precision("cuda", bf16_supported=False) == Precision("float16", "float16", True)
    assert pick_precision("mps", bf16_supported=True).weights == "bfloat16"
    assert pick_precision("cpu", bf16_supported=True, quantize="4bit").autocast == "bfloat16"


def test_one_process_runs_the_trainer_more_run_under_torchrun(tmp_path: Path):
    single = trainer_command(tmp_path, 1, resume=False)
    assert single == [sys.executable, "-m", "tuitune.training.train", str(tmp_path)]
    many = trainer_command(tmp_path, 4, resume=True)
    assert many[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in many and "--nproc-per-node=4" in many
    assert many[-4:] == ["-m", "tuitune.training.train", str(tmp_path), "--resume"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"device": "tpu"}, "--device must be one of"), ({"quantize": "8bit"}, "--quantize must be one of"),
     ({"nproc": 0}, "--nproc must be between"), ({"nproc": 4, "batch_size": 2}, "global batch")],
)  # fmt: skip
def test_bad_hardware_settings_are_refused(fields, message):
    config = TrainConfig(name="x", base=BASE, data="d.jsonl", **fields)
    with pytest.raises(TuituneError, match=message):
        config.validate()


def test_an_old_run_config_without_the_new_fields_still_loads(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"name": "old", "base": BASE, "data": "d.jsonl", "weights": "gguf"}))
    config = TrainConfig.from_json(path)
    assert (config.device, config.quantize, config.grad_checkpoint, config.nproc) == ("auto", "none", False, 1)


def test_4bit_is_checked_by_running_bitsandbytes_on_the_device(monkeypatch):
    pytest.importorskip("bitsandbytes")
    check_4bit("cpu", "bfloat16")  # bitsandbytes runs nf4 on this CPU: no refusal
    with pytest.raises(TuituneError, match=r"--quantize 4bit: bitsandbytes .* cannot run on meta"):
        check_4bit("meta", "bfloat16")  # a device where its kernels cannot run
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed
    with pytest.raises(TuituneError, match=r"needs bitsandbytes: `pip install bitsandbytes`"):
        check_4bit("cpu", "bfloat16")


def test_training_on_a_gpu_this_machine_lacks_fails_with_one_line_before_anything_starts(tuitune_dirs):
    result = run_cli("train", "--name", "no-gpu", "--base", BASE, "--data", str(DATA), "--device", "cuda",
                     "--max-steps", "1", *SMALL, timeout=300)  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("tuitune: error")]
    assert len(errors) == 1 and "no NVIDIA GPU here" in errors[0] and "--device cpu" in errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tuitune_dirs["data"] / "runs" / "no-gpu").exists()  # nothing written for a run that never started


def test_bf16_starting_weights_take_half_the_disk(tuitune_dirs, smollm_path: Path):
    from safetensors import safe_open

    from tuitune.training.convert import trainable_weights

    full = trainable_weights(smollm_path, BASE)
    half = trainable_weights(smollm_path, BASE, dtype="bfloat16")
    assert half != full and half.name == f"{BASE}--bfloat16"
    size = {path: sum(file.stat().st_size for file in path.glob("*.safetensors")) for path in (full, half)}
    assert 0.45 < size[half] / size[full] < 0.55
    with safe_open(str(next(half.glob("*.safetensors"))), framework="pt") as handle:
        name = next(iter(handle.keys()))
        assert str(handle.get_slice(name).get_dtype()) == "BF16"
    assert trainable_weights(smollm_path, BASE, dtype="bfloat16") == half  # cached, not converted again


def test_qlora_on_the_cpu_trains_and_exports_an_adapter_llama_cpp_runs(tuitune_dirs):
    pytest.importorskip("bitsandbytes")
    result = run_cli("train", "--name", "qlora", "--base", BASE, "--data", str(DATA), "--quantize", "4bit",
                     "--max-steps", "3", "--save-every", "3", *SMALL, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tuitune_dirs["data"] / "runs" / "qlora" / "train.log").read_text()
    assert "in 4-bit nf4" in log and "(bfloat16)" in log  # 4-bit weights quantized from bf16 starting weights
    rows = [json.loads(line) for line in (tuitune_dirs["data"] / "runs" / "qlora" / "metrics.jsonl").open()]
    assert len(rows) == 3 and all(0 < row["loss"] < 20 for row in rows)
    answer = run_cli("chat", "qlora", "Who are you?", "--temperature", "0", "--max-tokens", "12")
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tuitune_dirs, smollm_path: Path):
    """Recomputing activations in the backward pass changes memory, not the numbers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuitune.training.convert import load_trainable, trainable_weights
    from tuitune.training.data import load_examples
    from tuitune.training.formatting import Formatter
    from tuitune.training.loss import ReplyLoss

    formatter = Formatter(smollm_path)
    try:
        batch = [seq for example in load_examples(DATA)[:3] for seq in formatter.sequences(example)]
    finally:
        formatter.close()
    torch.manual_seed(0)
    model = get_peft_model(load_trainable(trainable_weights(smollm_path, BASE)),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))  # fmt: skip
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    causal_lm = model.base_model.model
    model.train()

    def loss_and_grads(checkpointing: bool) -> tuple[float, torch.Tensor]:
        if checkpointing:
            causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.zero_grad()
        loss = ReplyLoss(causal_lm, share_prefix=not checkpointing)(batch)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    plain_loss, plain_grads = loss_and_grads(False)
    checkpointed_loss, checkpointed_grads = loss_and_grads(True)
    assert causal_lm.is_activation_checkpointing
    assert checkpointed_loss == pytest.approx(plain_loss, rel=1e-5)
    assert float((checkpointed_grads - plain_grads).norm() / plain_grads.norm()) < 1e-4


def test_prepare_writes_the_run_config_for_torchrun_and_starts_nothing(tuitune_dirs):
    result = run_cli("train", "--name", "multi", "--base", BASE, "--data", str(DATA), "--nproc", "2", "--prepare",
                     "--max-steps", "2", *SMALL)  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = tuitune_dirs["data"] / "runs" / "multi"
    assert json.loads((run / "config.json").read_text())["nproc"] == 2
    assert not (run / "status.json").exists() and not (run / "metrics.jsonl").exists()
    assert f"-m tuitune.training.train {run}" in result.stdout and "--nproc-per-node 2" in result.stdout


def test_gemma_gets_attention_and_mlp_adapters_by_default(tuitune_dirs, gemma_path: Path):
    """transformers loads the text-only Gemma 3 GGUF as model_type gemma3_text: the default must match it."""
    from tuitune.training.convert import trainable_weights
    from tuitune.training.runs import ATTENTION_TARGETS, DEFAULT_TARGETS

    model_type = json.loads((trainable_weights(gemma_path, "gemma-3-270m") / "config.json").read_text())["model_type"]
    targets = DEFAULT_TARGETS.get(model_type, ATTENTION_TARGETS)
    assert {"gate_proj", "up_proj", "down_proj"} <= set(targets)
