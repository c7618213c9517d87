"""The headless CLI end to end, in subprocesses, on the real demo models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DOG_PROMPT, REPO, one_clear_error, run_cli

PAIR = "gemma-3-270m,smollm2-135m-instruct"
RESULT_FIELDS = {
    "model", "mode", "text", "prompt_tokens", "completion_tokens", "ttft_s", "decode_tokens_per_s", "finish_reason",
}  # fmt: skip


def test_compare_json_has_both_models_with_stats():
    result = run_cli("compare", DOG_PROMPT, "--models", PAIR, "--temperature", "0", "--max-tokens", "48", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["prompt"] == DOG_PROMPT
    base, chat = payload["results"]
    assert set(base) >= RESULT_FIELDS and set(chat) >= RESULT_FIELDS
    assert (base["model"], base["mode"], chat["model"], chat["mode"]) == (
        "gemma-3-270m", "raw", "smollm2-135m-instruct", "chat",
    )  # fmt: skip
    assert "train my dog to sit" in base["text"]
    assert "sit" in chat["text"].lower()
    for row in (base, chat):
        assert row["prompt_tokens"] > 0 and 0 < row["completion_tokens"] <= 48
        assert row["ttft_s"] > 0 and row["decode_tokens_per_s"] > 1
    assert result.stderr == ""  # llama.cpp's log went to the log file, not the terminal


def test_compare_plain_output_shows_each_answer_under_its_name():
    result = run_cli("compare", DOG_PROMPT, "--models", PAIR, "--temperature", "0", "--max-tokens", "24")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("── gemma-3-270m · raw") < out.index("── smollm2-135m-instruct · chat")
    assert out.count("tok/s") == 2


def test_compare_mode_both_runs_the_2x2():
    result = run_cli("compare", DOG_PROMPT, "--models", PAIR, "--mode", "both", "--temperature", "0",
                     "--max-tokens", "8", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("gemma-3-270m", "raw"), ("gemma-3-270m", "chat"),
        ("smollm2-135m-instruct", "raw"), ("smollm2-135m-instruct", "chat"),
    ]  # fmt: skip
    assert "'gemma' format" in " ".join(rows[1].get("notices", []))


def test_compare_suite_runs_every_lab_prompt():
    suite = REPO / "suites" / "why-finetune.toml"
    result = run_cli("compare", "--suite", str(suite), "--models", PAIR, "--temperature", "0", "--max-tokens", "6",
                     "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    prompts = [c["prompt"] for c in payload["comparisons"]]
    assert len(prompts) == 5
    assert prompts[0] == DOG_PROMPT and "Mars" in prompts[1] and "taylor swift" in prompts[2]
    assert prompts[3].rstrip().endswith("Agent:") and prompts[4].startswith("[INST]")
    # Prompts pinned to raw mode run raw on the chat model too.
    assert {r["mode"] for r in payload["comparisons"][3]["results"]} == {"raw"}


def test_chat_one_answer_json_matches_a_compare_result():
    result = run_cli("chat", "smollm2-135m-instruct", "What is 2 + 3?", "--temperature", "0", "--max-tokens", "24",
                     "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert set(row) >= RESULT_FIELDS and row["mode"] == "chat" and "5" in row["text"]


def test_chat_streams_plain_text_to_stdout_and_stats_to_stderr():
    result = run_cli("chat", "gemma-3-270m", DOG_PROMPT, "--temperature", "0", "--max-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert "train my dog" in result.stdout
    assert "tok/s" in result.stderr and "tok/s" not in result.stdout


def test_chat_accepts_a_gguf_path(smollm_path: Path):
    result = run_cli("chat", str(smollm_path), "Hi", "--temperature", "0", "--max-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"] == "chat"  # the file has a chat template


def test_chat_repl_keeps_a_multi_turn_conversation():
    import re

    session = "Hello there\nHow are you?\n/reset\nHow are you?\n/exit\n"
    result = run_cli("chat", "smollm2-135m-instruct", "--temperature", "0", "--max-tokens", "16", input=session)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("model› ") == 3 and "conversation cleared" in result.stdout
    first, second, after_reset = (int(n) for n in re.findall(r"(\d+) prompt tokens", result.stdout))
    assert second > first + 10  # the second turn carries the first exchange
    assert after_reset < second  # /reset forgot it


def test_system_prompt_reaches_the_chat_model():
    result = run_cli("chat", "smollm2-135m-instruct", "Who are you?", "--system", "You are a pirate named Bob.",
                     "--temperature", "0", "--max-tokens", "40", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prompt_tokens"] > 20


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["chat", "smollm2-135m-instrukt", "hi"],
            ["unknown model 'smollm2-135m-instrukt'", "did you mean smollm2-135m-instruct"],
        ),
        (["chat", "/nowhere/model.gguf", "hi"], ["/nowhere/model.gguf does not exist"]),
        (["compare", "hi", "--models", "gemma-3-270m,nope"], ["unknown model 'nope'"]),
        (["chat", "smollm2-135m-instruct", "word " * 300, "--ctx", "64"], ["prompt is", "context holds 64"]),
        (["chat", "smollm2-135m-instruct", "hi", "--seed", "abc"], ["--seed must be an integer or 'random'"]),
        (["compare", "--models", PAIR], ["needs a PROMPT or --suite"]),
    ],
    ids=["unknown-id", "missing-file", "unknown-in-compare", "context", "seed", "no-prompt"],
)
def test_bad_input_gets_one_clear_line(args: list[str], fragments: list[str]):
    one_clear_error(run_cli(*args), *fragments)


def test_non_gguf_and_truncated_files(tmp_path: Path, smollm_path: Path):
    html = tmp_path / "model.gguf"
    html.write_text("<html>Not Found</html>")
    one_clear_error(run_cli("chat", str(html), "hi"), "is not a GGUF file")
    cut = tmp_path / "cut.gguf"
    with smollm_path.open("rb") as source:
        cut.write_bytes(source.read(10_000_000))
    one_clear_error(run_cli("chat", str(cut), "hi"), "is truncated", "fetch the model again")


def test_compare_with_a_broken_model_prints_the_rest_and_fails(tmp_path: Path):
    html = tmp_path / "model.gguf"
    html.write_text("<html>Not Found</html>")
    result = run_cli("compare", "Hello", "--models", f"{html},smollm2-135m-instruct", "--temperature", "0",
                     "--max-tokens", "8")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "── smollm2-135m-instruct · chat" in result.stdout and "tok/s" in result.stdout
    assert "is not a GGUF file" in result.stderr


def test_help_and_models_never_import_heavy_libraries():
    import subprocess
    import sys

    probe = (
        "import sys, contextlib, io\n"
        "from tuitune.cli import main\n"
        "for argv in (['--help'], ['models'], ['paths']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'llama_cpp', 'textual') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--compare", "gemma-3-270m,nope"], "unknown model 'nope'"),
        (["--prompt", "hi"], "--prompt goes with --compare"),
        (["--compare", "a,b,c,d,e"], "unknown model"),
    ],
)
def test_tui_flags_are_checked_before_the_screen_opens(args: list[str], fragment: str):
    one_clear_error(run_cli(*args), fragment)
