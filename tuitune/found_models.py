"""Found models and the catalog: which found files are not in it yet, and adding one to the user's catalog.

Shared by `tuitune models` / `models add` and the TUI's Models screen, so both list the same models and refuse
an addition with the same message. Nothing here writes to another tool's store: an added model's catalog
source is the found file's path (nothing is copied).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from tuitune.catalog import Catalog
from tuitune.discovery import FoundModel
from tuitune.errors import TuituneError
from tuitune.safe_text import inert

KINDS = ("base", "chat")


@dataclass(frozen=True)
class AddedModel:
    """What ``add_found`` wrote: the catalog fields, the user catalog file, and the found model behind it."""

    fields: dict
    catalog_file: Path
    model: FoundModel

    @property
    def id(self) -> str:
        return self.fields["id"]


def default_id(reference: str) -> str:
    """A catalog id from a found model's reference: its file name (or Ollama name:tag), lowercased and cleaned."""
    tail = reference.split(":", 1)[1] if reference.startswith("ollama:") else reference.rsplit("/", 1)[-1]
    tail = re.sub(r"@[0-9a-f]+$", "", tail)
    tail = re.sub(r"-00001-of-\d{5}(?=\.gguf$)", "", tail, flags=re.I).removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", tail.rsplit("/", 1)[-1].lower()).strip("-.") or "found-model"


def _resolved(path: Path) -> Path | None:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None


def catalog_files(catalog: Catalog) -> set[Path]:
    """The resolved files catalog entries already run: ``path`` sources and downloaded ``hf`` files."""
    from tuitune.sources import hf_local_file

    files: set[Path] = set()
    for entry in catalog:
        source = entry.source
        if source is None:
            continue
        path: Path | None = None
        if source.kind == "path":
            path = source.path
        elif source.kind == "hf":
            try:
                path = hf_local_file(entry)
            except (TuituneError, OSError, ValueError):  # a hostile or odd entry: it names no file to hide
                path = None
        resolved = _resolved(path) if path is not None else None
        if resolved is not None:
            files.add(resolved)
    return files


def unlisted(found: list[FoundModel], catalog: Catalog) -> list[FoundModel]:
    """The found models whose file no catalog entry already is, so a model is never listed twice.

    Paths are compared resolved: the HF cache's snapshot links and a catalog path through a link name the same
    file as the blob they point at."""
    known = catalog_files(catalog)
    return [model for model in found if _resolved(model.path) not in known]


def add_found(
    reference: str,
    kind: str | None,
    model_id: str | None = None,
    pair: str | None = None,
    name: str | None = None,
    found: list[FoundModel] | None = None,
) -> AddedModel:
    """Add the found model ``reference`` to the user catalog; a TuituneError (nothing written) when it cannot be."""
    from tuitune.catalog import add_user_entry, load_catalog
    from tuitune.containment import check_model_id
    from tuitune.discovery import find

    if kind not in KINDS:
        shown = f"'{inert(kind)}'" if kind else "missing"
        raise TuituneError(f"--kind is {shown}: say whether the model is a base or a chat model (--kind base|chat)")
    catalog = load_catalog()
    cached = _cached_reference(reference, found)
    if cached is not None:  # ORG/REPO[:QUANT] in the HF cache: the found model behind that file
        reference, found = cached.reference, [cached]
    model_id = check_model_id(model_id or default_id(reference))
    if model_id in catalog:
        origin = inert(str(catalog.get(model_id).origin))
        raise TuituneError(
            f"a model with id '{inert(model_id)}' is already in the catalog ({origin}); choose another --id"
        )
    if pair is not None and pair not in catalog:
        raise TuituneError(f"--pair '{inert(pair)}' is not a model in the catalog; `tuitune models` lists them")
    model = find(reference, found)
    if model.problem is not None:
        raise TuituneError(f"{inert(reference)} cannot be added: {inert(model.problem)}")
    mode = "chat" if kind == "chat" else "raw"
    fields: dict = {"id": model_id, "name": name or model_id, "kind": kind,
                    "family": model.architecture or "unknown", "mode": mode}  # fmt: skip
    if pair:
        fields["pair"] = pair
    if model.size:
        fields["size"] = model.size
    if model.quantization:
        fields["quant"] = model.quantization
    fields["description"] = f"found on disk: {model.reference}"
    fields["source"] = _hub_source(model) or {"path": str(model.path)}
    return AddedModel(fields, add_user_entry(fields), model)


def _hub_source(model: FoundModel) -> dict | None:
    """An HF-cache model's catalog source as the repo file it is (``hf`` + ``file``, pinned to its commit unless
    ``main`` points there), so `tuitune pull` can fetch it again and `tuitune rm` frees it like any download;
    None for other stores or a reference that does not check out (then the entry names the path)."""
    from tuitune.containment import check_repo_file, check_repo_id
    from tuitune.hf_cache import resolve_commit

    if model.source != "hf-cache" or not model.reference.startswith("hf:") or "@" not in model.reference:
        return None
    location, commit = model.reference.removeprefix("hf:").rsplit("@", 1)
    parts = location.split("/", 2)
    if len(parts) != 3:
        return None
    try:
        repo, file = check_repo_id("/".join(parts[:2])), check_repo_file(parts[2])
    except TuituneError:
        return None
    source = {"hf": repo, "file": file}
    if resolve_commit(repo, "main") != commit:
        source["revision"] = commit
    return source


def _cached_reference(text: str, found: list[FoundModel] | None) -> FoundModel | None:
    """The found model an ``ORG/REPO[:QUANT]`` reference names in the HF cache; None for other references."""
    from tuitune.discovery import scan_hf_cache
    from tuitune.hf_cache import cache_root
    from tuitune.references import local_model, parse_reference

    reference = parse_reference(text)
    if reference is None:
        return None
    path = _resolved(local_model(reference))  # not cached: says `tuitune pull ORG/REPO:QUANT`
    candidates = found if found is not None else list(scan_hf_cache(cache_root()))
    for model in candidates:
        if model.source == "hf-cache" and _resolved(model.path) == path:
            return model
    raise TuituneError(
        f"{inert(text)} is in the Hugging Face cache but its entry could not be read; `tuitune models` says why"
    )
