"""Examples → token ids, formatted exactly as inference will format them.

Training text goes through the same renderer and the same tokenizer as generation: the GGUF's chat template
(or the catalog's ``chat_format`` for a model without one) and llama.cpp's own tokenizer, loaded vocab-only
in a fraction of a second. The model therefore learns on exactly the token ids it will see when the
finetuned adapter runs in llama.cpp; an HF tokenizer rebuilt from the GGUF could split text differently.

Each assistant reply with a non-zero weight becomes one sequence: the conversation before it (rendered
with the generation prompt, loss masked) followed by the reply and the end-of-turn marker (trained).
Legacy prompt/completion examples are raw text: the prompt (masked), then the completion and EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuitune.engines.base import Message
from tuitune.engines.chat_formats import DEFAULT_FALLBACK, FALLBACK_FORMATS
from tuitune.engines.templates import compile_errors, model_chat_template
from tuitune.errors import TuituneError

IGNORE = -100  # label of a position that carries no loss


@dataclass(frozen=True)
class Sequence:
    """One training sequence: token ids and, per position, whether its token is trained."""

    input_ids: list[int]
    prompt_tokens: int  # the first ``prompt_tokens`` ids are context only
    line: int

    @property
    def reply_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_tokens


class Formatter:
    """Renders and tokenizes like ``LlamaCppEngine`` does, from a vocab-only load of the same GGUF."""

    def __init__(self, gguf_path: Path, chat_format: str | None = None, chat_template: str | None = None):
        from tuitune.engines import llama_log

        llama_log.install()
        import llama_cpp

        with llama_log.python_stderr_to_log(), compile_errors(gguf_path.stem):
            self._llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=True, n_ctx=64)
        self._llm.verbose = False
        self._fallback = chat_format or DEFAULT_FALLBACK
        try:
            self._template = model_chat_template(self._llm, gguf_path.stem, chat_template)
        except BaseException:
            self.close()
            raise
        if self._template is None and self._fallback not in FALLBACK_FORMATS:
            raise TuituneError(f"unknown chat_format '{self._fallback}'; use one of {', '.join(FALLBACK_FORMATS)}")

    def close(self) -> None:
        self._llm.close()

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _end_of_turn(self) -> list[int]:
        """What ends a reply at inference: EOS with a GGUF template, else the fallback format's stop marker."""
        if self._template is not None:
            return [self._llm.token_eos()]
        _, stops = FALLBACK_FORMATS[self._fallback]([Message("user", "")])
        return self.tokenize(stops[0], add_bos=False)

    def render_prompt(self, messages: list[Message]) -> tuple[str, bool]:
        """The prompt text before the assistant's reply, and whether the tokenizer must add BOS."""
        if self._template is not None:
            return self._template.render(messages).prompt, False
        text, _ = FALLBACK_FORMATS[self._fallback](messages)
        return text, True

    def sequences(self, example: Any) -> list[Sequence]:
        """One sequence per trained reply of ``example`` (a ``tuitune.training.data.Example``)."""
        if example.messages is None:  # prompt/completion: raw continuation
            prompt = self.tokenize(example.prompt, add_bos=True)
            reply = [*self.tokenize(example.completion, add_bos=False), self._llm.token_eos()]
            return [Sequence(prompt + reply, len(prompt), example.line)]
        result = []
        weights = example.weights or [1] * len(example.messages)
        for index, message in enumerate(example.messages):
            if message.role != "assistant" or not weights[index]:
                continue
            text, add_bos = self.render_prompt(example.messages[:index])
            prompt = self.tokenize(text, add_bos=add_bos)
            reply = self.tokenize(message.content, add_bos=False) + self._end_of_turn()
            result.append(Sequence(prompt + reply, len(prompt), example.line))
        return result

    def count_tokens(self, example: Any) -> list[tuple[int, int]]:
        """(prompt tokens, reply tokens) per trained reply: the data checker's token counts."""
        return [(seq.prompt_tokens, seq.reply_tokens) for seq in self.sequences(example)]


def fit_to_length(sequence: Sequence, max_length: int) -> Sequence | None:
    """Cut a too-long sequence: the oldest context first, then the end of the reply; None if nothing is left
    to train (the data checker reports how many tokens each cut removes)."""
    excess = len(sequence.input_ids) - max_length
    if excess <= 0:
        return sequence
    if excess < sequence.prompt_tokens:
        return Sequence(sequence.input_ids[excess:], sequence.prompt_tokens - excess, sequence.line)
    if sequence.prompt_tokens >= max_length:
        return None
    return Sequence(sequence.input_ids[:max_length], sequence.prompt_tokens, sequence.line)
