"""LoRA training end to end on the real SmolLM2 demo model: train, export, run through llama.cpp; resume a
killed run with the same loss curve; Ctrl-C; a full disk while checkpointing.

Needs the train extra (torch, transformers, peft): `make train-deps`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.training import BASE, DATA, HELDOUT, SMALL, metrics

pytest.importorskip("torch")
pytest.importorskip("peft")

from tests.conftest import REPO, run_cli


def start_training(name: str, *extra: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "tuitune", "train", "--name", name, *extra]
    return subprocess.Popen(command, cwd=REPO, env={**os.environ, **(env or {})}, **popen)


def greedy(model: str, question: str, *extra: str) -> str:
    result = run_cli("chat", model, question, "--temperature", "0", "--max-tokens", "40", *extra)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_finetune_learns_its_name_and_keeps_answering(tuitune_dirs):
    result = run_cli("train", "--name", "tuitune-test", "--base", BASE, "--data", str(DATA), "--val", str(HELDOUT),
                     "--max-steps", "30", "--save-every", "10", "--eval-every", "10", timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = metrics(tuitune_dirs["data"], "tuitune-test")
    assert [row["step"] for row in rows] == list(range(1, 31))
    first, last = [row["loss"] for row in rows[:5]], [row["loss"] for row in rows[-5:]]
    assert sum(last) < 0.6 * sum(first)  # per-batch losses are noisy: compare five-step means
    assert rows[-1]["eval_loss"] is not None and rows[-1]["eval_loss"] < rows[9]["eval_loss"]
    adapter = tuitune_dirs["data"] / "runs" / "tuitune-test" / "tuitune-test.gguf"
    assert adapter.exists()
    listing = json.loads(run_cli("models", "--json").stdout)
    entry = next(model for model in listing["models"] if model["id"] == "tuitune-test")
    assert entry["kind"] == "finetuned" and entry["pair"] == BASE and entry["installed"]

    question = "What should I call you?"  # held out: not in the training file
    assert question not in DATA.read_text()
    assert "Tuitune" in greedy("tuitune-test", question)
    assert "Tuitune" not in greedy(BASE, question)
    control = "What is 2 + 3?"
    assert "5" in greedy(BASE, control) and "5" in greedy("tuitune-test", control)
    assert "Tuitune" not in greedy("tuitune-test", question, "--adapter-scale", "0")  # scale 0 is the base

    from tuitune.evals.loss import heldout_loss

    base, tuned = heldout_loss(HELDOUT, [BASE, "tuitune-test"])  # the held-out replies, scored by llama.cpp
    assert tuned.mean_loss < base.mean_loss

    # the same finetune merged into one standalone GGUF behaves as base + adapter
    merged = {}
    for quant in ("f16", "q8_0"):
        out = tuitune_dirs["data"].parent / f"merged-{quant}"
        result = run_cli("export", "tuitune-test", "--format", "merged-gguf", "--quant", quant, "--out", str(out))
        assert result.returncode == 0, result.stderr
        merged[quant] = out / f"tuitune-test-{quant}.gguf"
    f16, q8 = heldout_loss(HELDOUT, [str(merged["f16"]), str(merged["q8_0"])])
    assert abs(f16.mean_loss - tuned.mean_loss) < 0.02 * tuned.mean_loss
    assert abs(q8.mean_loss - tuned.mean_loss) < 0.05 * tuned.mean_loss
    assert "Tuitune" in greedy(str(merged["f16"]), question)


def test_killed_run_resumes_with_the_same_loss_curve(tuitune_dirs):
    reference = run_cli("train", "--name", "reference", "--base", BASE, "--data", str(DATA), "--max-steps", "12",
                        "--save-every", "4", *SMALL, timeout=600)  # fmt: skip
    assert reference.returncode == 0, reference.stdout + reference.stderr
    process = start_training("killed", "--base", BASE, "--data", str(DATA), "--max-steps", "12", "--save-every", "4",
                             *SMALL, stdout=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(metrics(tuitune_dirs["data"], "killed")) < 6:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    trainer = json.loads((tuitune_dirs["data"] / "runs" / "killed" / "status.json").read_text())["pid"]
    os.kill(trainer, signal.SIGKILL)  # no chance to save: like a crash or an OOM kill
    process.wait()
    status = run_cli("train", "--name", "killed", "--resume", timeout=600)
    assert status.returncode == 0, status.stdout + status.stderr
    resumed, expected = metrics(tuitune_dirs["data"], "killed"), metrics(tuitune_dirs["data"], "reference")
    assert [row["step"] for row in resumed] == list(range(1, 13))
    for got, want in zip(resumed, expected, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-5), got["step"]


def test_ctrl_c_stops_after_the_step_and_keeps_a_checkpoint(tuitune_dirs):
    process = start_training("stopped", "--base", BASE, "--data", str(DATA), "--max-steps", "200",
                             "--save-every", "100", *SMALL, stdout=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(metrics(tuitune_dirs["data"], "stopped")) < 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)  # the terminal sends it to the whole foreground group
    trainer = json.loads((tuitune_dirs["data"] / "runs" / "stopped" / "status.json").read_text())["pid"]
    os.kill(trainer, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume continues" in output or "--resume" in output
    run = tuitune_dirs["data"] / "runs" / "stopped"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped"
    steps = len(metrics(tuitune_dirs["data"], "stopped"))
    assert (run / "checkpoints" / f"step-{steps}" / "trainer_state.pt").exists()


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tuitune_dirs, tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    small = tmp_path / "small-data"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        result = run_cli("train", "--name", "full", "--base", BASE, "--data", str(DATA), "--max-steps", "40",
                         "--save-every", "2", *SMALL, env={"TUITUNE_DATA_DIR": str(small)}, timeout=600)  # fmt: skip
        assert result.returncode == 1
        assert "could not save the checkpoint" in result.stderr and "is intact" in result.stderr
        checkpoints = sorted((small / "runs" / "full" / "checkpoints").glob("step-*"))
        assert checkpoints, "the earlier checkpoint must survive"
        import torch

        state = torch.load(checkpoints[-1] / "trainer_state.pt", weights_only=False)
        assert state["step"] == int(checkpoints[-1].name.removeprefix("step-"))
        assert not list((small / "runs" / "full" / "checkpoints").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_shared_prefix_gives_the_same_loss_and_gradients(tuitune_dirs, smollm_path: Path, monkeypatch):
    """SmolLM2's template starts every example with the same system prompt: run once, same numbers."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuitune.training import loss as train
    from tuitune.training.convert import load_trainable, trainable_weights
    from tuitune.training.data import load_examples
    from tuitune.training.formatting import Formatter

    formatter = Formatter(smollm_path)
    try:
        batch = [seq for example in load_examples(DATA)[:4] for seq in formatter.sequences(example)]
    finally:
        formatter.close()
    assert train.shared_prefix_length(batch) >= train.MIN_SHARED_PREFIX
    torch.manual_seed(0)
    model = get_peft_model(load_trainable(trainable_weights(smollm_path, BASE)),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))  # fmt: skip
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # non-zero B, so the gradients of A are not zero
                parameter.normal_(std=0.05)

    def loss_and_grads(min_prefix: int) -> tuple[float, torch.Tensor]:
        monkeypatch.setattr(train, "MIN_SHARED_PREFIX", min_prefix)
        model.zero_grad()
        loss = train.reply_loss(model.base_model.model, batch, reduction="sum")
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    shared_loss, shared_grads = loss_and_grads(train.MIN_SHARED_PREFIX)
    plain_loss, plain_grads = loss_and_grads(10**6)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert float((shared_grads - plain_grads).norm() / plain_grads.norm()) < 1e-4


HUB_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the catalog's train_weights for the demo chat model


def test_training_from_the_catalogs_safetensors_repo(tuitune_dirs, smollm_path: Path, tmp_path: Path, monkeypatch):
    """--weights hub fetches config + safetensors (never pickles) through the Hub protocol, then trains from them."""
    from tests.support.hub_server import HubServer, Repo
    from tuitune.catalog import load_catalog
    from tuitune.training.convert import check_hub_config, hub_weights_dir, trainable_weights

    converted = trainable_weights(smollm_path, BASE)  # stands in for the repo: the same model, in safetensors
    served = {name: converted / name for name in ("config.json", "model.safetensors", "generation_config.json")}
    pickle = tmp_path / "pytorch_model.bin"
    pickle.write_bytes(b"never loaded")
    entry = load_catalog().get(BASE)
    shutil.rmtree(hub_weights_dir(entry), ignore_errors=True)
    with HubServer({HUB_REPO: Repo({**served, "pytorch_model.bin": pickle})}) as server:
        env = {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf-home")}
        result = run_cli("train", "--name", "from-hub", "--base", BASE, "--data", str(DATA), "--weights", "hub",
                         "--max-steps", "2", "--save-every", "2", *SMALL, env=env, timeout=600)  # fmt: skip
        fetched = {entry.path.rsplit("/", 1)[-1] for entry in server.log if "/resolve/" in entry.path}
    assert result.returncode == 0, result.stdout + result.stderr
    assert fetched == set(served)  # config, weights, generation config; the pickle is never requested
    log = (tuitune_dirs["data"] / "runs" / "from-hub" / "train.log").read_text()
    assert f"weights: {HUB_REPO}" in log
    assert (tuitune_dirs["data"] / "runs" / "from-hub" / "from-hub.gguf").exists()

    # Downloaded once: "auto" now starts from the same repo with the Hub gone, and says so.
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}
    result = run_cli("train", "--name", "again", "--base", BASE, "--data", str(DATA), "--max-steps", "1", *SMALL,
                     env=offline, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"weights: {HUB_REPO}" in (tuitune_dirs["data"] / "runs" / "again" / "train.log").read_text()

    # A repo that is another model (different vocabulary) is refused by name, before any training.
    config = json.loads((converted / "config.json").read_text())
    wrong = tmp_path / "config.json"
    wrong.write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 1000}))
    with pytest.raises(Exception, match="vocabulary is 50152"):
        check_hub_config(wrong, entry)
    shutil.rmtree(hub_weights_dir(entry), ignore_errors=True)


def test_hub_weights_already_in_the_hugging_face_cache_train_offline(tuitune_dirs, smollm_path: Path):
    """Weights fetched by `hf download` or transformers are used where they are: no server, no second copy."""
    from huggingface_hub import hf_hub_download

    from tests.support.hub_server import HubServer, Repo
    from tuitune.catalog import load_catalog
    from tuitune.training.convert import hub_weights_dir, trainable_weights

    converted = trainable_weights(smollm_path, BASE)  # stands in for the repo, as above
    served = {name: converted / name for name in ("config.json", "model.safetensors")}
    cache = os.environ["HF_HUB_CACHE"]  # a fresh one per test (conftest)
    with HubServer({HUB_REPO: Repo(served)}) as server:
        for name in served:
            hf_hub_download(HUB_REPO, name, cache_dir=cache, endpoint=server.endpoint)
    shutil.rmtree(hub_weights_dir(load_catalog().get(BASE)), ignore_errors=True)
    result = run_cli("train", "--name", "from-hf-cache", "--base", BASE, "--data", str(DATA), "--weights", "hub",
                     "--max-steps", "1", "--save-every", "1", *SMALL, env={"HF_HUB_OFFLINE": "1"}, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tuitune_dirs["data"] / "runs" / "from-hf-cache" / "train.log").read_text()
    assert f"weights: {HUB_REPO}" in log and "from the Hugging Face cache" in log
    assert not hub_weights_dir(load_catalog().get(BASE)).exists()  # read in place, never copied
