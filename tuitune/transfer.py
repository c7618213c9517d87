"""Downloads that survive restarts: a partial file, ``Range`` requests, and a sha256 check.

A multi-GB GGUF over a flaky SSH session must not start over because the session dropped. The bytes go to a
partial file (``NAME.part`` here, ``blobs/<sha256>.incomplete`` in the HF cache: see ``downloads``) with a
``.json`` beside it recording which remote object they belong to (its sha256, size and commit); the next
pull of the same object continues with ``Range: bytes=N-``. A network error inside one pull is retried from
where it stopped. The file gets its final name only after its size and sha256 match what the Hub reported,
so a model that looks installed is always complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import Any, BinaryIO

from tuitune.errors import TuituneError
from tuitune.hub import HubClient, HubError, RemoteFile, check_web_url

CHUNK_BYTES = 256 << 10  # fits in L2, so the hashing thread reads it hot: 1.3x the speed of 1 MiB blocks here
HASH_BLOCK_BYTES = 8 << 20
DISK_MARGIN_BYTES = 16 << 20  # left free after a download, for the history database and logs
PROGRESS_INTERVAL_S = 0.1
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DownloadError(HubError):
    """The connection failed and retries did not help; the bytes so far are kept."""


class DiskSpaceError(TuituneError):
    """Not enough room for the file (checked before starting, or the disk filled up while writing)."""


class IntegrityError(TuituneError):
    """The downloaded bytes do not match the sha256 (or size) the Hub reported."""


class DownloadCancelled(TuituneError):
    """Stopped on request; the bytes so far are kept for the next pull."""


class DownloadBusy(TuituneError):
    """Another process is downloading the same file right now."""


def human_bytes(size: float | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Progress:
    """A snapshot for progress bars. ``resumed_from`` bytes were already on disk when this pull began."""

    filename: str
    phase: str  # "checking" (hashing kept bytes) | "downloading" | "verifying" | "done"
    done: int
    total: int | None
    resumed_from: int
    elapsed_s: float

    @property
    def speed(self) -> float:
        """Bytes per second fetched by this pull (kept bytes do not count)."""
        return (self.done - self.resumed_from) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.speed <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.speed)

    @property
    def fraction(self) -> float | None:
        return self.done / self.total if self.total else None


ProgressCallback = Callable[[Progress], None]


def _fmt_progress(done: int, total: int | None) -> str:
    return f"{human_bytes(done)} of {human_bytes(total)}"


@contextlib.contextmanager
def exclusive(lock_path: Path, filename: str) -> Iterator[None]:
    """One downloader per file: two processes appending to one ``.part`` would corrupt it."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadBusy(
                f"another tuitune process is downloading {filename} right now; wait for it to finish or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_for(remote: RemoteFile) -> dict[str, object]:
    return {"repo": remote.repo, "file": remote.filename, "sha256": remote.sha256, "size": remote.size,
            "commit": remote.commit}  # fmt: skip


def _kept_bytes(part: Path, state_path: Path, remote: RemoteFile) -> int:
    """How many bytes of ``part`` belong to this very remote object (0 if they belong to another version)."""
    if not part.exists():
        return 0
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = None
    same_object = (
        isinstance(state, dict)
        and state.get("size") == remote.size
        and (state.get("sha256") == remote.sha256 if remote.sha256 else state.get("commit") == remote.commit)
    )
    kept = part.stat().st_size
    if not same_object or (remote.size is not None and kept > remote.size):
        part.unlink()
        return 0
    return kept


class _BackgroundHash:
    """sha256 on its own thread, so hashing overlaps the network and the disk (hashlib releases the GIL)."""

    def __init__(self, hasher: Any):
        self._hasher = hasher
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="tuitune-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._blocks.get()) is not None:
            self._hasher.update(block)

    def update(self, block: bytes) -> None:
        self._blocks.put(block)

    def hexdigest(self) -> str:
        self.close()
        return self._hasher.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._blocks.put(None)
            self._thread.join()


def hash_file(path: Path, hasher: Any, progress: Callable[[int], None]) -> None:
    done = 0
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            hasher.update(block)
            done += len(block)
            progress(done)


def check_disk_space(directory: Path, needed: int, filename: str, fix: str = "point TUITUNE_CACHE_DIR") -> None:
    free = shutil.disk_usage(directory).free
    if needed + DISK_MARGIN_BYTES > free:
        raise DiskSpaceError(
            f"not enough disk space for {filename}: it needs {human_bytes(needed)} more and {directory} has "
            f"{human_bytes(free)} free (plus {human_bytes(DISK_MARGIN_BYTES)} kept spare); free some space or "
            f"{fix} at a larger disk, then pull again"
        )


def download(
    client: HubClient,
    remote: RemoteFile,
    dest: Path,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    retries: int = 3,
) -> Path:
    """Fetch ``remote`` to ``dest`` (``dest.part`` while in progress), resuming kept bytes, verified before the
    final rename. For files outside the HF cache (training weights); models go through ``download_to_cache``.

    ``dest`` must already be checked to lie where it belongs (``containment.contained``)."""
    check_web_url(remote.download_url, f"the download of {remote.filename}")  # before any file is created
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    lock_path = dest.with_name(dest.name + ".lock")
    with exclusive(lock_path, remote.filename):
        if dest.exists():  # only ever renamed into place after verification
            return dest
        fetch(client, remote, part, part.with_name(part.name + ".json"), progress, cancel, retries)
        os.replace(part, dest)
        part.with_name(part.name + ".json").unlink(missing_ok=True)
    lock_path.unlink(missing_ok=True)
    return dest


def fetch(
    client: HubClient,
    remote: RemoteFile,
    part: Path,
    state_path: Path,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    retries: int,
    fix: str = "point TUITUNE_CACHE_DIR",
) -> None:
    """Append the missing bytes of ``remote`` to ``part``; returns once its size and sha256 are verified.

    Kept bytes count only when ``state_path`` says they are of this very object. On a size or sha256
    mismatch the partial file is deleted: the next pull starts clean."""
    started = time.monotonic()
    name = remote.filename

    def report(phase: str, done: int, resumed_from: int) -> None:
        if progress is not None:
            progress(Progress(name, phase, done, remote.size, resumed_from, time.monotonic() - started))

    offset = _kept_bytes(part, state_path, remote)
    if remote.size is not None:
        check_disk_space(part.parent, remote.size - offset, name, fix)
    state_path.write_text(json.dumps(_state_for(remote)), encoding="utf-8")
    hasher = hashlib.sha256()
    if offset:
        hash_file(part, hasher, lambda done: report("checking", done, done))
        started = time.monotonic()  # speed and ETA count the network part only
    resumed_from = offset
    failures = 0
    last_report = 0.0
    background = _BackgroundHash(hasher)
    with open(part, "ab") as sink, contextlib.closing(background):
        while remote.size is None or offset < remote.size:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(
                    f"download of {name} stopped at {_fmt_progress(offset, remote.size)}; "
                    "the bytes are kept: pull again to resume"
                )
            try:
                response = _open_range(client, remote, offset)
                if response is None:  # 416: nothing past offset, the server has no more
                    break
                with response:
                    if response.status == 200 and offset:  # the server ignored Range: start over
                        sink.truncate(0)
                        background.close()
                        background = _BackgroundHash(hashlib.sha256())
                        offset, resumed_from = 0, 0
                    while True:
                        if cancel is not None and cancel.is_set():
                            break
                        block = response.read(CHUNK_BYTES)
                        if not block:
                            break
                        _write(sink, block, name, offset, remote.size)
                        background.update(block)
                        offset += len(block)
                        now = time.monotonic()
                        if now - last_report >= PROGRESS_INTERVAL_S:
                            last_report = now
                            report("downloading", offset, resumed_from)
                if remote.size is None:
                    break
                if offset < remote.size and not (cancel is not None and cancel.is_set()):
                    raise ConnectionError("the server closed the connection early")
            except (OSError, HTTPException) as error:
                if isinstance(error, OSError) and error.errno in _DISK_FULL:
                    raise
                failures += 1
                if failures > retries:
                    sink.flush()
                    raise DownloadError(
                        f"download of {name} failed at {_fmt_progress(offset, remote.size)} "
                        f"({_reason(error)}); the bytes are kept: pull again to resume"
                    ) from None
                time.sleep(min(8.0, 0.5 * 2**failures))
    report("verifying", offset, resumed_from)
    if remote.size is not None and offset != remote.size:
        _discard(part, state_path)
        raise IntegrityError(
            f"{name}: got {offset:,} bytes but the Hub reported {remote.size:,}; "
            "the partial file was deleted, pull again"
        )
    digest = background.hexdigest()
    if remote.sha256 and digest != remote.sha256:
        _discard(part, state_path)
        raise IntegrityError(
            f"{name} is corrupt: its sha256 is {digest} but the Hub reported {remote.sha256}; "
            "the downloaded file was deleted, pull again (if it happens again, the mirror or proxy is at fault)"
        )
    report("done", offset, resumed_from)


def _open_range(client: HubClient, remote: RemoteFile, offset: int) -> HTTPResponse | None:
    """GET from ``offset``; ``None`` when the server says there is nothing past it (416)."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = client.open("GET", remote.download_url, headers)
    if response.status == 416:
        response.close()
        return None
    if response.status not in (200, 206):
        response.close()
        raise client.http_error(response.status, response.headers, remote.repo, remote.filename, remote.revision)
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            response.close()
            raise HubError(f"the server sent the wrong part of {remote.filename} ({content_range!r})")
    return response


def _write(sink: BinaryIO, block: bytes, name: str, offset: int, total: int | None) -> None:
    try:
        sink.write(block)
    except OSError as error:
        if error.errno in _DISK_FULL:
            with contextlib.suppress(OSError):
                sink.flush()
            raise DiskSpaceError(
                f"the disk filled up while writing {name} ({_fmt_progress(offset, total)} written): "
                f"{error.strerror}; free some space and pull again, it resumes from there"
            ) from None
        raise


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, TimeoutError):
        return "the server stopped sending"
    return str(reason) or type(reason).__name__


def _discard(part: Path, state_path: Path) -> None:
    part.unlink(missing_ok=True)
    state_path.unlink(missing_ok=True)
