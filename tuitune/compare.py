"""Run the same prompts on several models at once: one thread and one engine per model.

A ``Llama`` object is not thread-safe, so each model's jobs run in order in that model's own thread while
the models run in parallel (ctypes releases the GIL inside llama.cpp). A model that fails to load or
generate, for whatever reason, gives an error result (with the text it had so far); the other models go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tuitune.catalog import Catalog, load_catalog
from tuitune.engines import Engine, Message, Mode, Request, ResolvedModel, Sampling, Stats, open_engine, resolve_model
from tuitune.engines.offload import Backend
from tuitune.errors import TuituneError

MODE_CHOICES = ("auto", "raw", "chat", "both")


@dataclass(frozen=True)
class Prompt:
    """A prompt as the user gave it: text, optionally a full conversation, optionally a pinned mode."""

    text: str
    messages: tuple[Message, ...] = ()
    mode: Mode | None = None
    id: str = ""


@dataclass
class Result:
    model: str
    mode: str
    text: str = ""
    stats: Stats = field(default_factory=Stats)
    notices: list[str] = field(default_factory=list)
    error: str | None = None
    backend: Backend | None = None  # where a local model ran (CPU, or CUDA 28/28 layers); None for endpoints

    def as_json(self) -> dict:
        data = {
            "model": self.model,
            "mode": self.mode,
            "text": self.text,
            "prompt_tokens": self.stats.prompt_tokens,
            "completion_tokens": self.stats.completion_tokens,
            "ttft_s": _round(self.stats.ttft_s),
            "decode_tokens_per_s": _round(self.stats.decode_tokens_per_s),
            "finish_reason": "error" if self.error else self.stats.finish_reason,
        }
        if self.notices:
            data["notices"] = self.notices
        if self.error:
            data["error"] = self.error
        if self.backend is not None:
            data["backend"] = self.backend.as_json()
        return data


@dataclass
class Comparison:
    prompt: Prompt
    results: list[Result]

    def as_json(self) -> dict:
        return {"prompt": self.prompt.text, "results": [result.as_json() for result in self.results]}


def describe(error: Exception) -> str:
    """A failure as one message: a TuituneError says it for the user; anything else is named by its type."""
    if isinstance(error, TuituneError):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def build_request(prompt: Prompt, mode: Mode, sampling: Sampling, system: str | None = None) -> Request:
    if mode == "raw":
        return Request.raw(prompt.text, sampling)
    messages = list(prompt.messages) or [Message("user", prompt.text)]
    if system and not any(m.role == "system" for m in messages):
        messages.insert(0, Message("system", system))
    return Request.chat(messages, sampling)


def modes_for(model: ResolvedModel, engine_has_template: bool | None, requested: str, prompt: Prompt) -> list[Mode]:
    """Which modes a prompt runs in on a model: ``both`` is the lab's 2×2; ``auto`` uses the catalog default."""
    if requested == "both":
        return ["raw", "chat"]
    if requested in ("raw", "chat"):
        return [requested]  # type: ignore[list-item]
    if prompt.mode:
        return [prompt.mode]
    if model.default_mode:
        return [model.default_mode]
    return ["chat" if engine_has_template else "raw"]


ChunkCallback = Callable[[int, int, str], None]  # (prompt index, result index, text)


def run_comparisons(
    prompts: Sequence[Prompt],
    models: Sequence[str],
    mode: str = "auto",
    sampling: Sampling | None = None,
    system: str | None = None,
    catalog: Catalog | None = None,
    n_ctx: int | None = None,
    on_chunk: ChunkCallback | None = None,
    cancel: threading.Event | None = None,
    adapter_scale: float | None = None,
    gpu_layers: int | None = None,
) -> list[Comparison]:
    """Every prompt on every model, models in parallel. Results keep the order of ``models`` (and modes).

    ``adapter_scale`` (0 … 1) sets the LoRA strength of the finetuned models among ``models``; ``gpu_layers``
    caps the layers the local ones offload to a GPU (see ``open_engine``).
    """
    if mode not in MODE_CHOICES:
        raise TuituneError(f"unknown mode '{mode}': use one of {', '.join(MODE_CHOICES)}")
    if not models:
        raise TuituneError("no models given: pass --models A,B")
    catalog = catalog if catalog is not None else load_catalog()
    resolved = [resolve_model(ref, catalog) for ref in models]  # unknown ids fail before any loading
    local_finetunes = [m for m in resolved if m.entry and m.entry.has_adapter]
    if adapter_scale is not None and not local_finetunes:
        raise TuituneError("--adapter-scale sets the strength of a finetuned (LoRA) model; none is being compared")
    sampling = sampling or Sampling()
    # Slots are fixed up front so that result order does not depend on which thread finishes first.
    comparisons = [Comparison(prompt, []) for prompt in prompts]
    slots: list[list[list[Result]]] = [[[] for _ in prompts] for _ in resolved]

    def work(model_index: int, model: ResolvedModel) -> None:
        try:
            run_model(model_index, model)
        except Exception as error:  # a bug or a library failure: this model's panes say so, the others go on
            for prompt_index, prompt in enumerate(prompts):
                if not slots[model_index][prompt_index]:
                    modes = modes_for(model, None, mode, prompt)
                    slots[model_index][prompt_index] = [Result(model.id, m, error=describe(error)) for m in modes]

    def run_model(model_index: int, model: ResolvedModel) -> None:
        engine: Engine | None = None
        try:
            finetuned = model.entry is not None and model.entry.has_adapter
            scale = adapter_scale if finetuned and adapter_scale is not None else 1.0
            engine = open_engine(model, n_ctx=n_ctx, adapter_scale=scale, catalog=catalog, gpu_layers=gpu_layers)
        except TuituneError as error:
            for prompt_index, prompt in enumerate(prompts):
                modes = modes_for(model, None, mode, prompt)
                slots[model_index][prompt_index] = [Result(model.id, m, error=str(error)) for m in modes]
            return
        try:
            has_template = getattr(engine, "has_chat_template", None)
            for prompt_index, prompt in enumerate(prompts):
                modes = modes_for(model, has_template, mode, prompt)
                for request_mode in modes:
                    result = Result(model.id, request_mode, backend=getattr(engine, "backend", None))
                    slots[model_index][prompt_index].append(result)
                    if cancel is not None and cancel.is_set():
                        result.stats.finish_reason = "cancelled"
                        continue
                    _generate_into(
                        engine,
                        build_request(prompt, request_mode, sampling, system),
                        result,
                        on_chunk,
                        prompt_index,
                        model_index,
                        cancel,
                    )
        finally:
            engine.close()

    threads = [
        threading.Thread(target=work, args=(index, model), name=f"tuitune-{model.id}", daemon=True)
        for index, model in enumerate(resolved)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for prompt_index, comparison in enumerate(comparisons):
        for model_index in range(len(resolved)):
            comparison.results.extend(slots[model_index][prompt_index])
    return comparisons


def _generate_into(
    engine: Engine,
    request: Request,
    result: Result,
    on_chunk: ChunkCallback | None,
    prompt_index: int,
    model_index: int,
    cancel: threading.Event | None,
) -> None:
    """Stream one answer into ``result``; a failure keeps the text so far and says why it was cut."""
    generation = engine.generate(request)
    try:
        for chunk in generation:
            if on_chunk is not None:
                on_chunk(prompt_index, model_index, chunk)
            if cancel is not None and cancel.is_set():
                generation.cancel()
    except Exception as error:  # not only TuituneError: an answer that breaks must not vanish from its pane
        result.error = describe(error)
    result.text = generation.text
    result.stats = generation.stats
    result.notices = list(generation.notices)
