"""Pulls land in the Hugging Face cache in huggingface_hub's own layout, checked with the real library.

The local Hub stand-in (tests/support/hub_server.py) serves the real SmolLM2 GGUF; ``huggingface_hub`` itself (the
installed one) scans the cache, reads it offline and downloads into it, so both tools must agree on every name.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.support.hub_server import HubServer, Repo, git_blob_id
from tests.support.model_files import SMOL_ENTRY, SMOL_FILE, SMOL_REPO, hf_entry, sha256, tiny_gguf, write_user_catalog
from tuitune import hf_cache
from tuitune.containment import UnsafeNameError
from tuitune.downloads import DownloadCancelled, pull_model, remove_model
from tuitune.hub import HubError
from tuitune.sources import hf_dir, hf_local_file, is_installed

COMMIT = Repo({}).commit
COMMIT2 = "89abcdef0123456789abcdef0123456789abcdef"
OTHER_REPO = "QuantFactory/SmolLM2-135M-GGUF"
OTHER_FILE = "SmolLM2-135M.Q4_K_M.gguf"


@pytest.fixture
def hub(smollm_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    repos = {
        SMOL_REPO: Repo({SMOL_FILE: smollm_path, "README.md": tiny_gguf(tmp_path / "readme")},
                        git_files=("README.md",), revisions=("v2",)),
        OTHER_REPO: Repo({OTHER_FILE: smollm_path}),
    }  # fmt: skip
    with HubServer(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("TUITUNE_CACHE_DIR", str(tmp_path / "tuitune-cache"))
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH"):
            monkeypatch.delenv(name, raising=False)
        yield server


def library_download(hub: HubServer, repo: str, file: str, **kwargs) -> Path:
    """The real ``hf_hub_download`` into the test's HF cache (endpoint per call: the library reads env at import)."""
    from huggingface_hub import hf_hub_download

    return Path(
        hf_hub_download(repo, file, cache_dir=hf_cache.cache_root(), endpoint=hub.endpoint, token=False, **kwargs)
    )


def file_requests(hub: HubServer) -> list:
    """Requests for a file (resolve or CDN); the library also asks the endpoint about other things on its own."""
    return [entry for entry in hub.log if "/resolve/" in entry.path or entry.path.startswith("/cdn/")]


def scan():
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hf_cache.cache_root())
    assert info.warnings == [], info.warnings
    return info


def test_a_pull_is_a_standard_cache_entry_the_library_reads_offline(hub: HubServer, smollm_path: Path):
    from huggingface_hub import try_to_load_from_cache

    path = pull_model(hf_entry())
    readme = pull_model(hf_entry(file="README.md"))  # kept in git, not LFS: its blob is named by the git blob id
    assert path == hf_cache.repo_folder(SMOL_REPO) / "snapshots" / COMMIT / SMOL_FILE
    assert os.readlink(readme) == f"../../blobs/{git_blob_id(readme)}"
    info = scan()
    (repo,) = info.repos
    (revision,) = repo.revisions
    assert repo.repo_id == SMOL_REPO and revision.commit_hash == COMMIT and revision.refs == {"main"}
    sizes = {file.file_name: file.size_on_disk for file in revision.files}
    assert sizes == {SMOL_FILE: smollm_path.stat().st_size, "README.md": readme.stat().st_size}
    assert not info.incomplete_files and repo.size_on_disk == sum(sizes.values())
    requests = len(file_requests(hub))
    offline = library_download(hub, SMOL_REPO, SMOL_FILE, local_files_only=True)
    assert offline == path and try_to_load_from_cache(SMOL_REPO, SMOL_FILE, cache_dir=hf_cache.cache_root()) == str(
        path
    )
    assert len(file_requests(hub)) == requests  # no network
    for link in (path, readme):  # blob names match the library's: with the links gone, it relinks, fetching nothing
        link.unlink()
    library_download(hub, SMOL_REPO, SMOL_FILE)
    library_download(hub, SMOL_REPO, "README.md")
    assert sha256(path) == sha256(smollm_path) and not [e for e in file_requests(hub)[requests:] if e.method == "GET"]


def test_a_file_the_library_downloaded_is_used_offline_without_a_pull(hub: HubServer, tuitune_dirs):
    fetched = library_download(hub, SMOL_REPO, SMOL_FILE)
    requests = len(file_requests(hub))
    assert hf_local_file(hf_entry()) == fetched and pull_model(hf_entry()) == fetched
    quant = hf_entry(file=None, pattern="*Q4_1*.GGUF")  # a reference's pattern: matched case-insensitively
    assert hf_local_file(quant) == fetched and is_installed(quant)
    assert hf_cache.snapshot_files(SMOL_REPO) == [SMOL_FILE] and hf_cache.local_file(SMOL_REPO, SMOL_FILE) == fetched
    assert hf_cache.snapshot_files(SMOL_REPO, "v2") is None and hf_cache.snapshot_files(OTHER_REPO) is None
    assert len(file_requests(hub)) == requests
    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY)
    pulled = run_cli("pull", "smol-hub", env={"HF_HUB_OFFLINE": "1"})
    assert pulled.returncode == 0 and "already downloaded" in pulled.stdout and str(fetched) in pulled.stdout
    answer = run_cli(
        "chat", "smol-hub", "Say hi", "--max-tokens", "8", "--temperature", "0", env={"HF_HUB_OFFLINE": "1"}
    )
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    assert len(file_requests(hub)) == requests


def test_a_cancelled_pull_leaves_an_incomplete_blob_the_scan_accepts_and_resumes(hub: HubServer, smollm_path: Path):
    hub.throttle_bps = 30e6
    cancel = threading.Event()
    with pytest.raises(DownloadCancelled):
        pull_model(hf_entry(), progress=lambda update: update.done > 3_000_000 and cancel.set(), cancel=cancel)
    info = scan()
    (incomplete,) = info.incomplete_files
    assert incomplete.file_path.name == f"{hub.sha_of(smollm_path)}.incomplete" and incomplete.size_on_disk > 3e6
    hub.throttle_bps = None
    path = pull_model(hf_entry())
    assert hub.cdn_gets()[-1].range is not None and sha256(path) == sha256(smollm_path)
    assert not scan().incomplete_files


def test_a_file_in_the_old_tuitune_layout_is_still_used_and_removed(hub: HubServer):
    old = tiny_gguf(hf_dir(hf_entry()) / SMOL_FILE)
    assert hf_local_file(hf_entry()) == old and pull_model(hf_entry()) == old
    assert hf_local_file(hf_entry(file=None, pattern="*q4_1.gguf")) == old and hub.log == []
    fetched = library_download(hub, SMOL_REPO, SMOL_FILE)
    assert hf_local_file(hf_entry()) == fetched  # the HF cache comes first
    removed = {path for path, _size in remove_model(hf_entry())}
    assert removed == {fetched, old} and hf_local_file(hf_entry()) is None


def test_links_and_refs_that_lead_elsewhere_are_never_followed(hub: HubServer, tmp_path: Path):
    other = library_download(hub, OTHER_REPO, OTHER_FILE)
    good = library_download(hub, SMOL_REPO, "README.md")
    snapshots = good.parent
    outside = tiny_gguf(tmp_path / "outside" / "evil-q4_1.gguf")
    (snapshots / SMOL_FILE).symlink_to(os.path.relpath(other.resolve(), snapshots))  # into another repo's blobs
    (snapshots / "etc-q4_1.gguf").symlink_to(outside)
    (snapshots / "passwd-q4_1.gguf").symlink_to("/etc/passwd")
    assert hf_local_file(hf_entry()) is None and not is_installed(hf_entry())
    assert hf_local_file(hf_entry(file=None, pattern="*q4_1*.gguf")) is None
    assert hf_cache.snapshot_files(SMOL_REPO) == ["README.md"] and hf_local_file(hf_entry(file="README.md")) == good
    ref = hf_cache.repo_folder(SMOL_REPO) / "refs" / "main"
    escape = hf_cache.cache_root().parent / "evil"  # what '../../../evil' from snapshots/ would reach
    tiny_gguf(escape / "README.md")
    for junk in ("../../../evil", "not a commit", COMMIT + "/../..", ""):
        ref.write_text(junk)
        assert hf_cache.snapshot_files(SMOL_REPO) is None and hf_local_file(hf_entry(file="README.md")) is None
    ref.write_text(COMMIT + "\n")
    assert hf_local_file(hf_entry(file="README.md")) == good
    requests = len(file_requests(hub))
    for repo in ("org/..", "../etc", "a--b/c"):
        with pytest.raises(UnsafeNameError):
            pull_model(hf_entry(repo=repo))
        with pytest.raises(UnsafeNameError):
            hf_cache.snapshot_files(repo)
    assert len(file_requests(hub)) == requests and not list(hf_cache.cache_root().glob("models--org*"))


def test_a_hub_reporting_a_hostile_commit_writes_nothing(hub: HubServer):
    hub.repos[SMOL_REPO].commit = "../../../../evil"
    with pytest.raises(HubError, match="not a commit hash"):
        pull_model(hf_entry())
    assert not hf_cache.cache_root().exists() and hub.cdn_gets() == []


def test_without_symlink_rights_the_blob_is_moved_into_the_snapshot(hub: HubServer, smollm_path, monkeypatch):
    def no_symlinks(*args, **kwargs):
        raise OSError(1, "symlinks not allowed")

    monkeypatch.setattr(os, "symlink", no_symlinks)  # as on Windows without developer mode
    path = pull_model(hf_entry())
    assert path.is_file() and not path.is_symlink() and sha256(path) == sha256(smollm_path)
    assert hf_local_file(hf_entry()) == path and len(scan().repos) == 1


def test_rm_leaves_other_repos_and_shared_blobs_alone(hub: HubServer, tuitune_dirs, smollm_path: Path):
    pull_model(hf_entry())
    readme = pull_model(hf_entry(file="README.md"))
    other = library_download(hub, OTHER_REPO, OTHER_FILE)
    hub.repos[SMOL_REPO].commit = COMMIT2  # v2: a later commit with the same model file (the same blob)
    v2 = library_download(hub, SMOL_REPO, SMOL_FILE, revision="v2")
    blob = hf_cache.repo_folder(SMOL_REPO) / "blobs" / hub.sha_of(smollm_path)
    write_user_catalog(tuitune_dirs["config"], SMOL_ENTRY + SMOL_ENTRY.replace("smol-hub", "smol-v2")[:-2]
                       + ', revision = "v2" }\n')  # fmt: skip
    removed = run_cli("rm", "smol-hub")
    assert removed.returncode == 0 and f"snapshots/{COMMIT}/{SMOL_FILE} (0 B)" in removed.stdout, removed.stderr
    assert blob.is_file() and sha256(v2) == sha256(smollm_path) and readme.is_file() and sha256(other) == sha256(v2)
    assert hf_local_file(hf_entry()) is None and scan()
    removed = run_cli("rm", "smol-v2")
    assert removed.returncode == 0 and "(98.4 MB)" in removed.stdout and not blob.exists()
    assert readme.is_file() and sha256(other) == sha256(smollm_path)
    assert {repo.repo_id for repo in scan().repos} == {SMOL_REPO, OTHER_REPO}
    assert not (hf_cache.repo_folder(SMOL_REPO) / "refs" / "v2").exists()


def test_the_cache_root_follows_the_library_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_cache.cache_root() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache.cache_root() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_cache.cache_root() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert hf_cache.cache_root() == tmp_path / "hub-cache"
    from tuitune.discovery import hf_cache_dir

    assert hf_cache_dir() == tmp_path / "hub-cache"
    assert hf_cache.repo_folder("org/name") == tmp_path / "hub-cache" / "models--org--name"
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
