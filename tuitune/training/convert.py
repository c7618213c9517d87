"""Trainable fp32 weights from a GGUF: dequantized once by transformers, cached as safetensors.

Dequantizing a GGUF takes 30-95 s and up to 3 GB (see shared notes, lora-gguf §1); reloading the cached
safetensors takes seconds. The cache is keyed by the source file's size and mtime, so a changed GGUF is
converted again. torch and transformers are imported inside the functions: the app starts without them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitune.errors import ModelFileError, TuituneError
from tuitune.paths import app_dirs

if TYPE_CHECKING:
    from tuitune.catalog import ModelEntry

MARKER = "tuitune-source.json"
FORMAT_VERSION = 1  # bump to rebuild every cached conversion after a change in how it is made

_lock = threading.Lock()
SPACE_MARGIN_BYTES = 64 << 20  # config, tokenizer-free extras, and room left for logs and the history database
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def estimated_size(gguf: Path, dtype: str = "float32") -> int:
    """Bytes the safetensors will take: 4 (fp32) or 2 (bf16) per weight in the GGUF's tensor table (within 1 %).

    Without the ``gguf`` package, 2x the file per byte of dtype (a 4-bit GGUF holds ~4.5 bits per weight)
    errs on the safe side."""
    width = DTYPE_BYTES[dtype]
    try:
        from gguf import GGUFReader

        return width * sum(int(tensor.n_elements) for tensor in GGUFReader(str(gguf)).tensors)
    except Exception:  # any reader failure falls back to the estimate; transformers says why later
        return 2 * width * gguf.stat().st_size


def check_conversion_space(directory: Path, needed: int, cache_id: str, free: Callable[[Path], int]) -> None:
    """Refuse before converting: a full disk halfway through a save costs minutes and names no numbers."""
    from tuitune.downloads import DiskSpaceError

    available = free(directory)
    if needed + SPACE_MARGIN_BYTES > available:
        raise DiskSpaceError(
            f"not enough disk space to prepare trainable weights for '{cache_id}': they need about "
            f"{_human(needed)} and {directory} has {_human(available)} free (plus {_human(SPACE_MARGIN_BYTES)} "
            "kept spare); free some space or set TUITUNE_CACHE_DIR to a larger disk"
        )


def _human(size: int) -> str:
    from tuitune.downloads import human_bytes

    return human_bytes(size)


def _disk_full(error: BaseException) -> bool:
    """An OSError for a full disk, or safetensors' own error wrapping one ("… os error 28")."""
    if isinstance(error, OSError):
        return error.errno in _DISK_FULL
    text = str(error)
    return type(error).__name__ == "SafetensorError" and any(f"os error {code})" in text for code in _DISK_FULL)


def weights_cache_dir(model_id: str) -> Path:
    """Where ``model_id``'s fp32 safetensors live: ``cache/hf-weights/MODEL_ID``."""
    if not model_id or "/" in model_id or model_id.startswith("."):
        raise TuituneError(f"'{model_id}' cannot name a weights cache directory; use a catalog id")
    return app_dirs().cache / "hf-weights" / model_id


def _source_stamp(gguf: Path, dtype: str = "float32") -> dict[str, Any]:
    stat = gguf.stat()
    return {"format": FORMAT_VERSION, "gguf": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "dtype": dtype}  # fmt: skip


def _is_current(directory: Path, stamp: dict[str, Any]) -> bool:
    """The cache matches the GGUF and is complete (the marker is written last, then the directory renamed)."""
    try:
        marker = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    same = all(marker.get(key) == stamp[key] for key in ("format", "size", "mtime_ns"))
    same = same and marker.get("dtype", "float32") == stamp["dtype"]
    return same and (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def _resolve(source: ModelEntry | str | Path, model_id: str | None) -> tuple[Path, str]:
    """(GGUF file, cache id) from a catalog entry or a path to a .gguf file."""
    if isinstance(source, (str, Path)):
        gguf = Path(source).expanduser()
        return gguf, model_id or gguf.stem
    from tuitune.sources import model_path

    return model_path(source), model_id or source.id


def _convert(gguf: Path, target: Path, dtype: str = "float32") -> None:
    """Dequantize ``gguf`` with transformers and save safetensors (fp32 or bf16) + config into ``target``."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=getattr(torch, dtype),
            trust_remote_code=False,
        )
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as error:
        raise ModelFileError(
            f"transformers could not read {gguf} for training ({error}); training needs a GGUF whose "
            "architecture transformers can dequantize (llama, mistral, qwen2/3, gemma2/3, phi3, …)"
        ) from None
    config = model.config
    for attribute in ("quantization_config", "_pre_quantization_dtype"):  # the weights are plain floats now
        if hasattr(config, attribute):
            delattr(config, attribute)
    model.save_pretrained(target, safe_serialization=True)
    del model


def trainable_weights(
    source: ModelEntry | str | Path,
    model_id: str | None = None,
    free: Callable[[Path], int] = free_bytes,
    dtype: str = "float32",
) -> Path:
    """A directory ``AutoModelForCausalLM.from_pretrained`` loads in seconds: the weights of ``source``.

    ``source`` is a catalog entry or a .gguf path; ``model_id`` names the cache entry (default: the entry's
    id or the file's stem). ``dtype`` is the run's: a bf16 run on a GPU gets bf16 files, half the disk of
    fp32 (kept apart, as ``ID--bfloat16``). Converts on first use (atomically: a temp dir renamed into place),
    after checking ``free(directory)`` bytes are enough for the estimated output; a disk that fills anyway
    leaves nothing.
    """
    if dtype not in DTYPE_BYTES:
        raise TuituneError(f"cannot prepare weights in {dtype}; use one of {', '.join(DTYPE_BYTES)}")
    gguf, cache_id = _resolve(source, model_id)
    if not gguf.is_file():
        raise ModelFileError(f"{gguf} does not exist; cannot prepare trainable weights for '{cache_id}'")
    if dtype != "float32":
        cache_id = f"{cache_id}--{dtype}"
    target = weights_cache_dir(cache_id)
    stamp = _source_stamp(gguf, dtype)
    with _lock:
        if _is_current(target, stamp):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        needed = estimated_size(gguf, dtype)
        check_conversion_space(target.parent, needed, cache_id, free)
        try:
            _convert(gguf, temporary, dtype)
            (temporary / MARKER).write_text(json.dumps(stamp, indent=1), encoding="utf-8")
        except BaseException as error:  # nothing half-written stays, whatever stopped the conversion
            shutil.rmtree(temporary, ignore_errors=True)
            if _disk_full(error):
                raise TuituneError(
                    f"the disk filled up while writing trainable weights for '{cache_id}' into {target.parent} "
                    f"(they need about {_human(needed)}); the partial copy was deleted: free some space or set "
                    "TUITUNE_CACHE_DIR, then try again"
                ) from None
            if isinstance(error, OSError):
                raise TuituneError(
                    f"could not write trainable weights for '{cache_id}' into {target.parent}: "
                    f"{error.strerror or error}; free some disk space (about {_human(needed)}) or set TUITUNE_CACHE_DIR"
                ) from None
            raise
        if target.exists():
            if _is_current(target, stamp):  # another process finished the same conversion first
                shutil.rmtree(temporary, ignore_errors=True)
                return target
            stale = target.with_name(f".{target.name}.{os.getpid()}.stale")
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(temporary, target)
        except OSError:  # another process renamed its finished copy into place in the meantime
            shutil.rmtree(temporary, ignore_errors=True)
            if not _is_current(target, stamp):
                raise
        return target


def load_trainable(source: ModelEntry | str | Path, model_id: str | None = None) -> Any:
    """The fp32 ``AutoModelForCausalLM`` for ``source``: a converted directory, a cached id, or a GGUF/entry.

    A catalog id or GGUF is converted first if its cache is missing or stale.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if isinstance(source, Path) and source.is_dir():
        directory = source
    elif isinstance(source, str) and not source.endswith(".gguf") and "/" not in source:
        from tuitune.catalog import load_catalog

        directory = trainable_weights(load_catalog().get(source), model_id)
    else:
        directory = trainable_weights(source, model_id)
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, trust_remote_code=False)


HUB_WEIGHTS_MARKER = "tuitune-hub.json"


def hub_weights_dir(entry: ModelEntry) -> Path:
    """Where the safetensors named by ``entry.train_weights`` are kept: ``cache/hf-weights/ID--hub``."""
    return weights_cache_dir(f"{entry.id}--hub")


def cached_hub_weights(entry: ModelEntry) -> Path | None:
    """The complete local copy of ``entry.train_weights`` (same repo and revision), or None."""
    spec = entry.train_weights
    if spec is None:
        return None
    directory = hub_weights_dir(entry)
    try:
        marker = json.loads((directory / HUB_WEIGHTS_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("repo") != spec.repo or marker.get("revision") != spec.revision:
        return None
    return directory if all((directory / name).is_file() for name in marker.get("files", [])) else None


def hf_cache_weights(entry: ModelEntry) -> Path | None:
    """``entry.train_weights`` as already downloaded into the Hugging Face cache (``hf download``,
    transformers), when its snapshot holds config.json and every safetensors shard; None otherwise.

    huggingface_hub resolves the revision through the cache's refs without touching the network; the
    files found are checked against the GGUF like a fresh download. Nothing in the cache is modified.
    """
    spec = entry.train_weights
    if spec is None:
        return None
    try:
        from huggingface_hub import snapshot_download

        directory = Path(snapshot_download(spec.repo, revision=spec.revision, local_files_only=True,
                                           allow_patterns=["config.json"]))  # fmt: skip
    except Exception:  # not in the cache (LocalEntryNotFoundError), or a cache the library cannot read
        return None
    shards = sorted(path.name for path in directory.glob("*.safetensors"))
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            wanted = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not wanted <= set(shards):
            return None
    if not (directory / "config.json").is_file() or not shards:
        return None
    check_hub_config(directory / "config.json", entry)
    return directory


def fetch_hub_weights(entry: ModelEntry, client: Any = None, progress: Any = None) -> Path:
    """Download the safetensors repo named by ``entry.train_weights`` (resumable, verified) and check it fits.

    Only ``config.json``, safetensors shards (and their index) and ``generation_config.json`` are fetched:
    pickled ``.bin`` weights can run code when loaded and are refused. The repo must be the same model as the
    GGUF: its vocabulary and hidden size are compared before any training, since the adapter is exported
    against the GGUF and the data is tokenized by it.
    """
    from tuitune.containment import contained
    from tuitune.downloads import download
    from tuitune.hub import HubClient, HubOfflineError, hub_offline

    spec = entry.train_weights
    if spec is None:
        raise TuituneError(
            f"model '{entry.id}' names no train_weights repo in the catalog; add "
            'train_weights = { hf = "org/name" } to its entry, or train from the GGUF (--weights gguf)'
        )
    existing = cached_hub_weights(entry) or hf_cache_weights(entry)
    if existing is not None:
        return existing
    if hub_offline():
        raise HubOfflineError(
            f"the training weights of '{entry.id}' ({spec.repo}) are not downloaded and HF_HUB_OFFLINE is set; "
            "unset it to fetch them, or train from the GGUF with --weights gguf"
        )
    client = client or HubClient()
    files = client.list_files(spec.repo, spec.revision)
    shards = sorted(name for name in files if name.endswith(".safetensors") and "/" not in name)
    if "config.json" not in files or not shards:
        pickled = [name for name in files if name.endswith((".bin", ".pt", ".pth"))]
        why = " (it has only pickled weights, which tuitune never loads: they can run code)" if pickled else ""
        raise TuituneError(
            f"{spec.repo} has no config.json and .safetensors weights at its top level{why}; "
            "name a transformers safetensors repo in train_weights, or train from the GGUF with --weights gguf"
        )
    wanted = ["config.json", *shards]
    wanted += [name for name in ("model.safetensors.index.json", "generation_config.json") if name in files]
    directory = hub_weights_dir(entry)
    for name in wanted:  # the names come from the server's listing: each path is checked to stay in directory
        download(client, client.file_metadata(spec.repo, name, spec.revision), contained(directory, name), progress)
    check_hub_config(directory / "config.json", entry)
    marker = {"repo": spec.repo, "revision": spec.revision, "files": wanted}
    (directory / HUB_WEIGHTS_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    return directory


def check_hub_config(config_path: Path, entry: ModelEntry) -> None:
    """Refuse weights that are not the GGUF's model: different vocabulary or width."""
    from tuitune.gguf import read_gguf
    from tuitune.sources import model_path

    spec = entry.train_weights
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TuituneError(f"{config_path}: not a readable transformers config ({error})") from None
    text_config = config.get("text_config") or config
    info = read_gguf(model_path(entry))
    width = info.metadata.get(f"{info.architecture}.embedding_length")
    pairs = [("vocabulary", text_config.get("vocab_size"), info.vocab_size),
             ("hidden size", text_config.get("hidden_size"), width)]  # fmt: skip
    for what, hub_value, gguf_value in pairs:
        if hub_value is not None and gguf_value is not None and hub_value != gguf_value:
            raise TuituneError(
                f"{spec.repo} is not the model in {model_path(entry).name}: its {what} is {hub_value}, the GGUF's is "
                f"{gguf_value}; fix train_weights for '{entry.id}' in {entry.origin or 'the catalog'}, "
                "or train from the GGUF with --weights gguf"
            )
