"""Shared fixtures: isolated tuitune directories per test, and the two real demo models loaded once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOG_PROMPT = "Tell me how to train my dog to sit"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session, so the chunked Gemma model is assembled once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def tuitune_dirs(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    dirs = {
        "config": tmp_path / "config",
        "data": tmp_path / "data",
        "logs": tmp_path / "logs",
        "cache": model_cache,
    }
    for name, path in dirs.items():
        monkeypatch.setenv(f"TUITUNE_{name.upper()}_DIR" if name != "logs" else "TUITUNE_LOG_DIR", str(path))
    monkeypatch.delenv("TUITUNE_CATALOG", raising=False)
    # model stores tuitune discovers: never the developer's own (tests that want one build it)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub-cache"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama-models"))
    monkeypatch.setenv("NO_COLOR", "1")
    return dirs


@pytest.fixture(scope="session")
def catalog():
    from tuitune.catalog import load_catalog

    return load_catalog(user=Path("/nonexistent/models.toml"))


@pytest.fixture(scope="session")
def gemma_path(model_cache: Path) -> Path:
    os.environ["TUITUNE_CACHE_DIR"] = str(model_cache)
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path

    return model_path(load_catalog(user=Path("/nonexistent")).get("gemma-3-270m"))


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path

    return model_path(load_catalog(user=Path("/nonexistent")).get("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def gemma(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory):
    from tuitune.engines.llama import LlamaCppEngine

    engine = LlamaCppEngine(gemma_path, model_id="gemma-3-270m", n_ctx=1024, chat_format="gemma")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smollm(smollm_path: Path):
    from tuitune.engines.llama import LlamaCppEngine

    engine = LlamaCppEngine(smollm_path, model_id="smollm2-135m-instruct", n_ctx=1024)
    yield engine
    engine.close()


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the real `tuitune` entry point in a subprocess, with the test's isolated directories."""
    return subprocess.run(
        [sys.executable, "-m", "tuitune", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio, which Textual needs."""
    return "asyncio"


def one_clear_error(result, *fragments: str, code: int | None = None) -> str:
    """The command failed (with ``code`` when given) with one line on stderr holding every fragment."""
    assert result.returncode != 0 if code is None else result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
