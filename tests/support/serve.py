"""`tuitune serve` in a subprocess, for tests that need a real OpenAI-compatible server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: str, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`tuitune serve` in a subprocess; returns once /v1/models answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tuitune", "serve", model, "--port", str(port), *extra],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tuitune serve exited: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if response.status == 200:
                    return process, base_url
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("tuitune serve did not come up within 180 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
