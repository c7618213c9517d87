"""``tuitune export``: hand a finetune to other tools (llama.cpp / LM Studio, Ollama, transformers / vLLM).

Each format is written into a temporary folder next to the destination and renamed into place at the end, so a
full disk, a missing file or Ctrl-C never leaves a half-written export that looks finished. Nothing here
imports torch: a PEFT export copies the run's adapter folder as it is; a merged GGUF is made with gguf-py and
llama.cpp's quantizer (tuitune.export.merged).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError

FORMATS = ("lora-gguf", "merged-gguf", "ollama", "peft")
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")
SPACE_MARGIN = 16 * 1024 * 1024  # the README / Modelfile and file-system overhead
# End-of-turn markers of the chat formats tuitune knows, used as stops when the vocabulary has them.
KNOWN_END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>")
_SPECIAL_IDS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


@dataclass(frozen=True)
class Finetune:
    """A finetuned catalog model and the files an export needs."""

    id: str
    name: str
    base_id: str
    base_gguf: Path
    adapter: Path
    peft_dir: Path | None  # the run's PEFT adapter folder, when it is still there
    base_has_template: bool


def find_finetune(name: str) -> Finetune:
    """The finetune ``name`` with its base GGUF and adapter checked to exist (one clear error otherwise)."""
    from tuitune.catalog import load_catalog
    from tuitune.gguf import read_gguf
    from tuitune.sources import model_path
    from tuitune.training.runs import run_dir

    catalog = load_catalog()
    entry = catalog.get(name)
    if entry.kind != "finetuned" or entry.adapter is None or entry.base is None:
        raise TuituneError(f"'{name}' is a {entry.kind} model; tuitune export takes a finetuned model (kind finetuned)")
    if not entry.adapter.is_file():
        raise TuituneError(f"the adapter of '{name}' ({entry.adapter}) is missing; train it again or fix the catalog")
    base = model_path(catalog.get(entry.base), catalog)
    peft_dir = None
    for candidate in (run_dir(entry.id) / "adapter", entry.adapter.parent / "adapter"):
        if all((candidate / file).is_file() for file in PEFT_FILES):
            peft_dir = candidate
            break
    template = read_gguf(base).chat_template is not None
    return Finetune(entry.id, entry.name, entry.base, base.resolve(), entry.adapter.resolve(), peft_dir, template)


def end_of_turn_tokens(gguf: Path) -> list[str]:
    """The text of the GGUF's EOS / EOT / EOM tokens and of any known end-of-turn marker in its vocabulary.

    Read from the header with tuitune's bounds-checked reader (the vocabulary is walked, not kept).
    """
    from tuitune.gguf import _ARRAY, _STRING, _Reader

    with gguf.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if handle.read(4) != b"GGUF":
            return []
        reader = _Reader(handle, gguf, size, 4)
        reader.unpack("<I", "the version")
        reader.unpack("<Q", "the tensor count")
        count = reader.unpack("<Q", "the metadata count")
        special: dict[str, int] = {}
        vocabulary: dict[int, str] = {}
        for _ in range(count):
            key = reader.string("a metadata name")
            value_type = reader.unpack("<I", "a metadata type")
            if value_type != _ARRAY:
                value = reader.value(value_type, key)
                if key in _SPECIAL_IDS and isinstance(value, int) and not isinstance(value, bool):
                    special[key] = value
                continue
            if key != "tokenizer.ggml.tokens":
                reader.array(key)
                continue
            item_type = reader.unpack("<I", "the token type")
            tokens = reader.unpack("<Q", "the token count")
            if item_type != _STRING:
                return []
            reader.need(tokens * 8, "the vocabulary")
            for index in range(tokens):
                vocabulary[index] = reader.string("a token")
    found = [vocabulary[special[key]] for key in _SPECIAL_IDS if special.get(key) in vocabulary]
    found += [marker for marker in KNOWN_END_OF_TURN if marker in vocabulary.values()]
    return list(dict.fromkeys(text for text in found if text))


@contextmanager
def staged_folder(out: Path, needed: int, free: Callable[[Path], int]) -> Iterator[Path]:
    """A temporary folder next to ``out`` that becomes ``out`` when the block ends without an error.

    Refuses an existing ``out`` and too little free space first; removes the temporary folder on any failure.
    """
    from tuitune.downloads import DiskSpaceError, human_bytes

    if out.exists() or out.is_symlink():
        raise TuituneError(f"{out} already exists; choose another --out or remove it first")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        available = free(out.parent)
    except OSError as error:
        raise TuituneError(f"cannot write into {out.parent}: {error.strerror or error}") from None
    if needed + SPACE_MARGIN > available:
        raise DiskSpaceError(
            f"not enough disk space for the export: it needs about {human_bytes(needed)} and {out.parent} has "
            f"{human_bytes(available)} free; free some space or choose another --out"
        )
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        os.rename(temporary, out)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(f"the disk filled up while writing {out}; nothing was kept: free some space") from None
        raise TuituneError(f"could not write {out}: {error.strerror or error}; nothing was kept") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def check_options(fmt: str, copy: bool, quant: str | None, adapter_scale: float | str | None) -> str | None:
    """Refuse options that do not fit ``fmt`` before anything is read; returns the canonical quant name."""
    from tuitune.engines.llama import check_adapter_scale
    from tuitune.export.merged import parse_quant

    if fmt not in FORMATS:
        raise TuituneError(f"unknown export format '{fmt}': use one of {', '.join(FORMATS)}")
    if copy and fmt != "ollama":
        raise TuituneError("--copy applies to --format ollama (the other formats always copy their files)")
    if quant is not None and fmt not in ("merged-gguf", "ollama"):
        raise TuituneError(
            "--quant applies to --format merged-gguf and ollama (a merged model); drop it or change format"
        )
    merged = fmt == "merged-gguf" or quant is not None
    if adapter_scale is not None and not merged:
        raise TuituneError(
            "--adapter-scale applies to --format merged-gguf (or ollama with --quant): the other formats keep the "
            "adapter separate, so set its strength where it is loaded"
        )
    if copy and quant is not None:
        raise TuituneError("--copy and --quant exclude each other: with --quant the merged GGUF is written into DIR")
    if adapter_scale is not None:
        check_adapter_scale(adapter_scale)
    return parse_quant(quant if quant is not None else "f16") if merged else None


def export(
    tune: Finetune,
    fmt: str,
    out: Path,
    *,
    copy: bool = False,
    quant: str | None = None,
    adapter_scale: float | str | None = None,
    progress: Callable[[str], None] | None = None,
    free: Callable[[Path], int] = _disk_free,
) -> tuple[Path, list[str]]:
    """Write ``tune`` as ``fmt`` into the new folder ``out``; returns it and notes for the user.

    ``quant`` and ``adapter_scale`` apply to a merged model: ``merged-gguf``, or ``ollama`` given a ``quant``.
    """
    canonical = check_options(fmt, copy, quant, adapter_scale)
    scale = 1.0 if adapter_scale is None else float(adapter_scale)  # checked above
    if fmt == "lora-gguf":
        return _lora_gguf(tune, out, free), []
    if fmt == "peft":
        return _peft(tune, out, free), []
    if fmt == "merged-gguf":
        assert canonical is not None
        return _merged_gguf(tune, out, canonical, scale, progress, free), []
    return _ollama(tune, out, copy, free, canonical, scale, progress)


def _write_merged(
    tune: Finetune, reader: Any, folder: Path, quant: str, scale: float, progress: Callable[[str], None] | None
) -> str:
    """The merged model written into ``folder``; returns its file name."""
    from tuitune.export.merged import file_name, write_merged

    file = file_name(tune.id, quant)
    write_merged(reader, tune.adapter, folder, file, quant, scale, tune.name, progress)
    return file


def _open_merge(tune: Finetune, quant: str) -> tuple[Any, int]:
    """The base's gguf-py reader and the bytes the merged export needs at its peak."""
    from tuitune.export.merged import estimate_bytes, open_base, require_gguf

    require_gguf()
    reader = open_base(tune.base_gguf)
    return reader, estimate_bytes(reader, quant)


def _merged_gguf(
    tune: Finetune,
    out: Path,
    quant: str,
    scale: float,
    progress: Callable[[str], None] | None,
    free: Callable[[Path], int],
) -> Path:
    reader, needed = _open_merge(tune, quant)
    with staged_folder(out, needed, free) as folder:
        file = _write_merged(tune, reader, folder, quant, scale, progress)
        readme = (
            f"{file}: the finetune '{tune.id}' ({tune.name}) made by tuitune, merged into its base "
            f"'{tune.base_id}' at adapter scale {scale:g} and stored as {quant}.\n"
            "It is a standalone model: no adapter and no base file needed.\n\n"
            f"llama.cpp:  llama-cli -m {file}\n"
            "LM Studio:  put it in a models folder and load it.\n"
            f"Ollama:     a Modelfile with the line  FROM ./{file}  then  ollama create {tune.id} -f Modelfile\n"
        )
        (folder / "README.txt").write_text(readme, encoding="utf-8")
    return out


def _lora_gguf(tune: Finetune, out: Path, free: Callable[[Path], int]) -> Path:
    file = f"{tune.id}.gguf"
    readme = (
        f"{file}: a llama.cpp LoRA adapter, finetune '{tune.id}' ({tune.name}) made by tuitune.\n"
        f"It belongs to the base model '{tune.base_id}', GGUF file:\n  {tune.base_gguf}\n"
        "and works only on top of that model (same architecture and size).\n\n"
        f"llama.cpp:\n  llama-cli -m {tune.base_gguf} --lora {file}\n"
        f"  (--lora-scaled {file} 0.5 for half strength)\n"
        "LM Studio: load the base GGUF and attach this file as its LoRA adapter.\n"
    )
    with staged_folder(out, tune.adapter.stat().st_size, free) as folder:
        shutil.copyfile(tune.adapter, folder / file)
        (folder / "README.txt").write_text(readme, encoding="utf-8")
    return out


def _peft(tune: Finetune, out: Path, free: Callable[[Path], int]) -> Path:
    if tune.peft_dir is None:
        raise TuituneError(
            f"the PEFT adapter folder of '{tune.id}' is gone (it lives in the run's adapter/ folder); "
            "only --format lora-gguf or ollama can export it now"
        )
    sources = [tune.peft_dir / file for file in PEFT_FILES]
    with staged_folder(out, sum(path.stat().st_size for path in sources), free) as folder:
        for path in sources:
            shutil.copyfile(path, folder / path.name)
    return out


def _ollama(
    tune: Finetune,
    out: Path,
    copy: bool,
    free: Callable[[Path], int],
    quant: str | None = None,
    scale: float = 1.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, list[str]]:
    """A Modelfile: FROM the base + ADAPTER the adapter, or, given ``quant``, FROM a merged GGUF written beside it."""
    from tuitune.export.modelfile import render

    stops = end_of_turn_tokens(tune.base_gguf)
    notes = [
        f"Ollama Modelfile for the tuitune finetune '{tune.id}' ({tune.name}), base '{tune.base_id}'.",
        f"Create it with: ollama create {tune.id} -f Modelfile",
        "No TEMPLATE: Ollama takes the chat template from the base GGUF's metadata.",
    ]
    if not tune.base_has_template:
        notes.append("This base GGUF carries no chat template: add a TEMPLATE for chat use.")
    if quant is not None:
        from tuitune.export.merged import file_name

        notes[0] = f"Ollama Modelfile for the tuitune finetune '{tune.id}' ({tune.name}), merged into '{tune.base_id}' "
        notes[0] += f"at adapter scale {scale:g}, {quant}."
        base, adapter = f"./{file_name(tune.id, quant)}", None
    elif copy:
        base, adapter = "./base.gguf", "./adapter.gguf"
    else:
        base, adapter = str(tune.base_gguf), str(tune.adapter)
    try:
        text, skipped = render(base, adapter, stops, notes)
    except ValueError as error:
        raise TuituneError(f"{error}; use --copy to put the files next to the Modelfile") from None
    reader, needed = None, tune.base_gguf.stat().st_size + tune.adapter.stat().st_size if copy else 0
    if quant is not None:
        reader, needed = _open_merge(tune, quant)
    with staged_folder(out, needed, free) as folder:
        if quant is not None:
            _write_merged(tune, reader, folder, quant, scale, progress)
        elif copy:
            shutil.copyfile(tune.base_gguf, folder / "base.gguf")
            shutil.copyfile(tune.adapter, folder / "adapter.gguf")
        (folder / "Modelfile").write_text(text, encoding="utf-8")
    messages = [f"left out {len(skipped)} end-of-turn token(s) the Modelfile cannot carry"] if skipped else []
    return out, messages
