"""Hub models into the Hugging Face cache: pull (resumable, verified), find and remove a catalog model's file.

The byte transfer (``.incomplete`` bytes kept across restarts, ``Range`` requests, sha256 check) is in
``transfer``; this module decides where the bytes go: the HF cache in huggingface_hub's own layout
(``hf_cache``), so ``hf download`` and tuitune share one copy of every model.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from tuitune import hf_cache
from tuitune.catalog import ModelEntry
from tuitune.containment import check_hf_entry, check_repo_file, contained
from tuitune.errors import TuituneError
from tuitune.hub import HubClient, HubError, HubOfflineError, RemoteFile, check_web_url, hub_offline
from tuitune.transfer import (  # re-exported: callers import them from here
    DiskSpaceError,
    DownloadBusy,
    DownloadCancelled,
    DownloadError,
    IntegrityError,
    Progress,
    ProgressCallback,
    check_disk_space,
    download,
    exclusive,
    fetch,
    hash_file,
    human_bytes,
)

__all__ = ["DiskSpaceError", "DownloadBusy", "DownloadCancelled", "DownloadError", "IntegrityError", "Progress",
           "ProgressCallback", "check_disk_space", "download", "download_to_cache", "human_bytes", "pull_model",
           "remove_model", "resolve_remote"]  # fmt: skip


def download_to_cache(
    client: HubClient,
    remote: RemoteFile,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retries: int = 3,
) -> Path:
    """Fetch ``remote`` into the Hugging Face cache as huggingface_hub would; returns its snapshot path.

    The bytes go to ``blobs/<sha256>.incomplete``: the library's own name for a partial download, so
    ``hf cache`` reports it (left out of sizes) and ``hf cache prune`` can free it, while the library itself
    (which writes ``<etag>.<random>.incomplete``) never touches it. Next to it ``….incomplete.json`` records
    which remote object the bytes belong to, and the lock is the library's ``.locks/models--…/<sha256>.lock``,
    so tuitune and ``hf download`` never write one blob at once. Only the verified file is renamed to
    ``blobs/<sha256>`` (a file kept in git, with no LFS sha256, is named by its git blob id, as the Hub's ETag
    names it), then linked from ``snapshots/<commit>/<file>``; ``refs/<revision>`` is written last."""
    name = remote.filename
    check_web_url(remote.download_url, f"the download of {name}")  # before any file is created
    commit = remote.commit or ""
    if not hf_cache.COMMIT.match(commit):
        raise HubError(
            f"the Hub did not say which commit {name} in {remote.repo} is at (X-Repo-Commit is "
            f"{'missing' if not commit else 'not a commit hash'}); check that HF_ENDPOINT points at a Hub"
        )
    existing = hf_cache.local_file(remote.repo, name, commit)
    if existing is not None:  # linked under its commit, but the ref was missing (or named another revision)
        hf_cache.write_ref(remote.repo, remote.revision, commit)
        return existing
    repo_dir = hf_cache.prepare(remote.repo)
    key = remote.sha256 or hashlib.sha256(f"{remote.repo}\0{commit}\0{name}".encode()).hexdigest()
    part = contained(repo_dir / "blobs", f"{key}.incomplete")
    state_path = part.with_name(part.name + ".json")
    lock = hf_cache.lock_path(remote.repo, key)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(lock, name):
        blob = hf_cache.blob_path(remote.repo, remote.sha256) if remote.sha256 else None
        reused = blob is not None and blob.is_file() and blob.stat().st_size == remote.size
        if not reused:
            fix = "set HF_HUB_CACHE to a folder"
            fetch(client, remote, part, state_path, progress, cancel, retries, fix)
            blob = blob or hf_cache.blob_path(remote.repo, _git_blob_id(part))
            os.replace(part, blob)
            state_path.unlink(missing_ok=True)
        pointer = hf_cache.link_snapshot(remote.repo, commit, name, blob, new_blob=not reused)
        hf_cache.write_ref(remote.repo, remote.revision, commit)
    return pointer


def _git_blob_id(path: Path) -> str:
    """git's object id for the file (sha1 of ``blob <size>\\0`` + bytes): the Hub's ETag for non-LFS files."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    hash_file(path, digest, lambda done: None)
    return digest.hexdigest()


# -- catalog models --------------------------------------------------------------------------------------
def resolve_remote(client: HubClient, entry: ModelEntry) -> RemoteFile:
    """The remote file behind an ``hf`` catalog entry; a ``pattern`` is matched against the repo's files."""
    source = entry.source
    if source is None or source.kind != "hf":
        raise TuituneError(f"model '{entry.id}' does not come from the Hub (source: {source and source.describe()})")
    filename = source.file
    if filename is None:
        files = client.list_files(source.repo, source.revision)
        matches = sorted(name for name in files if fnmatch.fnmatch(name.lower(), source.pattern.lower()))
        for name in matches:  # a listing is the server's word: '../x' or '/tmp/x' must not become a path
            check_repo_file(name)
        if not matches:
            ggufs = [name for name in files if name.endswith(".gguf")]
            listing = ", ".join(ggufs[:8]) or "no .gguf files"
            raise HubError(f"no file in {source.repo} matches '{source.pattern}'; the repo has: {listing}")
        if len(matches) > 1:
            raise HubError(
                f"'{source.pattern}' matches {len(matches)} files in {source.repo} ({', '.join(matches[:6])}); "
                'name one with file = "…" in the catalog'
            )
        filename = matches[0]
    return client.file_metadata(source.repo, filename, source.revision)


def pull_model(
    entry: ModelEntry,
    client: HubClient | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download an ``hf`` catalog model into the HF cache unless it is already there; returns its snapshot path.

    Every name is checked before any request (the id too: it is registered after the download), and every
    path written is checked to stay in the repo's cache folder, so a hostile name or listing writes nothing."""
    from tuitune.sources import hf_local_file

    check_hf_entry(entry)
    existing = hf_local_file(entry)
    if existing is not None:
        return existing
    source = entry.source
    if hub_offline():
        revision = f" --revision {source.revision}" if source.revision != "main" else ""
        what = source.file or f"--include '{source.pattern}'"
        raise HubOfflineError(
            f"model '{entry.id}' is not downloaded and HF_HUB_OFFLINE is set, so tuitune will not fetch it; "
            f"unset HF_HUB_OFFLINE to pull it, or run `hf download {source.repo} {what}{revision}` where the "
            f"network is allowed (tuitune finds files in the Hugging Face cache, {hf_cache.cache_root()})"
        )
    client = client or HubClient()
    remote = resolve_remote(client, entry)
    return download_to_cache(client, remote, progress, cancel)


def remove_model(entry: ModelEntry) -> list[tuple[Path, int]]:
    """Delete a downloaded model's file and any partial download; the catalog entry stays.

    In the HF cache the snapshot link goes, and its blob unless another snapshot of the repo links to it;
    files of other repos are never touched. Files an older tuitune put in its own cache go too."""
    from tuitune.sources import hf_dir

    source = entry.source
    if source is None or source.kind != "hf":
        raise TuituneError(f"model '{entry.id}' was not downloaded by tuitune (source: {_describe(entry)})")
    check_hf_entry(entry)
    wanted = source.file or source.pattern

    def matches(name: str) -> bool:
        return name == source.file or (source.file is None and fnmatch.fnmatch(name.lower(), wanted.lower()))

    files = hf_cache.snapshot_files(source.repo, source.revision) or []
    removed = hf_cache.remove_files(source.repo, source.revision, [name for name in files if matches(name)])
    removed += _remove_partials(source.repo, matches)
    directory = hf_dir(entry)  # the layout tuitune used before the HF cache
    if directory.is_dir():
        for path in directory.iterdir():
            stem = path.name
            for suffix in (".part.json", ".part", ".lock"):
                stem = stem.removesuffix(suffix)
            if matches(stem):
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                removed.append((path, size))
        with contextlib.suppress(OSError):  # tidy empty directories, leave anything else alone
            directory.rmdir()
            directory.parent.rmdir()
    return removed


def _remove_partials(repo: str, matches: Callable[[str], bool]) -> list[tuple[Path, int]]:
    """tuitune's partial downloads of the repo's matching files (found by their ``.incomplete.json`` state)."""
    blobs = hf_cache.repo_folder(repo) / "blobs"
    removed: list[tuple[Path, int]] = []
    for state_path in blobs.glob("*.incomplete.json") if blobs.is_dir() else ():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict) or state.get("repo") != repo or not matches(str(state.get("file"))):
            continue
        part = state_path.with_name(state_path.name.removesuffix(".json"))
        if part.is_file() and not part.is_symlink():
            removed.append((part, part.stat().st_size))
            part.unlink()
        state_path.unlink(missing_ok=True)
    return removed


def _describe(entry: ModelEntry) -> str:
    if entry.source is not None:
        return entry.source.describe()
    return entry.kind
