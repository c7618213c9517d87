"""Files that are never half-written, and folders that are private from the start.

A crash, a kill or a full disk in the middle of a plain ``open(path, "w")`` leaves a truncated file: a catalog
that no longer loads, settings that are lost. Here every write goes to a temporary file in the same folder
(``.NAME.PID.RANDOM.tmp``), is flushed and fsynced, then renamed over the target with ``os.replace`` (atomic on
POSIX and Windows), and the folder is fsynced so the rename itself survives a power cut. Any exception,
KeyboardInterrupt included, removes the temporary file; one left by a killed process is swept away by the next
write to the same file. Readers therefore see the old content or the new one, never a mix.

Appends (``train.log``, ``metrics.jsonl``, ``cli.log``) do not come here: a killed writer can cut only the last
line, which the readers skip, and rewriting a growing log on every line would be quadratic.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PRIVATE_DIR = 0o700


def _target(path: str | os.PathLike[str]) -> Path:
    """Where the bytes go: through a symbolic link to its file, so a linked dotfile stays a link."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _umask_default() -> int:
    """The bits ``open()`` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its file alone
    return True


def sweep_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.NAME.PID.*.tmp`` files next to ``path`` left by processes that no longer run; returns them."""
    target = _target(path)
    removed = []
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid_text = name[len(prefix) :].split(".", 1)[0]
            if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make a rename in ``folder`` durable (POSIX); skipped where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    perms: int | None = None,
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``, on any exception it is removed.

    ``mode`` is "w" (text) or "wb". An existing file keeps its permission bits; a new one gets ``perms``, or what
    ``open()`` would give it under the umask. Raises OSError (the target is then untouched).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    target = _target(path)
    sweep_temporaries(target)
    try:
        bits = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        bits = perms if perms is not None else _umask_default()
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if mode == "wb":
            handle: IO[Any] = os.fdopen(descriptor, "wb")
        else:
            handle = os.fdopen(descriptor, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(descriptor)
        os.unlink(temporary)
        raise
    try:
        with handle:
            yield handle
            handle.flush()
            with contextlib.suppress(AttributeError, NotImplementedError):
                os.fchmod(handle.fileno(), bits)
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(target.parent)


def write_text(
    path: str | os.PathLike[str],
    text: str,
    *,
    perms: int | None = None,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> Path:
    """Replace ``path`` with ``text`` atomically (see ``atomic_open``); returns the file written."""
    with atomic_open(path, "w", perms=perms, encoding=encoding, newline=newline) as handle:
        handle.write(text)
    return _target(path)


def write_bytes(path: str | os.PathLike[str], data: bytes, *, perms: int | None = None) -> Path:
    """Replace ``path`` with ``data`` atomically (see ``atomic_open``); returns the file written."""
    with atomic_open(path, "wb", perms=perms, encoding=None) as handle:
        handle.write(data)
    return _target(path)


def private_dir(path: str | os.PathLike[str], *, tighten: bool = False) -> Path:
    """Create ``path`` and any missing parents with mode 0700, whatever the umask; returns it.

    A folder that already exists is left as it is unless ``tighten`` (then group and other bits are removed, if
    it is ours): callers pass that only for folders tuitune names itself, never for one the user chose, which
    may be shared on purpose (see ``tuitune.paths.private_app_dir``). Raises OSError.
    """
    path = Path(path)
    missing: list[Path] = []
    folder = path
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another process: theirs to set
        os.chmod(folder, PRIVATE_DIR)  # the umask may have removed owner bits
    if not path.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(path))
    if tighten and path not in missing:
        tighten_dir(path)
    return path


def tighten_dir(path: str | os.PathLike[str]) -> None:
    """Remove group and other access from a folder we own; one owned by someone else is not ours to change."""
    info = os.stat(path)
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return
    bits = stat.S_IMODE(info.st_mode)
    if bits & 0o077:
        os.chmod(path, bits & 0o700)
