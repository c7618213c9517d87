"""Model references in llama.cpp's ``-hf`` form, ``ORG/REPO[:QUANT]``, usable wherever a catalog id is.

People copy these from model cards and from ``llama-server -hf …`` commands; asking them to write a catalog entry
first would be a detour. A reference names a repository and, optionally, a quantization tag matched against its
GGUF file names case-insensitively (``:q4_k_m`` finds ``Model-Q4_K_M.gguf``). Without a tag the repo's Q4_K_M file
is taken, or its only GGUF; anything else is ambiguous and the choices are listed. Resolution reads the Hugging
Face cache only (offline); the Hub is asked only by ``tuitune pull REFERENCE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tuitune.containment import UnsafeNameError, check_repo_id
from tuitune.errors import ModelFileError, TuituneError
from tuitune.safe_text import inert

DEFAULT_QUANT = "Q4_K_M"  # llama.cpp's default for `-hf` without a tag: the usual size/quality balance
_SHAPE = re.compile(r"^(?P<repo>[^/:\s]+/[^/:\s]+)(?::(?P<quant>[^/:\s]*))?$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)


class AmbiguousReferenceError(TuituneError):
    """A reference (or one without a tag) matches several GGUF files of the repo."""


@dataclass(frozen=True)
class Reference:
    """``ORG/REPO`` plus an optional quantization tag, as the user wrote it."""

    repo: str
    quant: str | None

    @property
    def text(self) -> str:
        return f"{self.repo}:{self.quant}" if self.quant else self.repo


def parse_reference(text: str) -> Reference | None:
    """The reference ``text`` spells, or None when it is not shaped like one (a catalog id, a file path).

    A ``.gguf`` suffix means a path. Something shaped like a reference with an invalid repo id or tag is an
    error (``UnsafeNameError``) rather than None, so a typo is not silently treated as a missing file."""
    if not isinstance(text, str) or text.lower().endswith(".gguf") or text.startswith((".", "~", "/")):
        return None
    match = _SHAPE.match(text)
    if match is None:
        return None
    repo, quant = match.group("repo"), match.group("quant")
    check_repo_id(repo)
    if quant and not _TAG.match(quant):
        raise UnsafeNameError(
            f"'{inert(quant)}' in '{inert(text)}' is not a quantization tag; write ORG/REPO:Q4_K_M "
            "(letters, digits, '_', '.' and '-')"
        )
    return Reference(repo, quant or None)


def quant_of(filename: str) -> str | None:
    """The quantization tag in a GGUF file name (``Q4_K_M``, ``IQ4_XS``, ``F16``…), upper-cased, or None."""
    found = _QUANT_IN_NAME.findall(Path(filename).name)
    return found[-1].upper() if found else None


def _runnable(files: list[str]) -> list[str]:
    """The GGUF files llama.cpp would load: no vision projectors, and a split model only by its first shard."""
    chosen = []
    for name in sorted(files):
        base = name.rsplit("/", 1)[-1].lower()
        if not base.endswith(".gguf") or base.startswith("mmproj") or "-mmproj" in base:
            continue
        shard = _SHARD.search(base)
        if shard and int(shard.group(1)) != 1:
            continue
        chosen.append(name)
    return chosen


def _has_tag(filename: str, tag: str) -> bool:
    name = filename.rsplit("/", 1)[-1]
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(tag)}(?![A-Za-z0-9_])", name, re.IGNORECASE) is not None


def choose_file(reference: Reference, files: list[str]) -> str:
    """The one GGUF file of the repo ``reference`` means, from the repo's file list (cached or the Hub's)."""
    ggufs = _runnable(files)
    if not ggufs:
        raise ModelFileError(f"{inert(reference.repo)} has no GGUF file; tuitune runs GGUF models")
    if reference.quant:
        matches = [name for name in ggufs if _has_tag(name, reference.quant)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ModelFileError(
                f"no GGUF file in {inert(reference.repo)} matches ':{inert(reference.quant)}'; "
                f"it has {_choices(reference.repo, ggufs)}"
            )
        raise AmbiguousReferenceError(
            f"':{inert(reference.quant)}' matches {len(matches)} files in {inert(reference.repo)}: "
            f"{', '.join(inert(name) for name in matches[:8])}; name one by its full tag"
        )
    if len(ggufs) == 1:
        return ggufs[0]
    default = [name for name in ggufs if _has_tag(name, DEFAULT_QUANT)]
    if len(default) == 1:
        return default[0]
    raise AmbiguousReferenceError(
        f"{inert(reference.repo)} has {len(ggufs)} GGUF files and no single {DEFAULT_QUANT}; "
        f"add a tag: {_choices(reference.repo, ggufs)}"
    )


def _choices(repo: str, ggufs: list[str]) -> str:
    tags = []
    for name in ggufs:
        tag = quant_of(name)
        choice = f"{repo}:{tag}" if tag else name
        if choice not in tags:
            tags.append(choice)
    shown = ", ".join(inert(tag) for tag in tags[:10])
    return shown + (f" (and {len(tags) - 10} more)" if len(tags) > 10 else "")


def cached_file(reference: Reference, revision: str = "main") -> Path | None:
    """The reference's GGUF in the Hugging Face cache, or None when the repo or the file is not there."""
    from tuitune import hf_cache

    files = hf_cache.snapshot_files(reference.repo, revision)
    if not files:
        return None
    try:
        name = choose_file(reference, files)
    except ModelFileError:
        return None
    return hf_cache.local_file(reference.repo, name, revision)


def local_model(reference: Reference) -> Path:
    """The cached GGUF a reference runs, or one clear error saying how to get it (nothing is downloaded here).

    The cache may hold only some of a repo's files, so a tag that matches none of them means "not downloaded"
    (with what is there), not "no such file"."""
    from tuitune import hf_cache

    files = hf_cache.snapshot_files(reference.repo, "main")
    cached = ""
    if files:
        try:
            path = hf_cache.local_file(reference.repo, choose_file(reference, files), "main")
        except AmbiguousReferenceError:
            raise
        except ModelFileError:
            path = None
        if path is not None:
            return path
        if _runnable(files):
            cached = f" (it holds {_choices(reference.repo, _runnable(files))})"
    raise ModelFileError(
        f"{inert(reference.text)} is not in the Hugging Face cache{cached}: "
        f"`tuitune pull {inert(reference.text)}` downloads it (cache: {inert(str(hf_cache.cache_root()))})"
    )


def entry_id(filename: str) -> str:
    """A catalog-style id for a pulled file: its name without .gguf, lower-cased, path characters replaced."""
    stem = filename.rsplit("/", 1)[-1]
    stem = _SHARD.sub(".gguf", stem).removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model"


def hub_entry(reference: Reference, client=None):
    """The ``hf`` catalog-style entry ``tuitune pull REFERENCE`` downloads: the file chosen from the Hub's listing."""
    from tuitune.catalog import ModelEntry, Source
    from tuitune.hub import HubClient

    client = client or HubClient()
    filename = choose_file(reference, list(client.list_files(reference.repo, "main")))
    kind = "chat" if re.search(r"chat|instruct|(^|[-_.])it([-_.]|$)", reference.repo, re.IGNORECASE) else "base"
    source = Source(kind="hf", repo=reference.repo, file=filename, revision="main")
    return ModelEntry(id=entry_id(filename), name=reference.text, kind=kind, family="unknown",
                      mode="chat" if kind == "chat" else "raw", source=source, quant=quant_of(filename))  # fmt: skip
