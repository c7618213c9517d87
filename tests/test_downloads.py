"""Hub downloads against a real local HTTP server speaking the Hub's resolve protocol (tests/support/hub_server.py).

The served file is the real SmolLM2 GGUF (98 MB), so a pulled model is checked by running it.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.support.hub_server import HubServer, Repo, free_port
from tests.support.model_files import SMOL_ENTRY, SMOL_FILE, SMOL_REPO, hf_entry, sha256, write_user_catalog
from tuitune.downloads import (
    DiskSpaceError,
    DownloadCancelled,
    DownloadError,
    IntegrityError,
    download,
    pull_model,
    remove_model,
)
from tuitune.hf_cache import cache_root, repo_folder
from tuitune.hub import HubClient, HubError
from tuitune.sources import hf_local_file, is_installed

GATED_REPO = "meta-llama/Llama-2-7b-chat-gguf"
COMMIT = Repo({}).commit  # what the local Hub reports for every repo


@pytest.fixture
def hub(smollm_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    repos = {
        SMOL_REPO: Repo({SMOL_FILE: smollm_path, "README.md": REPO / "README.md"}),
        "QuantFactory/SmolLM2-135M-GGUF": Repo(
            {"SmolLM2-135M.Q4_K_M.gguf": smollm_path, "SmolLM2-135M.Q8_0.gguf": REPO / "README.md"}
        ),
        GATED_REPO: Repo({"llama-2-7b-chat.Q4_K_M.gguf": smollm_path}, gated=True),
    }
    with HubServer(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no token file from the real home
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH"):
            monkeypatch.delenv(name, raising=False)
        yield server


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache dir: downloads must not land in the session cache other tests share."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TUITUNE_CACHE_DIR", str(path))
    return path


def snapshot(repo: str = SMOL_REPO, file: str = SMOL_FILE) -> Path:
    """Where a pulled file is: the HF cache's snapshot link, as huggingface_hub lays it out."""
    return repo_folder(repo) / "snapshots" / COMMIT / file


def partial(hub: HubServer, served: Path, repo: str = SMOL_REPO) -> Path:
    """The bytes of an unfinished pull: ``blobs/<sha256>.incomplete``, the library's own name for a partial."""
    return repo_folder(repo) / "blobs" / f"{hub.sha_of(served)}.incomplete"


def partials() -> list[Path]:
    return list(cache_root().rglob("*.incomplete*")) + list(cache_root().rglob("*.part*"))


def test_fresh_pull_verifies_and_the_model_answers(hub: HubServer, cache: Path, tuitune_dirs, smollm_path: Path):
    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY)
    assert "no" in run_cli("models").stdout.splitlines()[-1]
    result = run_cli("pull", "smol-hub")
    assert result.returncode == 0, result.stderr
    assert "sha256 verified" in result.stdout and "100%" in result.stderr  # plain progress lines, not a TTY
    path = snapshot()
    assert path.is_symlink() and os.readlink(path) == f"../../blobs/{hub.sha_of(smollm_path)}"
    assert sha256(path) == sha256(smollm_path) and str(path) in result.stdout
    assert (repo_folder(SMOL_REPO) / "refs" / "main").read_text() == COMMIT
    assert partials() == [] and (cache_root() / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f59")
    gets = hub.cdn_gets()
    assert len(gets) == 1 and gets[0].range is None and not gets[0].authorization  # no token to the CDN
    question = ("What is the capital of France?", "--temperature", "0", "--max-tokens", "12")
    answer = run_cli("chat", "smol-hub", *question, env={"HF_HUB_OFFLINE": "1"})
    assert answer.returncode == 0, answer.stderr
    packaged = run_cli("chat", "smollm2-135m-instruct", *question)  # the same bytes, installed from PyPI
    assert answer.stdout.strip() and answer.stdout == packaged.stdout
    again = run_cli("pull", "smol-hub")
    assert again.returncode == 0 and "already downloaded" in again.stdout and len(hub.cdn_gets()) == 1


def test_pull_killed_midway_resumes_with_a_range_request(hub: HubServer, cache: Path, tuitune_dirs, smollm_path):
    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY)
    hub.throttle_bps = 20e6
    part = partial(hub, smollm_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "tuitune", "pull", "smol-hub"], cwd=REPO, env=dict(os.environ),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (not part.exists() or part.stat().st_size < 15_000_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: like a dropped SSH session or kill -9
    process.wait()
    kept = part.stat().st_size
    assert 15_000_000 <= kept < smollm_path.stat().st_size
    hub.throttle_bps = None
    result = run_cli("pull", "smol-hub")
    assert result.returncode == 0, result.stderr
    assert "kept from an earlier pull" in result.stderr
    resumed = hub.cdn_gets()[-1]
    assert resumed.range is not None and int(resumed.range.removeprefix("bytes=").rstrip("-")) >= kept
    assert sha256(snapshot()) == sha256(smollm_path) and partials() == []


def test_dropped_connection_is_resumed_within_the_same_pull(hub: HubServer, cache: Path, smollm_path: Path):
    hub.drop_after, hub.drops = 5 << 20, 2
    path = pull_model(hf_entry())
    assert path == snapshot()
    ranges = [entry.range for entry in hub.cdn_gets()]
    assert ranges[0] is None and len(ranges) == 3
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) == 5 << 20
    assert sha256(path) == sha256(smollm_path)


def test_a_connection_that_keeps_dropping_fails_clearly_and_keeps_the_bytes(hub: HubServer, cache: Path):
    hub.drop_after, hub.drops = 3 << 20, 100
    client = HubClient()
    remote = client.file_metadata(SMOL_REPO, SMOL_FILE)
    dest = cache / "x" / SMOL_FILE
    with pytest.raises(DownloadError, match="pull again to resume") as failure:
        download(client, remote, dest, retries=1)
    assert "of 98.4 MB" in str(failure.value)
    assert (cache / "x" / (SMOL_FILE + ".part")).stat().st_size == 6 << 20  # two attempts' bytes, all kept
    assert not dest.exists()


def test_wrong_sha256_deletes_the_file_and_says_so(hub: HubServer, cache: Path):
    hub.wrong_sha = True
    with pytest.raises(IntegrityError, match="sha256") as failure:
        pull_model(hf_entry())
    assert "deleted" in str(failure.value)
    assert hf_local_file(hf_entry()) is None
    assert partials() == [] and not snapshot().exists()


def test_missing_file_lists_the_repos_files(hub: HubServer, cache: Path):
    result = run_cli("pull", SMOL_REPO, "smollm2-135m-instruct-q4_k_m.gguf")
    assert result.returncode == 1
    assert f"is not in {SMOL_REPO}" in result.stderr and SMOL_FILE in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_missing_repo_suggests_similar_ones(hub: HubServer, cache: Path):
    result = run_cli("pull", "HuggingFaceTB/SmolLM2-135M-GGUF", "a.gguf")
    assert result.returncode == 1
    assert "repository HuggingFaceTB/SmolLM2-135M-GGUF not found" in result.stderr
    assert "QuantFactory/SmolLM2-135M-GGUF" in result.stderr and "HF_TOKEN" in result.stderr


def test_gated_repo_names_the_license_page_and_the_token_is_never_shown(hub: HubServer, cache: Path, tuitune_dirs):
    result = run_cli("pull", GATED_REPO, "llama-2-7b-chat.Q4_K_M.gguf", "--name", "llama-chat")
    assert result.returncode == 1
    assert f"{GATED_REPO} is gated: accept its license at {hub.endpoint}/{GATED_REPO}" in result.stderr
    assert "HF_TOKEN" in result.stderr
    token_file = Path(os.environ["HF_HOME"]) / "token"  # where `hf auth login` saves it
    token_file.parent.mkdir(parents=True)
    token_file.write_text(hub.token)
    result = run_cli("pull", GATED_REPO, "llama-2-7b-chat.Q4_K_M.gguf", "--name", "llama-chat")
    assert result.returncode == 0, result.stderr
    assert hub.token not in result.stdout + result.stderr
    catalog_text = (tuitune_dirs["config"] / "models.toml").read_text()
    assert 'id = "llama-chat"' in catalog_text and hub.token not in catalog_text
    for log in tuitune_dirs["logs"].rglob("*"):
        assert not log.is_file() or hub.token not in log.read_text(errors="replace")
    resolves = [entry for entry in hub.log if "/resolve/" in entry.path]
    assert resolves[-1].authorization and not hub.cdn_gets()[-1].authorization


def test_offline_mode_never_touches_the_network(hub: HubServer, cache: Path, tuitune_dirs):
    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY)
    result = run_cli("pull", "smol-hub", env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE is set" in result.stderr and "not downloaded" in result.stderr
    assert hub.log == []
    assert run_cli("models").returncode == 0 and hub.log == []  # listing never asks the Hub


def test_pre_check_refuses_a_download_that_would_not_fit(hub: HubServer, tmp_path: Path, monkeypatch):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        monkeypatch.setenv("HF_HUB_CACHE", str(small))  # downloads go to the HF cache
        with pytest.raises(DiskSpaceError) as refusal:
            pull_model(hf_entry())
        message = str(refusal.value)
        assert "needs 98.4 MB more" in message and "free" in message and "HF_HUB_CACHE" in message
        assert hub.cdn_gets() == []  # refused before any byte was fetched
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_disk_filling_up_mid_download_keeps_the_bytes_and_resumes(hub: HubServer, cache: Path, tuitune_dirs,
                                                                  smollm_path: Path):  # fmt: skip
    """A per-file size limit (like a quota) makes writes fail with EFBIG halfway through."""
    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY)
    limit = 40 << 20

    def small_quota() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "tuitune", "pull", "smol-hub"], cwd=REPO, env=dict(os.environ),
        capture_output=True, text=True, preexec_fn=small_quota, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "disk filled up" in result.stderr and "pull again, it resumes" in result.stderr
    part = partial(hub, smollm_path)
    assert part.stat().st_size == limit
    resumed = run_cli("pull", "smol-hub")
    assert resumed.returncode == 0, resumed.stderr
    assert int(hub.cdn_gets()[-1].range.removeprefix("bytes=").rstrip("-")) == limit
    assert sha256(snapshot()) == sha256(smollm_path)


def test_connection_refused_and_timeout_are_one_clear_line(cache: Path, monkeypatch):
    refused = HubClient(endpoint=f"http://127.0.0.1:{free_port()}", token="")
    with pytest.raises(HubError, match="connection refused; check the network"):
        refused.file_metadata(SMOL_REPO, SMOL_FILE)
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts, never answers
    try:
        slow = HubClient(endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}", token="", timeout=0.5)
        with pytest.raises(HubError, match=r"no answer within 0\.5 s"):
            slow.file_metadata(SMOL_REPO, SMOL_FILE)
    finally:
        silent.close()


def test_quant_pattern_is_resolved_against_the_file_list(hub: HubServer, cache: Path, smollm_path: Path):
    entry = hf_entry("QuantFactory/SmolLM2-135M-GGUF", file=None, pattern="*q4_k_m.gguf")
    path = pull_model(entry)
    assert path.name == "SmolLM2-135M.Q4_K_M.gguf" and is_installed(entry)
    ambiguous = hf_entry("QuantFactory/SmolLM2-135M-GGUF", file=None, pattern="*.gguf")
    remove_model(entry)
    with pytest.raises(HubError, match="matches 2 files"):
        pull_model(ambiguous)


def test_cancel_stops_and_keeps_the_bytes(hub: HubServer, cache: Path, smollm_path: Path):
    hub.throttle_bps = 30e6
    cancel = threading.Event()
    seen: list[int] = []

    def progress(update) -> None:
        seen.append(update.done)
        if update.done > 5_000_000:
            cancel.set()

    with pytest.raises(DownloadCancelled, match="pull again to resume"):
        pull_model(hf_entry(), progress=progress, cancel=cancel)
    part = partial(hub, smollm_path)
    assert part.stat().st_size >= 5_000_000 and hf_local_file(hf_entry()) is None


def test_pull_repo_file_adds_an_entry_and_rm_keeps_it(hub: HubServer, cache: Path, tuitune_dirs):
    result = run_cli("pull", SMOL_REPO, SMOL_FILE, "--name", "my-smol")
    assert result.returncode == 0, result.stderr
    listing = run_cli("models", "--json").stdout
    assert '"id": "my-smol"' in listing and '"family": "llama"' in listing and '"kind": "chat"' in listing
    removed = run_cli("rm", "my-smol")
    assert removed.returncode == 0 and "removed" in removed.stdout and "98.4 MB" in removed.stdout
    assert '"id": "my-smol"' in run_cli("models", "--json").stdout
    assert not snapshot().exists() and not repo_folder(SMOL_REPO).exists()  # nothing else was in it
    demo = run_cli("rm", "smollm2-135m-instruct")
    assert demo.returncode == 1 and "was not downloaded by tuitune" in demo.stderr


def test_models_screen_downloads_with_progress_cancel_and_resume(
    hub: HubServer, cache: Path, tuitune_dirs, tmp_path: Path, monkeypatch, smollm_path: Path
):
    import asyncio

    from tests.support.models_screen import details, highlight, make_app, open_models, row

    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY)
    hub.throttle_bps = 25e6
    app = make_app(tmp_path)
    notes: list[str] = []
    monkeypatch.setattr(app, "notify", lambda message, **kwargs: notes.append(message))

    async def until(pilot, condition, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, what
            await pilot.pause(0.05)

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_models(pilot)
            await until(pilot, lambda: row(screen, "smol-hub")["installed"] == "no", "installed state")
            await highlight(pilot, screen, "smol-hub")
            assert "press d to download" in details(screen)
            await pilot.press("d")
            await until(pilot, lambda: row(screen, "smol-hub")["installed"].endswith("%"), "progress in the table")
            await until(pilot, lambda: "MB of 98.4 MB" in str(screen.query_one("#models-download-text").render()),
                        "progress line")  # fmt: skip
            assert screen.query_one("#models-download").display
            await pilot.press("x")
            await until(pilot, lambda: any("bytes are kept" in note for note in notes), "cancel notice")
            assert row(screen, "smol-hub")["installed"] == "no"
            kept = partial(hub, smollm_path).stat().st_size
            assert kept > 0
            hub.throttle_bps = None
            await pilot.press("d")
            await until(pilot, lambda: row(screen, "smol-hub")["installed"] == "yes", "download finished")
            await until(pilot, lambda: row(screen, "smol-hub")["context"] not in ("…", "-"), "header read")
            assert any("downloaded and verified" in note for note in notes)
            assert int(hub.cdn_gets()[-1].range.removeprefix("bytes=").rstrip("-")) >= kept
            await pilot.press("delete")
            await pilot.press("y")
            await until(pilot, lambda: row(screen, "smol-hub")["installed"] == "no", "deleted")
            assert not snapshot().exists()

    asyncio.run(scenario())
