"""The llama.cpp engine (llama-cpp-python), with an explicit raw/chat mode per request.

The loop drives ``Llama.generate`` directly instead of ``create_completion`` so that tuitune knows the exact
prompt and completion token counts, the time to first token and the decode speed, can hand its threads
back between tokens, and can stop at once when a request is cancelled.
"""

from __future__ import annotations

import codecs
import ctypes
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tuitune.engines.base import Generation, Grammar, LoadControl, Message, Request
from tuitune.engines.chat_formats import DEFAULT_FALLBACK, FALLBACK_FORMATS
from tuitune.engines.templates import ChatTemplate, RenderStopped, compile_errors, model_chat_template
from tuitune.engines.threads import DEFAULT_BUDGET, ThreadBudget
from tuitune.errors import ContextOverflowError, ModelFileError, StoppedError, TuituneError
from tuitune.gguf import GGUFInfo, read_gguf

DEFAULT_CONTEXT = 4096
GGUF_TEMPLATE = "gguf template"


def split_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """Split streamed text into (safe to emit, held back, stop reached).

    Text that could be the start of a stop string is held back until the next token decides.
    """
    if not stops:
        return text, "", False
    first = min((i for i in (text.find(stop) for stop in stops) if i >= 0), default=-1)
    if first >= 0:
        return text[:first], "", True
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold], text[len(text) - hold :], False


def check_adapter_scale(scale: float) -> float:
    """A LoRA strength must be a number from 0 (exactly the base) to 1 (the finetuned model)."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TuituneError(f"adapter scale {scale!r} is not a number; use a value from 0 to 1") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise TuituneError(f"adapter scale {scale} is out of range: use 0 (the base) … 1 (the finetuned model)")
    return value


class LlamaCppEngine:
    """One GGUF model loaded in llama.cpp. Not thread-safe: one thread generates at a time."""

    def __init__(
        self,
        model_path: str | Path,
        model_id: str | None = None,
        n_ctx: int | None = None,
        chat_format: str | None = None,
        budget: ThreadBudget = DEFAULT_BUDGET,
        info: GGUFInfo | None = None,
        adapter_path: str | Path | None = None,
        adapter_scale: float = 1.0,
        logits_all: bool = False,
        load: LoadControl | None = None,
        chat_template: str | None = None,
        gpu_layers: int | None = None,
    ):
        """``chat_template`` (Jinja) replaces the GGUF's own; ``chat_format`` is used when there is neither.
        ``gpu_layers`` caps the layers offloaded to a GPU (0: the CPU; None: all that fit, see engines/offload.py)."""
        self.path = Path(model_path)
        self.info = info or read_gguf(self.path)
        self.model_id = model_id or self.path.stem
        self.budget = budget
        trained = self.info.context_length or DEFAULT_CONTEXT
        # Up to the context the model was trained with: beyond it llama.cpp runs but the answers degrade.
        self._n_ctx = min(n_ctx, trained) if n_ctx else min(trained, DEFAULT_CONTEXT)
        self._fallback = chat_format or DEFAULT_FALLBACK
        if self._fallback not in FALLBACK_FORMATS:
            raise TuituneError(
                f"unknown chat_format '{self._fallback}' for {self.model_id}; use one of {', '.join(FALLBACK_FORMATS)}"
            )
        self._logits_all = logits_all
        self._gpu_layers = gpu_layers
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self._adapter: Any = None
        self._adapter_scale = check_adapter_scale(adapter_scale)
        self._applied_scale: float | None = None  # what the context uses now; None: nothing set yet
        if self.adapter_path is not None:
            self._check_adapter_file(self.adapter_path)  # before loading the base: a bad file fails fast
        for source in (self.info.chat_template, chat_template):  # before the load: llama.cpp would fail after it
            if source:
                ChatTemplate(source, self.model_id)
        self._llm = self._load(load)
        if self.adapter_path is not None:
            try:
                self._attach_adapter(self.adapter_path)
            except BaseException:
                self.close()
                raise
        self._threads = budget.threads()
        self._vocab = self._llama_cpp.llama_model_get_vocab(self._llm.model)
        try:
            self._template = model_chat_template(self._llm, self.model_id, chat_template)
        except BaseException:
            self.close()
            raise
        from tuitune.engines.llama_control import AbortSwitch

        self._abort = AbortSwitch(self._llama_cpp, self._llm.ctx)
        self._grammars: dict[str, Any] = {}  # GBNF text → LlamaGrammar, checked by llama.cpp once

    # -- loading -----------------------------------------------------------------------------------
    def _load(self, load: LoadControl | None) -> Any:
        from tuitune.engines import llama_log
        from tuitune.engines.offload import decide_offload, gpu_load_turn, load_failure_hint

        llama_log.install()
        import llama_cpp

        self._llama_cpp = llama_cpp
        load = load or LoadControl()
        with gpu_load_turn(llama_cpp, self._gpu_layers, lambda: load.cancelled, self.model_id):
            return self._load_now(llama_cpp, load, decide_offload, load_failure_hint)

    def _load_now(self, llama_cpp: Any, load: LoadControl, decide_offload: Any, load_failure_hint: Any) -> Any:
        from tuitune.engines import llama_log
        from tuitune.engines.llama_control import loading_with_progress

        n_gpu_layers, self.backend = decide_offload(self.model_id, self.info, self._n_ctx, self._gpu_layers, llama_cpp)
        threads = self.budget.threads()
        if load.cancelled:
            raise StoppedError(f"loading {self.model_id} was stopped")
        with llama_log.python_stderr_to_log(), loading_with_progress(load.report), compile_errors(self.model_id):
            try:
                llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=self._n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    logits_all=self._logits_all,
                    n_gpu_layers=n_gpu_layers,
                    verbose=True,  # False would redirect the process's fds; logs go to our file instead
                )
            except (ValueError, RuntimeError, OSError) as error:
                if load.cancelled:
                    raise StoppedError(f"loading {self.model_id} was stopped") from None
                raise ModelFileError(
                    f"llama.cpp could not load {self.path} ({error}); the file may be damaged or use an architecture "
                    f"this llama.cpp does not know{load_failure_hint(self.backend)} — details in {llama_log.log_path()}"
                ) from None
        llm.verbose = False  # no per-request prints to stderr from the Python side
        return llm

    # -- LoRA adapter (attached to the loaded base, mmap stays on) ---------------------------------
    def _check_adapter_file(self, path: Path) -> None:
        """Say what is wrong with an adapter file before llama.cpp answers a bare NULL."""
        what = f"LoRA adapter {path} for {self.model_id}"
        redo = "export it again (`tuitune export-adapter`) or retrain, or fix 'adapter' in models.toml"
        if not path.is_file():
            raise ModelFileError(f"{what} does not exist: {redo}")
        try:
            header = read_gguf(path)
        except ModelFileError as error:
            raise ModelFileError(f"{what} is unusable ({error}); {redo}") from None
        kind = header.metadata.get("general.type"), header.metadata.get("adapter.type")
        if kind != ("adapter", "lora"):
            raise ModelFileError(f"{what} is not a llama.cpp LoRA adapter GGUF (type {kind[0]!r}): {redo}")
        if header.architecture != self.info.architecture:
            raise ModelFileError(
                f"{what} was made for a {header.architecture} model but {self.path.name} is {self.info.architecture}: "
                "attach it to the base it was trained on"
            )

    def _attach_adapter(self, path: Path) -> None:
        from tuitune.engines import llama_log

        adapter = self._llama_cpp.llama_adapter_lora_init(self._llm.model, str(path).encode("utf-8"))
        if not adapter:
            raise ModelFileError(
                f"llama.cpp could not load the LoRA adapter {path} onto {self.path.name}: it is damaged or was "
                f"trained on another base (details in {llama_log.log_path()}); export it again or retrain"
            )
        self._adapter = adapter
        self._sync_adapter()

    def _sync_adapter(self) -> None:
        """Apply the requested scale if it changed, and drop the prompt cache computed with the old weights."""
        if self._adapter is None or self._applied_scale == self._adapter_scale:
            return
        llama_cpp, scale = self._llama_cpp, self._adapter_scale
        if scale > 0:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            result = llama_cpp.llama_set_adapters_lora(self._llm.ctx, adapters, 1, (ctypes.c_float * 1)(scale))
        else:  # detached, so scale 0 is exactly the base (and as fast)
            result = llama_cpp.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
        if result != 0:
            raise TuituneError(f"llama.cpp refused to set the LoRA adapter {self.adapter_path} (error {result})")
        self._applied_scale = scale
        self._llm.reset()  # otherwise the next prompt reuses KV computed with the previous weights

    @property
    def adapter_scale(self) -> float | None:
        """The LoRA strength (0 … 1), or None without an adapter."""
        return self._adapter_scale if self.adapter_path is not None else None

    def set_adapter_scale(self, scale: float) -> None:
        """Blend base (0) and finetuned (1) weights; takes effect on the next generation, no reload.

        Safe to call from another thread than the generating one: the scale is applied when a request starts.
        """
        if self.adapter_path is None:
            raise TuituneError(f"{self.model_id} has no LoRA adapter; an adapter scale applies to finetuned models")
        self._adapter_scale = check_adapter_scale(scale)

    # -- properties --------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    @property
    def chat_template_name(self) -> str:
        return GGUF_TEMPLATE if self._template is not None else self._fallback

    # -- prompts -----------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def render_chat(
        self, messages: Sequence[Message], should_stop: Callable[[], bool] | None = None
    ) -> tuple[str, tuple[str, ...], bool]:
        """The prompt text chat mode sends, its stop strings, and whether BOS must still be added.

        A GGUF template renders within its time and size budget (``tuitune.engines.templates``); its end is
        found by the vocabulary's end-of-generation tokens, so no stop string is added for it.
        """
        if self._template is not None:
            return self._template.render(messages, should_stop=should_stop).prompt, (), False
        prompt, stops = FALLBACK_FORMATS[self._fallback](messages)
        return prompt, stops, True

    def _prompt(self, request: Request, generation: Generation) -> tuple[list[int], tuple[str, ...]]:
        if request.mode == "raw":
            tokens = self.tokenize(request.prompt)
            if not tokens:  # llama.cpp would fail an assertion on an empty batch
                raise TuituneError("the prompt is empty: raw mode needs at least one token")
            return tokens, ()
        if request.mode != "chat":
            raise TuituneError(f"unknown mode '{request.mode}': use raw or chat")
        if not request.messages:
            raise TuituneError("a chat request needs at least one message")
        if self._template is None:
            generation.notices.append(
                f"{self.model_id} has no chat template in its GGUF; chat mode uses the '{self._fallback}' format"
            )
        text, stops, add_bos = self.render_chat(request.messages, should_stop=lambda: generation.cancelled)
        tokens = self.tokenize(text, add_bos=add_bos)
        if not tokens:
            raise TuituneError(f"the chat prompt for {self.model_id} is empty: its chat template rendered no tokens")
        return tokens, stops

    # -- generation --------------------------------------------------------------------------------
    def generate(self, request: Request) -> Generation:
        return Generation(lambda generation: self._produce(request, generation))

    def logits(self, tokens: Sequence[int]) -> Any:
        """Teacher-forced next-token logits at every position (n_tokens x n_vocab), to compare with another
        implementation by KL. Needs ``logits_all=True`` at construction."""
        import numpy as np

        if not self._logits_all:
            raise TuituneError(f"{self.model_id} was opened without logits_all=True; it keeps only the last logits")
        if not tokens:
            raise TuituneError("no tokens to score")
        if len(tokens) > self._n_ctx:
            raise ContextOverflowError(self.model_id, len(tokens), self._n_ctx)
        with self.budget.generating() as budget:
            self._set_threads(budget.threads())
            self._sync_adapter()
            self._llm.reset()
            self._llm.eval(list(tokens))
            return np.array(self._llm.scores[: len(tokens)], dtype=np.float32, copy=True)

    def _set_threads(self, threads: int) -> None:
        if threads != self._threads:
            self._llama_cpp.llama_set_n_threads(self._llm.ctx, threads, threads)
            self._threads = threads

    def _produce(self, request: Request, generation: Generation) -> Iterator[str]:
        started = time.perf_counter()
        sampling = request.sampling
        stats = generation.stats
        try:
            tokens, format_stops = self._prompt(request, generation)
        except RenderStopped:
            stats.finish_reason, stats.stopped_during = "cancelled", "reading"
            stats.total_s = time.perf_counter() - started
            return
        stats.prompt_tokens = len(tokens)
        if len(tokens) >= self._n_ctx:
            raise ContextOverflowError(self.model_id, len(tokens), self._n_ctx, self.info.context_length)
        room = self._n_ctx - len(tokens)
        max_tokens = min(sampling.max_tokens, room) if sampling.max_tokens > 0 else room
        stops = tuple(s for s in (*sampling.stop, *format_stops) if s)
        grammar = self._grammar(request.grammar)
        stats.seed = sampling.resolved_seed()
        self._llm.set_seed(stats.seed)
        llm, vocab, is_eog = self._llm, self._vocab, self._llama_cpp.llama_vocab_is_eog
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = ""
        count = sampled = 0  # tokens emitted / tokens sampled (the latter includes a final end token)
        first_at = last_at = None
        finish = "length"
        with self.budget.generating() as budget:
            self._set_threads(budget.threads())
            self._sync_adapter()
            if not self._read_prompt(tokens, generation):
                stats.finish_reason, stats.stopped_during = "cancelled", "reading"
                stats.total_s = time.perf_counter() - started
                return
            generation.report("generating")
            stream = llm.generate(
                tokens,
                top_k=sampling.top_k,
                top_p=sampling.top_p,
                min_p=sampling.min_p,
                temp=sampling.temperature,
                repeat_penalty=sampling.repeat_penalty,
                reset=True,
                grammar=grammar,  # llama.cpp masks every token the grammar does not allow at this point
            )
            try:
                for token in stream:
                    last_at = time.perf_counter()
                    sampled += 1
                    if first_at is None:
                        first_at = last_at
                    if generation.cancelled:
                        finish = "cancelled"
                        break
                    if is_eog(vocab, token):
                        finish = "stop"
                        break
                    count += 1
                    piece = decoder.decode(llm.detokenize([token]))
                    if piece:
                        emit, held, stopped = split_at_stop(held + piece, stops)
                        if emit:
                            yield emit
                        if stopped:
                            finish = "stop"
                            break
                    if count >= max_tokens:
                        break
                    self._set_threads(budget.threads())
                else:
                    finish = "stop"
                tail = held + decoder.decode(b"", final=True) if finish != "stop" else ""
                if tail and finish != "cancelled":
                    yield tail
            except GeneratorExit:
                finish = "cancelled"
                raise
            finally:
                stream.close()
                stats.completion_tokens = count
                stats.finish_reason = finish
                if finish == "cancelled":
                    stats.stopped_during = "generating"
                stats.total_s = time.perf_counter() - started
                if first_at is not None:
                    stats.ttft_s = first_at - started
                    if sampled > 1 and last_at > first_at:
                        stats.decode_tokens_per_s = (sampled - 1) / (last_at - first_at)

    def _grammar(self, grammar: Grammar | None) -> Any:
        """The LlamaGrammar for a request's grammar, parsed by llama.cpp once per distinct text.

        llama-cpp-python hands the GBNF text to llama.cpp only when sampling starts, and a NULL sampler from a
        bad grammar would crash there; so it is parsed here first and a bad one is a one-line error.
        """
        if grammar is None:
            return None
        compiled = self._grammars.get(grammar.gbnf)
        if compiled is None:
            from llama_cpp.llama_grammar import LlamaGrammar

            sampler = self._llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.gbnf.encode(), b"root")
            if not sampler:
                raise TuituneError(f"llama.cpp rejected the grammar '{grammar.name}' (details in the llama.cpp log)")
            self._llama_cpp.llama_sampler_free(sampler)
            compiled = self._grammars[grammar.gbnf] = LlamaGrammar.from_string(grammar.gbnf)
        return compiled

    def _read_prompt(self, tokens: list[int], generation: Generation) -> bool:
        """Evaluate the prompt batch by batch, reporting progress; False if the request was stopped meanwhile.

        The KV of the longest prefix already evaluated is kept (the next turn of a conversation reads only what
        is new). The batches are those ``Llama.generate`` would use, so answers are unchanged; ``generate`` then
        finds the whole prompt cached and samples at once.
        """
        llm, total = self._llm, len(tokens)
        cached = 0
        for have, want in zip(llm.input_ids[: llm.n_tokens], tokens[:-1], strict=False):
            if have != want:
                break
            cached += 1
        if cached and not llm._ctx.kv_cache_seq_rm(-1, cached, -1):  # a model whose cache cannot be cut
            cached = 0
        if not cached:
            llm.reset()
        llm.n_tokens = cached
        generation.report("reading", cached)
        generation.on_cancel(self._abort.trip)
        with self._abort.armed():
            for start in range(cached, total, llm.n_batch):
                if generation.cancelled:
                    break
                try:
                    llm.eval(tokens[start : start + llm.n_batch])
                except RuntimeError:
                    if not self._abort.tripped:
                        raise
                    break
                generation.report("reading", min(total, start + llm.n_batch))
        if generation.cancelled:
            llm.reset()  # a batch cut in the middle leaves the cache in an unknown state
            return False
        return True

    def forget_prompt_cache(self) -> None:
        """Evaluate the next prompt from scratch instead of reusing the KV of a prefix seen before.

        The reused prefix leaves a smaller batch to evaluate, whose kernels round differently and can flip a
        greedy near-tie; an evaluation wants each answer independent of the one before.
        """
        self._llm.reset()

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        adapter, self._adapter = getattr(self, "_adapter", None), None
        if llm is not None and adapter is not None:  # detach from the context, then free, before the model goes
            self._llama_cpp.llama_set_adapters_lora(llm.ctx, None, 0, None)
            self._llama_cpp.llama_adapter_lora_free(adapter)
        if llm is not None:
            llm.close()
