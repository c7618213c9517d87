"""The memory planner: its arithmetic on a made-up 7B shape, its shapes read from the real GGUFs, and its
estimate against the peak RSS of real short trainings of both demo models on the CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import REPO, one_clear_error, run_cli
from tuitune.errors import TuituneError
from tuitune.hardware import Gpu
from tuitune.training import planner
from tuitune.training.planner import ModelShape, TokenCounts, check_plan, human, plan_for_shape
from tuitune.training.runs import TrainConfig

GIB = 1 << 30
DATA = REPO / "data" / "tuitune-identity.jsonl"
LLAMA_7B = ModelShape(  # Llama 2 7B: untied head, 32 heads of 128, no GQA
    name="llama-2-7b", architecture="llama", layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32,
    head_dim=128, value_dim=128, vocab=32000, parameters=6_738_415_616, matrices=6_476_005_376,
)  # fmt: skip
GPU_12GB = (12 * GIB, "this GPU", "")


def config(**changes) -> TrainConfig:
    return replace(TrainConfig(name="plan", base="llama-2-7b", data="d.jsonl", device="cuda"), **changes)


def test_4bit_and_checkpointing_shrink_what_they_should():
    plans = {(quantize, checkpoint): plan_for_shape(LLAMA_7B, config(quantize=quantize, grad_checkpoint=checkpoint),
                                                    free=GPU_12GB)
             for quantize in ("none", "4bit") for checkpoint in (False, True)}  # fmt: skip
    parts = {key: dict(plan.parts) for key, plan in plans.items()}
    bf16 = parts["none", False]
    assert bf16["weights"] == 2 * LLAMA_7B.parameters  # bf16 on a GPU
    assert 0.25 < parts["4bit", False]["weights"] / bf16["weights"] < 0.35  # nf4 + scales + bf16 embeddings
    assert parts["none", True]["activations"] < bf16["activations"] / 5  # only the layers' inputs are kept
    assert parts["none", True]["weights"] == bf16["weights"]
    assert parts["4bit", True]["output head"] == bf16["output head"]
    totals = {key: plan.total_bytes for key, plan in plans.items()}
    assert totals["none", False] > totals["none", True] > totals["4bit", True]
    assert totals["none", False] > totals["4bit", False] > totals["4bit", True]
    assert 15 * GIB < totals["none", False] < 30 * GIB and 4 * GIB < totals["4bit", True] < 8 * GIB
    cpu = plan_for_shape(LLAMA_7B, config(device="cpu"), free=(64 * GIB, "RAM", ""))
    assert dict(cpu.parts)["weights"] == 4 * LLAMA_7B.parameters and cpu.precision == "fp32"


def test_refusal_names_the_numbers_and_the_settings_that_fit():
    plan = plan_for_shape(LLAMA_7B, config(), free=GPU_12GB)
    assert not plan.fits
    refusal = plan.refusal()
    assert refusal.startswith(f"llama-2-7b in bf16 on cuda needs ≈ {human(plan.total_bytes)}")
    assert f"this GPU has {human(12 * GIB)} free" in refusal
    both = plan_for_shape(LLAMA_7B, config(quantize="4bit", grad_checkpoint=True), free=GPU_12GB)
    assert both.fits and f"--quantize 4bit --grad-checkpoint needs ≈ {human(both.total_bytes)}" in refusal
    assert "--quantize 4bit needs" not in refusal  # 4-bit alone keeps 1024 tokens of activations: too big
    with pytest.raises(TuituneError) as raised:
        check_plan(plan)
    assert str(raised.value) == refusal
    check_plan(both)  # fits: no error

    roomy = plan_for_shape(LLAMA_7B, config(), free=(16 * GIB, "this GPU", ""))  # 4-bit alone fits here
    four_bit = plan_for_shape(LLAMA_7B, config(quantize="4bit"), free=GPU_12GB)
    assert f"--quantize 4bit needs ≈ {human(four_bit.total_bytes)}" in roomy.refusal()
    assert "fits" not in plan.summary() and plan.summary().endswith("too big")

    tiny = plan_for_shape(LLAMA_7B, config(device="cpu"), free=(8 * GIB, "RAM", ""))
    assert not tiny.fits and "Nothing smaller fits" in tiny.refusal() and "--quantize" not in tiny.refusal()


def test_smaller_batches_are_offered_with_accumulation():
    short = TokenCounts(tuple((100, 60) for _ in range(64)))  # short sequences: the batch sets the pass
    plan = plan_for_shape(LLAMA_7B, config(quantize="4bit"), counts=short, free=(6 * GIB, "this GPU", ""))
    assert not plan.fits
    offered = dict(plan.alternatives)
    batch = next(how for how in offered if how.startswith("--batch-size"))
    size, accum = int(batch.split()[1]), int(batch.split()[3])
    assert size * accum == 8 and size < 8
    assert offered[batch] <= 6 * GIB
    larger = plan_for_shape(LLAMA_7B, config(quantize="4bit", batch_size=size * 2, grad_accum=accum // 2),
                            counts=short, free=(6 * GIB, "this GPU", ""))  # fmt: skip
    assert not larger.fits  # the largest batch that fits is the one offered


def test_processes_split_the_batch():
    short = TokenCounts(tuple((100, 60) for _ in range(64)))
    one = plan_for_shape(LLAMA_7B, config(device="cpu"), counts=short, free=(1 << 50, "RAM", ""))
    two = plan_for_shape(LLAMA_7B, config(device="cpu", nproc=2), counts=short, free=(1 << 50, "RAM", ""))
    assert (one.largest_pass.sequences, two.largest_pass.sequences) == (8, 4)
    assert dict(two.parts)["activations"] == pytest.approx(dict(one.parts)["activations"] / 2, rel=1e-6)
    assert two.needed_bytes == 2 * two.total_bytes  # the CPU's processes share the RAM
    gpus = plan_for_shape(LLAMA_7B, config(nproc=2), counts=short, free=(80 * GIB, "each GPU", ""))
    assert gpus.needed_bytes == gpus.total_bytes and "per GPU" in gpus.summary()


def test_more_processes_than_gpus_is_refused(monkeypatch):
    from tuitune import hardware

    monkeypatch.setattr(hardware, "nvidia_gpus", lambda: [Gpu(0, "H100", 80 * GIB, 80 * GIB)])
    plan = plan_for_shape(LLAMA_7B, config(nproc=2, quantize="4bit"))
    assert not plan.fits and "2 processes need 2 GPUs; 1 visible" in plan.refusal()
    assert plan_for_shape(LLAMA_7B, config(quantize="4bit")).fits  # one process, one GPU with 80 GB free


def test_largest_pass_follows_the_data_and_the_trainers_rules():
    data = TokenCounts(((40, 10), (50, 20), (60, 5), (300, 30), (300, 100)), shared_prefix=12)
    passes = {one.padded: one for one in planner.candidate_passes(config(), LLAMA_7B, data)}
    assert passes[300].sequences == 3 and passes[60].sequences == 3  # 1024 // 300 = 3; three up to 60 tokens
    assert passes[300].reply_tokens == 100 + round(2 * 165 / 5)  # the longest reply, then average ones
    assert passes[60].prefix == 12 and passes[40].prefix == 0  # shared only by two sequences or more
    no_share = planner.candidate_passes(config(grad_checkpoint=True), LLAMA_7B, data)
    assert all(one.prefix == 0 for one in no_share)  # the trainer shares no prefix under checkpointing
    windowed = replace(LLAMA_7B, sliding_window=256)
    assert {one.padded: one.prefix for one in planner.candidate_passes(config(), windowed, data)}[300] == 0
    worst = planner.candidate_passes(config(max_length=512), LLAMA_7B, None)
    assert [(one.sequences, one.padded, one.reply_tokens, one.from_data) for one in worst] == [(2, 512, 1022, False)]


def test_shapes_from_the_real_ggufs_count_what_peft_trains(smollm_path: Path, gemma_path: Path):
    """Trainable counts as peft reports them for these models (the trainer logs them)."""
    smollm = planner.read_shape(smollm_path)
    assert (smollm.layers, smollm.hidden, smollm.kv_dim, smollm.vocab) == (30, 576, 192, 49152)
    assert smollm.lora_parameters(planner.targets_for(smollm, config()), 16) == 1_843_200
    assert smollm.parameters == 134_515_008  # tied head: counted once
    gemma = planner.read_shape(gemma_path)
    assert (gemma.q_dim, gemma.kv_dim, gemma.vocab, gemma.sliding_window) == (1024, 256, 262144, 512)
    mlp = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert gemma.lora_parameters(mlp, 16) == 3_796_992
    assert gemma.lora_parameters(planner.targets_for(gemma, config()), 16) in (1_474_560, 3_796_992)


def test_planning_imports_no_torch():
    code = ("import sys; from tuitune.training import planner, report; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


def test_data_check_prints_the_plan_after_the_report(smollm_path: Path):
    result = run_cli("data", "check", str(DATA), "--base", "smollm2-135m-instruct", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    report, memory = result.stdout.rstrip().rsplit("\n", 1)
    assert "ok: no problems" in report
    assert memory.startswith("memory: smollm2-135m-instruct in fp32 on cpu needs ≈ ") and "RAM has" in memory
    result = run_cli("data", "check", str(DATA), "--base", "smollm2-135m-instruct", "--device", "cpu",
                     "--quantize", "4bit", "--json")  # fmt: skip
    data = json.loads(result.stdout)
    assert data["ok"] and data["examples"] == 84
    plan = data["memory"]
    assert (plan["device"], plan["precision"], plan["largest_pass"]["from_data"]) == ("cpu", "4-bit", True)
    assert plan["total_bytes"] == sum(plan["parts"].values()) and plan["summary"].startswith("smollm2-135m-instruct")
    fp32 = planner.estimate("smollm2-135m-instruct", TrainConfig(name="x", base="smollm2-135m-instruct", data="d",
                                                                 device="cpu"))  # fmt: skip
    assert plan["parts"]["weights"] < dict(fp32.parts)["weights"] / 4
    one_clear_error(run_cli("data", "check", str(DATA), "--quantize", "4bit"), "needs --base MODEL", code=1)


@pytest.mark.slow
@pytest.mark.parametrize("base", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_estimate_is_within_a_quarter_of_the_trainers_peak(base: str, tuitune_dirs, request):
    """A real 3-step run with the defaults (batch 8, max_length 512, CPU fp32): the trainer's own peak RSS."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tuitune.training.convert import trainable_weights
    from tuitune.training.report import checked_dataset

    gguf = request.getfixturevalue("smollm_path" if base.startswith("smollm") else "gemma_path")
    trainable_weights(gguf, base)  # converted here, so the trainer's peak is training's, not conversion's
    name = f"plan-{base}"
    result = run_cli("train", "--name", name, "--base", base, "--data", str(DATA), "--max-steps", "3",
                     "--weights", "gguf", timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    run = tuitune_dirs["data"] / "runs" / name
    measured = json.loads((run / "status.json").read_text())["peak_rss_mb"] * (1 << 20)
    run_config = TrainConfig.from_json(run / "config.json")
    assert run_config.device == "cpu" and run_config.batch_size == 8 and run_config.max_length == 512
    shape = planner.read_shape(gguf)
    logged = re.search(r"([\d,]+) trainable of", (run / "train.log").read_text())
    assert logged is not None  # the planner counts the adapters the trainer made
    assert int(logged.group(1).replace(",", "")) == shape.lora_parameters(planner.targets_for(shape, run_config), 16)
    _, counts = checked_dataset(DATA, base, run_config.max_length)
    plan = planner.estimate(base, run_config, counts=counts)
    print(f"{base}: estimate {plan.total_bytes / 2**20:.0f} MiB, measured {measured / 2**20:.0f} MiB")
    assert abs(plan.total_bytes - measured) <= 0.25 * measured, (plan.parts, measured)
