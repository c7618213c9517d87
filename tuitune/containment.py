"""Names that become paths: checked before any byte is fetched, and every path checked to stay in its directory.

Repo ids, file names and revisions come from the command line, from catalogs and from the Hub's (or a
mirror's) file listings; the model id comes from ``--name``. Any of them could say ``../../x`` or ``/etc/x``.
Each is checked against the Hub's own rules first, and every path written is then resolved and checked to lie
inside its directory, so a name the rules missed still cannot leave it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tuitune.errors import TuituneError
from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.catalog import ModelEntry

_REPO_PART = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the catalog's id rule
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class UnsafeNameError(TuituneError):
    """A repo id, file name, revision or model id that could write outside tuitune's directories."""


def _show(text: str) -> str:
    """``text`` for a one-line message: control characters (newlines too) made visible."""
    return inert(text).replace("\n", "\u240a").replace("\t", "\u2409")


def check_repo_id(repo: str) -> str:
    """A Hub repo id, ``org/name``: letters, digits, '-', '_', '.', no '..' or '--' (they would alias paths)."""
    if not isinstance(repo, str) or repo.count("/") != 1:
        raise UnsafeNameError(f"repo id '{_show(str(repo))}' is not a Hub repo id: write it as org/name")
    for part in repo.split("/"):
        if not _REPO_PART.match(part) or ".." in part or "--" in part:
            raise UnsafeNameError(
                f"repo id '{_show(repo)}': '{_show(part)}' is not a valid name; use letters, digits, '-', '_' "
                "and '.' (no '..' or '--', at most 96 characters) as in org/name"
            )
    return repo


def check_repo_file(name: str) -> str:
    """A file path inside a repo, as the Hub names it: relative, '/'-separated, no '.' or '..' parts."""
    shown = _show(str(name))
    if not isinstance(name, str) or not name:
        raise UnsafeNameError("file name is empty; name a file in the repository")
    if _CONTROL.search(name):
        raise UnsafeNameError(f"file name '{shown}' has control characters; name the file as the repository lists it")
    if "\\" in name:
        raise UnsafeNameError(f"file name '{shown}' has a backslash; the Hub separates folders with '/'")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeNameError(f"file name '{shown}' is an absolute path; name a file inside the repository")
    parts = name.split("/")
    if ".." in parts:
        raise UnsafeNameError(f"file name '{shown}' leaves the repository: no '..' parts")
    if "." in parts or "" in parts:
        raise UnsafeNameError(f"file name '{shown}' has an empty or '.' part; write it as the repository lists it")
    return name


def check_revision(revision: str) -> str:
    """A branch, tag or commit, by git's ref-name rules (which also keep it from meaning a directory)."""
    shown = _show(str(revision))
    if not isinstance(revision, str) or not revision:
        raise UnsafeNameError("revision is empty; give a branch, tag or commit (default main)")
    if ".." in revision:
        raise UnsafeNameError(f"revision '{shown}' has '..'; give a branch, tag or commit (default main)")
    bad = _REF_FORBIDDEN.search(revision)
    if bad or "@{" in revision or revision == "@" or len(revision) > 255:
        what = f"the character '{_show(bad.group())}'" if bad else "'@{', a lone '@' or over 255 characters"
        raise UnsafeNameError(f"revision '{shown}' has {what}; give a branch, tag or commit (default main)")
    for part in revision.split("/"):
        if not part or part.startswith(".") or part.endswith((".lock", ".")):
            raise UnsafeNameError(
                f"revision '{shown}' has an empty part or one starting with '.' or ending in '.' or '.lock'; "
                "give a branch, tag or commit (default main)"
            )
    return revision


def check_model_id(model_id: str) -> str:
    """A local model id (``--name``, a catalog id): it names files and directories, so no path characters."""
    if not isinstance(model_id, str) or not _MODEL_ID.match(model_id):
        raise UnsafeNameError(
            f"model id '{_show(str(model_id))}' may use only letters, digits, '.', '_' and '-' and must start "
            "with a letter or digit; choose another --name"
        )
    return model_id


def check_hf_entry(entry: ModelEntry) -> None:
    """Refuse an ``hf`` entry whose id, repo, revision or file could name a path outside the cache."""
    check_model_id(entry.id)
    source = entry.source
    if source is None or source.kind != "hf":
        raise TuituneError(f"model '{entry.id}' does not come from the Hub")
    check_repo_id(source.repo)
    check_revision(source.revision)
    if source.file is not None:
        check_repo_file(source.file)


def contained(base: Path, *parts: str) -> Path:
    """``base / parts``, after checking that it resolves (symlinks followed) to somewhere strictly inside ``base``."""
    path = Path(base).joinpath(*parts)
    root = Path(base).resolve()
    target = path.resolve()
    if target == root or not target.is_relative_to(root):
        joined = "/".join(parts)
        raise UnsafeNameError(f"'{_show(joined)}' leads outside {base} (to {target}); refusing to write there")
    return path


def is_contained(base: Path, path: Path) -> bool:
    """Whether ``path`` resolves to somewhere strictly inside ``base``."""
    root = Path(base).resolve()
    target = Path(path).resolve()
    return target != root and target.is_relative_to(root)
