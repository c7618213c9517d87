"""Chat formats for models whose GGUF carries no chat template.

llama-cpp-python silently falls back to the llama-2 format in that case; tuitune instead uses the format
the catalog names for the model (e.g. ``gemma`` for the Gemma base model) and tells the user which one.
Each renderer returns the prompt text (without BOS: the tokenizer adds it) and its stop strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tuitune.engines.base import Message

ChatRenderer = Callable[[Sequence[Message]], tuple[str, tuple[str, ...]]]
DEFAULT_FALLBACK = "llama-2"


def _split_system(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    return system, [m for m in messages if m.role != "system"]


def render_gemma(messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
    system, turns = _split_system(messages)
    parts: list[str] = []
    for index, message in enumerate(turns):
        role = "model" if message.role == "assistant" else "user"
        content = f"{system}\n\n{message.content}" if system and index == 0 and role == "user" else message.content
        parts.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts), ("<end_of_turn>",)


def render_chatml(messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
    parts = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    parts.append("<|im_start|>assistant\n")
    return "".join(parts), ("<|im_end|>",)


def render_llama2(messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
    system, turns = _split_system(messages)
    parts: list[str] = []
    pending_system = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if system else ""
    for message in turns:
        if message.role == "assistant":
            parts.append(f" {message.content} </s>")
        else:
            parts.append(f"[INST] {pending_system}{message.content} [/INST]")
            pending_system = ""
    return "".join(parts), ("</s>", "[INST]")


FALLBACK_FORMATS: dict[str, ChatRenderer] = {
    "gemma": render_gemma,
    "chatml": render_chatml,
    "llama-2": render_llama2,
}
