"""GGUF models already on disk: the Hugging Face cache, Ollama's store and LM Studio's models folder.

People who run tuitune often have gigabytes of models from other tools; listing them saves a download. Every
store is someone else's data: this module only lists directories, stats files and reads GGUF headers, never
writes, follows no link out of a store (HF's own snapshot → blob links stay inside its cache), and treats
manifests and settings as untrusted JSON. A broken file is a ``FoundModel`` with ``problem`` set, not an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuitune.containment import is_contained
from tuitune.errors import TuituneError
from tuitune.hf_cache import cache_root as hf_cache_dir  # the Hub cache as huggingface_hub finds it

SOURCES = ("hf-cache", "ollama", "lmstudio")
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_DIGEST = re.compile(r"^sha256[:-](?P<hex>[0-9a-f]{64})$")
_MAX_JSON_BYTES = 1 << 20  # an Ollama manifest is ~1 KB and LM Studio's settings a few KB
_MAX_PER_STORE = 10_000  # a store with more model files than this is not a model store; stop listing there


@dataclass(frozen=True)
class FoundModel:
    """One GGUF model found in another tool's store, with what its header says (or why it cannot be read)."""

    source: str  # one of SOURCES
    reference: str  # stable: hf:ORG/REPO/FILE@COMMIT, ollama:NAME:TAG, lmstudio:PUBLISHER/REPO/FILE
    path: Path  # the file llama.cpp loads (the first shard of a split model)
    size: int | None  # bytes on disk, every shard together
    quantization: str | None = None
    architecture: str | None = None
    has_chat_template: bool = False
    problem: str | None = None
    shards: int = 1


def ollama_dir() -> Path:
    """``OLLAMA_MODELS``, as Ollama itself reads it, else its default store."""
    override = os.environ.get("OLLAMA_MODELS")
    return Path(override).expanduser() if override else _home() / ".ollama" / "models"


def lmstudio_dirs() -> list[Path]:
    """LM Studio's configured ``downloadsFolder`` when it exists, else its current and older default folders."""
    home = _home()
    configured = _read_json(home / ".lmstudio" / "settings.json")
    folder = configured.get("downloadsFolder") if isinstance(configured, dict) else None
    if isinstance(folder, str) and folder and "\0" not in folder:
        try:
            path = Path(folder).expanduser()
        except RuntimeError:  # ~user that does not exist
            path = None
        if path is not None and path.is_dir():
            return [path]
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def _home() -> Path:
    try:
        return Path.home()
    except RuntimeError:
        return Path("/nonexistent")


def discover() -> list[FoundModel]:
    """Every GGUF model in the three stores, sorted by source and reference; fast when they are absent."""
    found: list[FoundModel] = []
    found += _limit(scan_hf_cache(hf_cache_dir()))
    found += _limit(scan_ollama(ollama_dir()))
    seen: set[Path] = set()
    for folder in lmstudio_dirs():
        try:
            key = folder.resolve()
        except OSError:
            continue
        if key not in seen:
            seen.add(key)
            found += _limit(scan_lmstudio(folder))
    return sorted(found, key=lambda model: (SOURCES.index(model.source), model.reference))


def find(reference: str, found: list[FoundModel] | None = None) -> FoundModel:
    """The found model with this reference; a TuituneError listing what was found otherwise."""
    models = discover() if found is None else found
    for model in models:
        if model.reference == reference:
            return model
    hint = "`tuitune models` lists them" if models else "no model was found in the HF cache, Ollama or LM Studio"
    raise TuituneError(f"no model found on disk with reference '{reference}': {hint}")


def _limit(models: Iterator[FoundModel]) -> list[FoundModel]:
    result = []
    for model in models:
        result.append(model)
        if len(result) >= _MAX_PER_STORE:
            break
    return result


def _read_json(path: Path, root: Path | None = None) -> object:
    """A small JSON file's value, or None when missing, too big, a link out of ``root``, or not JSON."""
    value, _problem = _load_json(path, root)
    return value


def _load_json(path: Path, root: Path | None) -> tuple[object, str | None]:
    from tuitune.untrusted import LimitError, json_loads

    if root is not None and not is_contained(root, path):
        return None, "is a link to outside the store; not followed"
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_JSON_BYTES + 1)
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})"
    if len(data) > _MAX_JSON_BYTES:
        return None, f"is over {_MAX_JSON_BYTES:,} bytes; not a manifest"
    try:
        return json_loads(data.decode("utf-8")), None
    except (ValueError, LimitError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"is not valid JSON ({str(error)[:80]})"


def _inspect(source: str, reference: str, path: Path, shard_paths: list[Path] | None = None) -> FoundModel:
    """A FoundModel from the file's GGUF header; a damaged file or a missing shard becomes its ``problem``."""
    from tuitune.gguf import read_gguf

    shard_paths = shard_paths or [path]
    size: int | None = 0
    for shard in shard_paths:
        try:
            size += shard.stat().st_size
        except OSError:
            size = None
            break
    try:
        info = read_gguf(path)
    except TuituneError as error:
        return FoundModel(source, reference, path, size, problem=str(error), shards=len(shard_paths))
    except (OSError, ValueError, MemoryError, OverflowError) as error:  # a check missed: one bad row, not a failed scan
        problem = f"cannot read the GGUF header ({type(error).__name__}: {str(error)[:80]})"
        return FoundModel(source, reference, path, size, problem=problem, shards=len(shard_paths))
    problem = None
    match = _SHARD.match(path.name)
    if match and len(shard_paths) != int(match["total"]):
        problem = f"split into {int(match['total'])} files but {len(shard_paths)} are here; download the rest"
    return FoundModel(source, reference, path, size, info.quantization, info.architecture,
                      info.chat_template is not None, problem, len(shard_paths))  # fmt: skip


def _group_shards(names: list[str]) -> list[tuple[str, list[str]]]:
    """GGUF file names → (the file to list, every file of it): split models once, under their first shard."""
    groups: dict[str, list[str]] = {}
    singles = []
    for name in sorted(names):
        if not name.lower().endswith(".gguf") or "mmproj" in name.lower():  # a vision projector is not a model
            continue
        match = _SHARD.match(name)
        if match:
            groups.setdefault(f"{match['stem']}\0{match['total']}", []).append(name)
        else:
            singles.append((name, [name]))
    return singles + [(shards[0], shards) for shards in groups.values()]


# ---- the Hugging Face cache ---------------------------------------------------------------------------------


def _hf_ggufs(root: Path) -> dict[str, list[tuple[str, str]]]:
    """``models--*`` folder name → (commit, path in the snapshot) of each .gguf, without following any link."""
    result: dict[str, list[tuple[str, str]]] = {}
    try:
        repos = [entry for entry in os.scandir(root) if entry.name.startswith("models--")]
    except OSError:
        return result
    for repo in repos:
        snapshots = Path(repo.path) / "snapshots"
        if not repo.is_dir(follow_symlinks=False) or not snapshots.is_dir():
            continue
        try:
            commits = [entry for entry in os.scandir(snapshots) if entry.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for commit in commits:
            for folder, dirs, files in os.walk(commit.path):  # does not descend into linked folders
                dirs.sort()
                relative = os.path.relpath(folder, commit.path)
                for name in files:
                    if name.lower().endswith(".gguf"):
                        path = name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
                        result.setdefault(repo.name, []).append((commit.name, path))
    return result


def scan_hf_cache(root: Path) -> Iterator[FoundModel]:
    """GGUF files in the Hub cache's snapshots; huggingface_hub is imported only when there are some."""
    try:
        root = root.resolve()
    except OSError:
        return
    ggufs = _hf_ggufs(root)
    if not ggufs:
        return
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(root)
    except Exception as error:  # a third-party scanner on a folder anyone may have damaged: report, never crash
        for repo_dir, files in ggufs.items():
            for commit, name in files:
                yield FoundModel("hf-cache", _hf_reference(repo_dir, name, commit), root / repo_dir, None,
                                 problem=f"the HF cache could not be scanned: {error}")  # fmt: skip
        return
    scanned = {repo.repo_path.name: repo for repo in info.repos if repo.repo_type == "model"}
    for repo_dir, files in sorted(ggufs.items()):
        repo = scanned.get(repo_dir)
        if repo is None:  # huggingface_hub found the repo folder damaged (a broken link, a stray file)
            warning = next((str(w) for w in info.warnings if repo_dir in str(w)), "damaged repo folder")
            for commit, name in files:
                path = root / repo_dir / "snapshots" / commit / name
                yield FoundModel("hf-cache", _hf_reference(repo_dir, name, commit, repo_dir), path, None,
                                 problem=f"the HF cache reports this repo as damaged: {warning}")  # fmt: skip
            continue
        by_commit = {revision.commit_hash: revision for revision in repo.revisions}
        for commit, names in _by_commit(files).items():
            revision = by_commit.get(commit)
            cached = {file.file_path.relative_to(revision.snapshot_path).as_posix(): file for file in revision.files} \
                if revision else {}  # fmt: skip
            for name, shard_names in _group_shards(names):
                path = root / repo_dir / "snapshots" / commit / name
                reference = _hf_reference(repo.repo_id, name, commit)
                outside = [n for n in shard_names if n in cached and not is_contained(root, cached[n].blob_path)]
                if name not in cached or outside:
                    yield FoundModel("hf-cache", reference, path, None,
                                     problem="links to a file outside the HF cache; not followed")  # fmt: skip
                    continue
                yield _inspect("hf-cache", reference, path, [cached[n].file_path for n in shard_names])


def _by_commit(files: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for commit, name in files:
        grouped.setdefault(commit, []).append(name)
    return grouped


def _hf_reference(repo_id: str, name: str, commit: str, folder: str | None = None) -> str:
    if folder is not None:  # no repo id from huggingface_hub: read it from the folder name as it does
        repo_id = folder.removeprefix("models--").replace("--", "/")
    return f"hf:{repo_id}/{name}@{commit}"


# ---- Ollama ------------------------------------------------------------------------------------------------


def _walk_exact(root: Path, depth: int) -> Iterator[tuple[list[str], Path]]:
    """Regular files exactly ``depth`` folders below ``root`` (links to folders are not entered), sorted."""
    stack: list[tuple[list[str], Path]] = [([], root)]
    while stack:
        parts, folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            if len(parts) < depth:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(([*parts, entry.name], Path(entry.path)))
            elif entry.is_file() or entry.is_symlink():
                yield [*parts, entry.name], Path(entry.path)


def _ollama_name(parts: list[str]) -> str:
    """``registry/namespace/model/tag`` → the name ``ollama run`` takes (``model:tag`` for the default library)."""
    registry, namespace, model, tag = parts
    if registry == "registry.ollama.ai":
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{registry}/{namespace}/{model}:{tag}"


def scan_ollama(root: Path) -> Iterator[FoundModel]:
    """Each manifest's model layer → its blob, a GGUF; digests are checked before they name a path."""
    manifests = root / "manifests"
    if not manifests.is_dir():
        return
    for parts, manifest in _walk_exact(manifests, 3):
        reference = f"ollama:{_ollama_name(parts)}"
        value, problem = _load_json(manifest, root)
        if problem is not None:
            yield FoundModel("ollama", reference, manifest, None, problem=f"its manifest {problem}")
            continue
        layers = value.get("layers") if isinstance(value, dict) else None
        layer = next(
            (item for item in layers if isinstance(item, dict) and item.get("mediaType") == OLLAMA_MODEL_LAYER),
            None,
        ) if isinstance(layers, list) else None  # fmt: skip
        if layer is None:
            if isinstance(layers, list):
                continue  # no model layer (an adapter or projector only): nothing llama.cpp could load on its own
            yield FoundModel("ollama", reference, manifest, None, problem="its manifest has no 'layers' list")
            continue
        digest = layer.get("digest")
        match = _DIGEST.match(digest) if isinstance(digest, str) else None
        if match is None:
            shown = repr(digest)[:80]
            yield FoundModel("ollama", reference, manifest, None,
                             problem=f"its manifest names the model layer {shown}, not a sha256 digest")  # fmt: skip
            continue
        blob = root / "blobs" / f"sha256-{match['hex']}"
        if not blob.exists():
            yield FoundModel("ollama", reference, blob, None, problem="its model blob is missing from the store")
        elif not is_contained(root, blob):
            yield FoundModel("ollama", reference, blob, None, problem="its blob links outside the store; not followed")
        else:
            yield _inspect("ollama", reference, blob)


# ---- LM Studio ---------------------------------------------------------------------------------------------


def scan_lmstudio(root: Path) -> Iterator[FoundModel]:
    """``PUBLISHER/REPO/*.gguf`` under LM Studio's models folder."""
    if not root.is_dir():
        return
    folders: dict[tuple[str, str], list[str]] = {}
    for parts, _path in _walk_exact(root, 2):
        folders.setdefault((parts[0], parts[1]), []).append(parts[2])
    for (publisher, repo), names in sorted(folders.items()):
        folder = root / publisher / repo
        for name, shard_names in _group_shards(names):
            reference = f"lmstudio:{publisher}/{repo}/{name}"
            paths = [folder / shard for shard in shard_names]
            if not all(is_contained(root, path) for path in paths):
                yield FoundModel("lmstudio", reference, folder / name, None,
                                 problem="links to a file outside the models folder; not followed")  # fmt: skip
                continue
            yield _inspect("lmstudio", reference, folder / name, paths)
