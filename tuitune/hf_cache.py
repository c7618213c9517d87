"""The Hugging Face cache, read and written in huggingface_hub's own layout without importing the library.

A GGUF that tuitune pulls, and one a user fetched with ``hf download``, are the same bytes in the same place:
``models--ORG--NAME/blobs/<sha256 or git blob id>``, linked from ``snapshots/<commit>/<file>`` by a relative
symlink (a copy where symlinks are not allowed, as the library does on Windows), with ``refs/<branch or tag>``
holding the commit. So either tool finds what the other fetched, and ``hf cache`` lists and frees both.

Everything in the cache may have been written by someone else: refs must hold a 40-hex commit, and a snapshot
entry counts only when it resolves into its own repo folder (or the library's shared blob store), so a link
to ``/etc/passwd`` or into another repo is never taken for a model. Every name is checked before any write.
Links and refs are written to a temporary name and ``os.replace``-d, so a crash never leaves a link pointing at
nothing, and the ref is written last, so it never names a commit whose file is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

from tuitune.containment import check_repo_file, check_repo_id, check_revision, contained, is_contained

COMMIT = re.compile(r"^[0-9a-f]{40}$")
BLOB_NAME = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")  # a git blob id (sha1) or an LFS sha256
SHARED_STORE_MARKER = ".huggingface-shared-blobs"  # huggingface_hub's cache-wide store of Xet blobs
CACHEDIR_TAG = (  # what huggingface_hub writes, byte for byte, so backup tools skip the cache
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by huggingface_hub.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/\n"
)
_MAX_REF_BYTES = 256


def cache_root() -> Path:
    """Where huggingface_hub looks, read from the environment as its ``constants`` does, without importing it:
    ``HF_HUB_CACHE`` (or the older ``HUGGINGFACE_HUB_CACHE``), else ``HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def folder_name(repo_id: str) -> str:
    return "models--" + check_repo_id(repo_id).replace("/", "--")


def repo_folder(repo_id: str) -> Path:
    """``<cache>/models--ORG--NAME`` (the id checked first, so ``..`` never becomes a path)."""
    root = cache_root()
    return contained(root, folder_name(repo_id)) if root.exists() else root / folder_name(repo_id)


def _homes(repo_dir: Path) -> list[Path]:
    """Where a snapshot entry of this repo may resolve to: its own folder, and the library's shared store."""
    homes = [repo_dir]
    store = repo_dir.parent / "blobs"
    with contextlib.suppress(OSError):
        if (store / SHARED_STORE_MARKER).read_text(encoding="utf-8") == "1\n":
            homes.append(store)
    return homes


def is_cached_file(repo_dir: Path, path: Path) -> bool:
    """A regular file (after links) that resolves inside the repo's folder or the shared store."""
    try:
        return path.is_file() and any(is_contained(home, path) for home in _homes(repo_dir))
    except (OSError, RuntimeError):  # a link loop
        return False


def resolve_commit(repo_id: str, revision: str = "main") -> str | None:
    """The commit ``revision`` names in the cache: itself when it is one, else what ``refs/<revision>`` holds."""
    check_revision(revision)
    if COMMIT.match(revision):
        return revision
    refs = repo_folder(repo_id) / "refs"
    ref = refs / revision
    if not refs.is_dir() or not is_contained(refs, ref) or not ref.is_file():
        return None
    try:
        with open(ref, "rb") as handle:
            text = handle.read(_MAX_REF_BYTES).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if COMMIT.match(text) else None  # '../../x' or junk is not a commit: never followed


def snapshot_dir(repo_id: str, revision: str = "main") -> Path | None:
    commit = resolve_commit(repo_id, revision)
    if commit is None:
        return None
    repo_dir = repo_folder(repo_id)
    path = repo_dir / "snapshots" / commit
    return path if path.is_dir() and is_contained(repo_dir, path) else None


def snapshot_files(repo_id: str, revision: str = "main") -> list[str] | None:
    """The repo-relative paths of the complete files in that snapshot; None if the repo/revision is not cached."""
    directory = snapshot_dir(repo_id, revision)
    if directory is None:
        return None
    repo_dir = repo_folder(repo_id)
    found = []
    for parent, _dirs, names in os.walk(directory):  # symlinked folders are not walked into
        for name in names:
            path = Path(parent) / name
            if is_cached_file(repo_dir, path):
                found.append(path.relative_to(directory).as_posix())
    return sorted(found)


def local_file(repo_id: str, filename: str, revision: str = "main") -> Path | None:
    """The snapshot path of ``filename`` if it is cached, complete and inside its repo's folder; else None."""
    check_repo_file(filename)
    directory = snapshot_dir(repo_id, revision)
    if directory is None:
        return None
    path = directory.joinpath(*filename.split("/"))
    return path if is_cached_file(repo_folder(repo_id), path) else None


# -- writing ----------------------------------------------------------------------------------------------
def blob_path(repo_id: str, name: str) -> Path:
    if not BLOB_NAME.match(name):
        raise ValueError(f"not a blob name: {name!r}")
    return repo_folder(repo_id) / "blobs" / name


def lock_path(repo_id: str, key: str) -> Path:
    """The library's own lock for a blob, so tuitune and ``hf download`` never write the same blob at once."""
    return cache_root() / ".locks" / folder_name(repo_id) / f"{key}.lock"


def prepare(repo_id: str) -> Path:
    """Create the repo folder as the library does (``blobs`` and ``snapshots``, so a scan sees no damage)."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    tag = root / "CACHEDIR.TAG"
    if not tag.exists():
        with contextlib.suppress(OSError):
            _write_atomic(tag, CACHEDIR_TAG)
    repo_dir = repo_folder(repo_id)
    for sub in ("blobs", "snapshots"):
        (repo_dir / sub).mkdir(parents=True, exist_ok=True)
        contained(repo_dir, sub)  # a planted link must not redirect the writes
    return repo_dir


def link_snapshot(repo_id: str, commit: str, filename: str, blob: Path, new_blob: bool = True) -> Path:
    """Point ``snapshots/<commit>/<filename>`` at ``blob``, atomically; returns the snapshot path.

    Without symlink rights the blob itself is moved there when it is new (``new_blob``) and copied otherwise,
    like huggingface_hub; readers accept a regular file as well as a link."""
    if not COMMIT.match(commit):
        raise ValueError(f"not a commit: {commit!r}")
    repo_dir = repo_folder(repo_id)
    pointer = contained(repo_dir / "snapshots", commit, *check_repo_file(filename).split("/"))
    pointer.parent.mkdir(parents=True, exist_ok=True)
    contained(repo_dir, "snapshots", commit, *filename.split("/"))
    temporary = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            os.symlink(os.path.relpath(blob, pointer.parent), temporary)
        except (OSError, NotImplementedError):
            if new_blob:
                os.replace(blob, temporary)
            else:
                shutil.copyfile(blob, temporary)
        os.replace(temporary, pointer)
    finally:
        if temporary.is_symlink() or temporary.exists():
            temporary.unlink()
    return pointer


def write_ref(repo_id: str, revision: str, commit: str) -> None:
    """``refs/<revision>`` = commit (nothing for a commit revision); written last, atomically."""
    if revision == commit or not COMMIT.match(commit):
        return
    refs = repo_folder(repo_id) / "refs"
    ref = contained(refs, *check_revision(revision).split("/"))
    ref.parent.mkdir(parents=True, exist_ok=True)
    contained(refs, *revision.split("/"))
    with contextlib.suppress(OSError):
        if ref.read_text(encoding="ascii") == commit:
            return
    _write_atomic(ref, commit)


def _write_atomic(path: Path, text: str) -> None:
    from tuitune.atomic import write_text

    write_text(path, text, encoding="ascii")


# -- removing ---------------------------------------------------------------------------------------------
def _first_hop(path: Path) -> Path:
    """Where a snapshot link points (one hop, as the library counts it: a repo blob may link to the store)."""
    return Path(os.path.abspath(path.parent / os.readlink(path))) if path.is_symlink() else path


def remove_files(repo_id: str, revision: str, wanted: list[str]) -> list[tuple[Path, int]]:
    """Unlink ``wanted`` from the revision's snapshot, and each blob no other snapshot of the repo links to.

    Returns (snapshot path, bytes freed). Only this repo's folder is touched: a blob outside it (the shared
    store, another repo) is left to its owner. An emptied snapshot goes with the refs naming it, so the
    library's scan never sees a ref to a missing commit."""
    directory = snapshot_dir(repo_id, revision)
    if directory is None:
        return []
    repo_dir = repo_folder(repo_id)
    blobs = Path(os.path.abspath(repo_dir / "blobs"))
    removed: list[tuple[Path, int]] = []
    for name in wanted:
        pointer = directory.joinpath(*check_repo_file(name).split("/"))
        parent, root = pointer.parent.resolve(), directory.resolve()
        if not (parent == root or parent.is_relative_to(root)):  # a planted folder link: not ours to unlink
            continue
        if pointer.is_symlink():
            target = _first_hop(pointer)
            pointer.unlink()
            freed = 0
            if target.parent == blobs and not any(_first_hop(other) == target for other in _snapshot_entries(repo_dir)):
                with contextlib.suppress(OSError):
                    freed = 0 if target.is_symlink() else target.stat().st_size  # a store link frees nothing here
                    target.unlink()
            removed.append((pointer, freed))
        elif pointer.is_file():  # a copy, where the library could not link
            freed = pointer.stat().st_size
            pointer.unlink()
            removed.append((pointer, freed))
    _tidy(repo_dir, directory)
    return removed


def _snapshot_entries(repo_dir: Path) -> list[Path]:
    entries = []
    for parent, _dirs, names in os.walk(repo_dir / "snapshots"):
        entries += [Path(parent) / name for name in names]
    return entries


def _tidy(repo_dir: Path, snapshot: Path) -> None:
    """Drop emptied folders, the refs naming a dropped snapshot, and the repo folder once nothing is left."""
    for parent, _dirs, _names in sorted(os.walk(snapshot), key=lambda item: -len(item[0])):
        with contextlib.suppress(OSError):
            Path(parent).rmdir()
    if not snapshot.exists():
        refs = repo_dir / "refs"
        for parent, _dirs, names in os.walk(refs):
            for name in names:
                ref = Path(parent) / name
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    if ref.read_text(encoding="ascii").strip() == snapshot.name:
                        ref.unlink()
        for parent, _dirs, _names in sorted(os.walk(refs), key=lambda item: -len(item[0])):
            with contextlib.suppress(OSError):
                Path(parent).rmdir()
    leftovers = [path for path in repo_dir.iterdir() if path.name not in ("blobs", "snapshots")]
    empty = all(not any((repo_dir / sub).iterdir()) for sub in ("blobs", "snapshots") if (repo_dir / sub).is_dir())
    if not leftovers and empty:
        for sub in ("blobs", "snapshots"):
            with contextlib.suppress(OSError):
                (repo_dir / sub).rmdir()
        with contextlib.suppress(OSError):
            repo_dir.rmdir()
