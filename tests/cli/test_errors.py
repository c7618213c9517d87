"""How the CLI fails: one line and an exit code for every failure, nothing echoed that should not be.

Real CLI in subprocesses on the real demo models; argv and stdin carry raw bytes where the test is about bytes.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, one_clear_error, run_cli
from tests.support.openai_stub import ANSWER, OpenAIStub

CHAT = "smollm2-135m-instruct"
BASE = "gemma-3-270m"
PASTED_KEY = "--api-key-env takes the name of an environment variable"


def run_bytes(*args: str | bytes, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point with argv items as given (bytes stay bytes), output decoded leniently."""
    result = subprocess.run([sys.executable, "-m", "tuitune", *args], input=stdin, capture_output=True, timeout=300,
                            cwd=REPO)  # fmt: skip
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode("utf-8", "replace"),
                                       result.stderr.decode("utf-8", "replace"))  # fmt: skip


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["chat", "/nowhere/model.gguf", b"sit\xff"], "PROMPT is not valid UTF-8 (byte 0xff at position 3)"),
        (["chat", "/nowhere/model.gguf", "hi", "--system", b"You\xfe"], "--system is not valid UTF-8 (byte 0xfe at"),
        (
            ["compare", b"\xc3(", "--models", "/nowhere/model.gguf"],
            "PROMPT is not valid UTF-8 (byte 0xc3 at position 0)",
        ),
        (["chat", CHAT, "hi", "--stop", b"\x80"], "--stop is not valid UTF-8 (byte 0x80 at position 0)"),
    ],
    ids=["prompt", "system", "compare", "stop"],
)
def test_arguments_that_are_not_utf8_are_refused_before_any_model_loads(args: list, line: str):
    # /nowhere/model.gguf would fail with "does not exist" if anything were loaded first
    assert one_clear_error(run_bytes(*args), code=2).startswith(f"tuitune: error: {line}")


def test_a_repl_line_that_is_not_utf8_is_refused_and_the_session_goes_on():
    result = run_bytes("chat", CHAT, "--temperature", "0", "--max-tokens", "4", stdin=b"bad \xff line\nHi\n/exit\n")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (
        "tuitune: error: that line is not valid UTF-8 (byte 0xff at position 4); it was not sent"
    )
    assert result.stdout.count("model› ") == 1  # the valid line after it was answered


def test_an_empty_prompt_in_raw_mode_is_refused():
    one_clear_error(run_cli("chat", CHAT, "", "--mode", "raw"), "the PROMPT is empty", "raw mode", code=1)


def test_an_unexpected_exception_is_one_line_and_a_logged_traceback(tuitune_dirs, monkeypatch, capsys):
    import tuitune.catalog
    from tuitune.cli import main

    def broken_catalog(*args, **kwargs):
        raise RuntimeError("catalog went\x1b[31m wrong\nsecond line")

    monkeypatch.setattr(tuitune.catalog, "load_catalog", broken_catalog)
    assert main(["models"]) == 1
    log = tuitune_dirs["logs"] / "cli.log"
    err = capsys.readouterr().err
    assert err == f"tuitune: unexpected error: RuntimeError: catalog went␛[31m wrong second line (traceback in {log})\n"
    logged = log.read_text()
    assert logged.startswith("--- ") and " models\n" in logged.splitlines()[0] + "\n"
    assert "Traceback (most recent call last)" in logged and "in broken_catalog" in logged
    assert main(["models"]) == 1 and log.read_text().count("Traceback") == 2  # appended, not overwritten


def test_compare_names_the_model_whose_pane_failed_and_exits_non_zero(tmp_path: Path):
    suite = tmp_path / "blank.toml"  # an empty raw prompt: SmolLM2 has no BOS, so llama.cpp gets no token at all
    suite.write_text(
        'name = "blank"\n[[prompt]]\nid = "blank"\nmode = "raw"\nmessages = [{ role = "user", content = "" }]\n'
    )
    result = run_cli("compare", "--suite", str(suite), "--models", f"{BASE},{CHAT}", "--max-tokens", "4",
                     "--temperature", "0")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"tuitune: {CHAT}: ")
    assert f"── {BASE} · raw" in result.stdout and "tok/s" in result.stdout  # the other pane still answered


def test_compare_text_keeps_a_cut_answer_and_says_why():
    with OpenAIStub("dropped") as stub:
        added = run_cli("endpoint", "add", "stub-ep", "--base-url", stub.base_url, "--model", "stub-model")
        assert added.returncode == 0, added.stderr
        result = run_cli("compare", "hi", "--models", "stub-ep")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    pane = result.stdout.split("── stub-ep · chat", 1)[1]
    assert ANSWER[0] in pane and "[answer cut: " in pane and "connection closed mid-answer" in pane
    assert len(result.stderr.strip().splitlines()) == 1 and "stub-ep" in result.stderr


@pytest.mark.parametrize("key", ["sk-proj-AbC123xyz789", "hf_AbCdEfGhIjKlMnOp1234567890", "ghp_9xYz8WvU7tSr6QpO5nMl"])
def test_a_pasted_key_is_refused_and_never_echoed(tuitune_dirs, key: str):
    added = run_cli("endpoint", "add", "oops", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                    "--api-key-env", key)  # fmt: skip
    served = run_cli("serve", CHAT, "--api-key-env", key)
    for result in (added, served):
        one_clear_error(result, PASTED_KEY, code=1)
        assert key not in result.stdout + result.stderr
    assert not (tuitune_dirs["config"] / "models.toml").exists()


def test_an_ordinary_variable_name_is_still_accepted(tuitune_dirs):
    result = run_cli("endpoint", "add", "ok-ep", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                     "--api-key-env", "OPENAI_API_KEY")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert 'api_key_env = "OPENAI_API_KEY"' in (tuitune_dirs["config"] / "models.toml").read_text()


def test_ctrl_c_ends_the_process_at_once_while_a_model_generates():
    process = subprocess.Popen(
        [sys.executable, "-m", "tuitune", "chat", BASE, "Once upon a time", "--max-tokens", "4000", "--ctx", "4096"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.read(1)  # it is generating
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130 and elapsed < 1.5, elapsed
    assert process.stderr is not None and process.stderr.read().decode().strip() == "tuitune: interrupted"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (function bodies and TYPE_CHECKING blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_tui_never_imports_the_cli():
    for path in sorted((REPO / "tuitune" / "tui").rglob("*.py")):
        offending = {name for name in _imports(path) if name == "tuitune.cli" or name.startswith("tuitune.cli.")}
        assert not offending, f"{path.relative_to(REPO)} imports {offending}"
    probe = "import sys, tuitune.tui.screens.train, tuitune.training.report; print('tuitune.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "False"


def test_the_eval_runner_and_report_do_not_import_each_other_in_a_cycle():
    evals = REPO / "tuitune" / "evals"
    graph = {
        name: {m.removeprefix("tuitune.evals.").split(".")[0] for m in _imports(evals / f"{name}.py")
               if m.startswith("tuitune.evals.")}
        for name in ("runner", "report", "results")
    }  # fmt: skip
    assert not ({"report"} <= graph["runner"] and "runner" in graph["report"]), graph
    assert "runner" not in graph["results"] and "report" not in graph["results"], graph
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for first in ("report", "runner", "results"):
        probe = f"import tuitune.evals.{first}, tuitune.evals.runner as r; print(r.EvalReport.__name__)"
        subprocess.run([sys.executable, "-c", probe], check=True, cwd=REPO, env=env, capture_output=True)
