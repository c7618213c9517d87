"""Training presets (presets.toml) through the real `tuitune train`, and the instruct-demo recipe's data.

`--prepare` runs every check `train` makes (catalog, data check with the real tokenizer, memory plan) and
writes config.json without starting the trainer, so the preset logic is tested end to end in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, one_clear_error, run_cli

IDENTITY = str(REPO / "data/tuitune-identity.jsonl")
SMOL = ("--base", "smollm2-135m-instruct", "--data", IDENTITY)


def prepared(name: str, *flags: str) -> tuple[dict, str]:
    """`tuitune train --name NAME … --prepare`: the run's config.json and what train printed."""
    result = run_cli("train", "--name", name, *flags, "--prepare")
    assert result.returncode == 0, result.stdout + result.stderr
    from tuitune.training.runs import run_dir

    return json.loads((run_dir(name) / "config.json").read_text()), result.stdout


def user_presets(tuitune_dirs: dict[str, Path], text: str) -> Path:
    path = tuitune_dirs["config"] / "presets.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_family_preset_applies_when_nothing_is_given(tuitune_dirs):
    user_presets(tuitune_dirs, '[[preset]]\nname = "my-llama"\nfamily = "llama"\nlr = 5e-4\nrank = 4\n'
                 'target_modules = ["q_proj", "v_proj"]\nmax_length = 256\n')  # fmt: skip
    config, out = prepared("fam", *SMOL)
    assert (config["lr"], config["rank"], config["alpha"]) == (5e-4, 4, 32.0)  # alpha: not in the preset
    assert (config["target_modules"], config["max_length"]) == (["q_proj", "v_proj"], 256)
    assert config["preset"]["name"] == "my-llama"  # the user's preset replaced the shipped one for llama
    sources = config["preset"]["sources"]
    assert (sources["lr"], sources["rank"], sources["alpha"]) == ("preset my-llama", "preset my-llama", "default")
    assert (sources["base"], sources["data"]) == ("flag", "flag")
    assert "lr 0.0005  (preset my-llama)" in out and "alpha 32.0  (default)" in out
    assert out.index("preset my-llama") < out.index("memory:")  # shown before anything starts


def test_the_shipped_llama_preset_keeps_todays_defaults(tuitune_dirs):
    """The identity demo (docs/cli.md) trains exactly as before: same lr, rank, alpha, length, modules."""
    config, _ = prepared("shipped", *SMOL)
    assert config["preset"]["name"] == "llama"
    assert (config["lr"], config["rank"], config["alpha"], config["max_length"]) == (1e-3, 16, 32.0, 512)
    assert config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]  # what [] meant for llama


def test_flags_override_the_preset(tuitune_dirs):
    user_presets(tuitune_dirs, '[[preset]]\nname = "my-llama"\nfamily = "llama"\nlr = 5e-4\nrank = 4\nmax_steps = 7\n')
    config, out = prepared("flags", *SMOL, "--lr", "2e-4", "--epochs", "1", "--target-modules", "q_proj")
    assert (config["lr"], config["rank"], config["target_modules"]) == (2e-4, 4, ["q_proj"])
    assert (config["epochs"], config["max_steps"]) == (1.0, None)  # --epochs replaces the preset's max_steps
    sources = config["preset"]["sources"]
    assert (sources["lr"], sources["rank"], sources["epochs"]) == ("flag", "preset my-llama", "flag")
    assert "lr 0.0002  (flag)" in out


def test_preset_none_uses_the_plain_defaults(tuitune_dirs):
    user_presets(tuitune_dirs, '[[preset]]\nname = "my-llama"\nfamily = "llama"\nlr = 5e-4\n')
    config, out = prepared("plain", *SMOL, "--preset", "none")
    assert (config["lr"], config["rank"], config["target_modules"], config["max_length"]) == (1e-3, 16, [], 512)
    assert config["preset"]["name"] is None and config["preset"]["sources"]["lr"] == "default"
    assert "no preset (the plain defaults)" in out


def test_an_unknown_preset_is_one_line_listing_the_names(tuitune_dirs):
    result = run_cli("train", "--name", "x", *SMOL, "--preset", "nope")
    one_clear_error(result, "no preset named 'nope'", "gemma3, instruct-demo, llama, qwen2, none")
    assert not (tuitune_dirs["data"] / "runs" / "x").exists()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            '[[preset]]\nname = "a"\nfamily = "llama"\n\nrank = "big"\n',
            ["line 5", "preset #1 'a' field 'rank'", "whole number"],
        ),
        ('[[preset]]\nname = "a"\nlr = 3\n', ["line 3", "field 'lr'", "between 0 and 1"]),
        (
            '[[preset]]\nname = "a"\n[[preset]]\nname = "b"\nrnak = 4\n',
            ["line 5", "preset #2 'b' field 'rnak'", "unknown field"],
        ),
        ('[[preset]]\nname = "a"\nlr = = 1\n', ["TOML syntax error", "line 3"]),
        (
            '[[preset]]\nname = "a"\nfamily = "llama"\n[[preset]]\nname = "b"\nfamily = "llama"\n',
            ["line 4", "field 'family'", "keep one"],
        ),
    ],
    ids=["type", "range", "unknown-field", "syntax", "two-defaults"],
)
def test_a_broken_presets_file_names_file_line_and_field(tuitune_dirs, text, fragments):
    path = user_presets(tuitune_dirs, text)
    result = run_cli("train", "--name", "x", *SMOL)
    one_clear_error(result, str(path), *fragments)
    assert not (tuitune_dirs["data"] / "runs" / "x").exists()  # nothing half-written


def test_train_needs_a_name_unless_a_recipe_gives_one(tuitune_dirs):
    one_clear_error(run_cli("train", *SMOL), "needs --name NAME", "--preset instruct-demo")
    one_clear_error(run_cli("train", "--name", "x"), "needs --base MODEL and --data FILE")


def test_the_instruct_demo_recipe_wires_base_data_and_name(tuitune_dirs):
    result = run_cli("train", "--preset", "instruct-demo", "--max-steps", "3", "--prepare")
    assert result.returncode == 0, result.stdout + result.stderr
    from tuitune.training.runs import run_dir

    config = json.loads((run_dir("gemma-instruct-demo") / "config.json").read_text())
    assert (config["base"], config["data"], config["val"]) == (
        "gemma-3-270m", str(REPO / "data/instruct-demo.jsonl"), str(REPO / "data/instruct-demo-heldout.jsonl"))  # fmt: skip
    assert (config["max_steps"], config["epochs"], config["max_length"]) == (3, None, 128)
    assert config["preset"]["sources"]["base"] == "preset instruct-demo"
    renamed = run_cli("train", "--preset", "instruct-demo", "--name", "mine", "--prepare")
    assert renamed.returncode == 0, renamed.stderr
    assert json.loads((run_dir("mine") / "config.json").read_text())["epochs"] == 2.0


@pytest.mark.parametrize("name", ["instruct-demo.jsonl", "instruct-demo-heldout.jsonl"])
def test_the_instruct_data_passes_data_check_with_the_gemma_tokenizer(name):
    result = run_cli("data", "check", f"data/{name}", "--base", "gemma-3-270m", "--max-length", "128")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: no problems" in result.stdout
    assert "warning" not in result.stdout  # nothing cut at the recipe's max length


def test_the_instruct_data_script_is_deterministic_and_matches_the_committed_files(tmp_path: Path):
    for out in ("one", "two"):
        subprocess.run([sys.executable, str(REPO / "scripts/make_instruct_data.py"), "--out", str(tmp_path / out)],
                       check=True, capture_output=True)  # fmt: skip
    for name in ("instruct-demo.jsonl", "instruct-demo-heldout.jsonl"):
        first = (tmp_path / "one" / name).read_bytes()
        assert first == (tmp_path / "two" / name).read_bytes() == (REPO / "data" / name).read_bytes()
    train = [json.loads(line) for line in (tmp_path / "one" / "instruct-demo.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (tmp_path / "one" / "instruct-demo-heldout.jsonl").read_text().splitlines()]
    assert len(train) >= 200 and len(held) >= 20
    prompts = {row["messages"][0]["content"] for row in train}
    assert not prompts & {row["messages"][0]["content"] for row in held}  # held out means not in training
    for row in train:  # short answers that end cleanly: what the base model has to learn
        reply = row["messages"][1]["content"]
        assert len(reply) < 300 and reply.rstrip()[-1] in ".!?", reply
    suite = (REPO / "suites/why-finetune.toml").read_text()
    assert "What do you think of Mars?" in suite and not any("Mars" in p or "sit" in p.split() for p in prompts)


@pytest.mark.slow
def test_a_two_step_instruct_demo_run_makes_a_gemma_finetune(tuitune_dirs):
    """The real trainer on the recipe (2 steps): the finetune is a catalog model paired with gemma-3-270m."""
    pytest.importorskip("torch")
    result = run_cli("train", "--preset", "instruct-demo", "--max-steps", "2", "--eval-every", "2", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 2/2" in result.stdout
    from tuitune.catalog import load_catalog

    entry = load_catalog().get("gemma-instruct-demo")
    assert (entry.kind, entry.base, entry.pair, entry.mode) == ("finetuned", "gemma-3-270m", "gemma-3-270m", "chat")
    assert entry.adapter is not None and entry.adapter.exists()


@pytest.mark.anyio
async def test_the_train_form_shows_the_preset_and_each_source(tmp_path: Path, tuitune_dirs):
    from textual.widgets import Input, Select, Static

    from tests.support.pilot import scripted_app

    app, _ = scripted_app(tmp_path)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.press("f10")
        screen = app.screen
        line = screen.query_one("#train-preset", Static)
        screen.query_one("#train-base", Select).value = "gemma-3-270m"
        await pilot.pause()
        shown = str(line.render())
        assert "preset gemma3 for gemma-3-270m" in shown and "gate_proj" in shown
        assert "lr 0.001  (preset gemma3)" in shown
        assert screen.query_one("#train-lr", Input).placeholder == "0.001 (preset gemma3)"
        screen.query_one("#train-base", Select).value = "smollm2-135m-instruct"
        screen.query_one("#train-lr", Input).value = "2e-4"
        await pilot.pause()
        shown = str(line.render())
        assert "preset llama for smollm2-135m-instruct" in shown and "lr 0.0002  (form)" in shown
        assert "rank 16  (preset llama)" in shown and "gate_proj" not in shown
        config = screen.form()
        assert (config.lr, config.rank, config.target_modules) == (2e-4, 16, ["q_proj", "k_proj", "v_proj", "o_proj"])
        assert config.preset["name"] == "llama" and config.preset["sources"]["lr"] == "form"
