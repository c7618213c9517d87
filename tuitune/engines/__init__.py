"""Engines behind one interface; ``open_engine`` turns a catalog id or a .gguf path into a loaded engine.

Nothing heavy is imported here: llama_cpp is imported only when a model is actually opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuitune.catalog import Catalog, ModelEntry, load_catalog
from tuitune.engines.base import Engine, Generation, LoadControl, Message, Mode, Request, Sampling, Stats
from tuitune.errors import ModelNotFoundError, TuituneError

__all__ = [
    "Engine",
    "Generation",
    "LoadControl",
    "Message",
    "Mode",
    "Request",
    "ResolvedModel",
    "Sampling",
    "Stats",
    "open_engine",
    "resolve_model",
]  # fmt: skip


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made concrete: its id, the catalog entry if any, and its default mode."""

    id: str
    entry: ModelEntry | None
    path: Path | None  # a bare .gguf path; catalog models resolve their file when opened

    @property
    def default_mode(self) -> Mode | None:
        return self.entry.mode if self.entry else None  # a bare file: decided by its chat template


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".gguf") or "/" in ref or ref.startswith(".") or ref.startswith("~")


def resolve_model(ref: str, catalog: Catalog | None = None) -> ResolvedModel:
    """A catalog id wins; then a file that exists; then an ``ORG/REPO[:QUANT]`` reference found in the Hugging
    Face cache (offline; a missing one says how to pull it); otherwise a path to a .gguf file."""
    from tuitune.references import local_model, parse_reference

    catalog = catalog if catalog is not None else load_catalog()
    if ref in catalog:
        return ResolvedModel(ref, catalog.get(ref), None)
    exists = Path(ref).expanduser().exists()
    reference = None if exists else parse_reference(ref)
    if reference is not None:
        return ResolvedModel(reference.text, None, local_model(reference))
    if _looks_like_path(ref) or exists:
        path = Path(ref).expanduser()
        return ResolvedModel(path.stem if path.suffix == ".gguf" else path.name, None, path)
    catalog.get(ref)  # raises ModelNotFoundError with close matches
    raise ModelNotFoundError(ref)


def open_engine(
    model: ResolvedModel,
    n_ctx: int | None = None,
    adapter_scale: float = 1.0,
    catalog: Catalog | None = None,
    logits_all: bool = False,
    load: LoadControl | None = None,
    gpu_layers: int | None = None,
) -> Engine:
    """Load the model behind ``model``; raises a TuituneError with a clear message on any problem.

    A finetuned entry runs as its base GGUF with its LoRA adapter attached at ``adapter_scale`` (0 = the base,
    1 = the finetune); ``catalog`` is where its base is looked up (default: the loaded catalog).
    ``logits_all`` keeps the logits of every position (``LlamaCppEngine.logits``, for held-out loss) on local
    models; it costs n_ctx × vocabulary floats, so pass a small ``n_ctx`` with it. ``load`` reports the load's
    progress and can stop it (``StoppedError``). ``gpu_layers`` (``--gpu-layers``) caps the layers a local model
    offloads to a GPU over the catalog's ``gpu_layers``; 0 keeps it on the CPU, None offloads all that fit.
    """
    from tuitune.engines.llama import LlamaCppEngine, check_adapter_scale
    from tuitune.sources import base_entry, model_path

    adapter_scale = check_adapter_scale(adapter_scale)
    entry = model.entry
    if adapter_scale != 1.0 and (entry is None or not entry.has_adapter):
        raise TuituneError(f"an adapter scale applies to finetuned (LoRA) models; '{model.id}' is not one")
    if entry is None:
        return LlamaCppEngine(model.path, model_id=model.id, n_ctx=n_ctx, logits_all=logits_all, load=load,
                              gpu_layers=gpu_layers)  # fmt: skip
    if entry.remote:
        from tuitune.engines.openai import Endpoint, OpenAIEngine

        return OpenAIEngine(Endpoint.from_entry(entry), model_id=entry.id, n_ctx=n_ctx or entry.context_length)
    if entry.kind == "finetuned":
        base = base_entry(entry, catalog)
        return LlamaCppEngine(
            model_path(base),
            model_id=entry.id,
            n_ctx=n_ctx or entry.context_length or base.context_length,
            chat_format=entry.chat_format or base.chat_format,
            adapter_path=entry.adapter,
            adapter_scale=adapter_scale,
            logits_all=logits_all,
            load=load,
            gpu_layers=_first(gpu_layers, entry.gpu_layers, base.gpu_layers),
        )
    return LlamaCppEngine(
        model_path(entry),
        model_id=entry.id,
        n_ctx=n_ctx or entry.context_length,
        chat_format=entry.chat_format,
        logits_all=logits_all,
        load=load,
        gpu_layers=_first(gpu_layers, entry.gpu_layers),
    )


def _first(*values: int | None) -> int | None:
    """The first setting given: the command line's over the entry's over its base's."""
    return next((value for value in values if value is not None), None)
