"""Conversations as files people keep: JSON (the data) and Markdown (to read), each answer with what it ran with.

Kept apart from the store (history.py) so the SQLite code and the wording of exports change independently.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from tuitune.history import SCHEMA_VERSION, Conversation, Message, Pane
from tuitune.safe_text import inert


def export_json(conversation: Conversation) -> dict[str, Any]:
    """The whole conversation as plain data, each message with its ``model``, ``mode``, ``adapter_scale`` and
    ``run``. The text is the model's, unfiltered: print it with ``safe_json``.
    """
    return {"format": "tuitune-conversation", "schema": SCHEMA_VERSION, **asdict(conversation)}


_STAT_FORMATS = (
    ("prompt_tokens", "{} prompt tokens"),
    ("completion_tokens", "{} generated"),
    ("ttft_s", "first token {:.2f} s"),
    ("decode_tokens_per_s", "{:.1f} tok/s"),
    ("finish_reason", "{}"),
)
# How a sampling key reads in a transcript, in this order; keys not listed follow in their stored order.
_RUN_LABELS = {
    "temperature": "temperature",
    "top_p": "top-p",
    "top_k": "top-k",
    "min_p": "min-p",
    "repeat_penalty": "repeat penalty",
    "max_tokens": "max tokens",
    "seed": "seed",
    "stop": "stop",
    "n_ctx": "context",
    "system": "system",
}
# engines.base.STOPPED_DURING: where a cancelled answer was stopped
_STOPPED_DURING = {"loading": "loading the model", "reading": "reading the prompt", "generating": "generating"}
_RANDOM_SEED = -1  # tuitune.engines.base.RANDOM_SEED, not imported: the history must not load the engines
_SYSTEM_LIMIT = 40


def _run_value(key: str, value: Any) -> str:
    """One sampling value, short: 0.0 as 0, strings and stop lists quoted so that whitespace stays visible."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if key == "seed" and value == _RANDOM_SEED:
        return "random"  # the resolved seed was never saved (the answer did not finish)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if key == "system" and isinstance(value, str):
        value = " ".join(value.split())
        value = value if len(value) <= _SYSTEM_LIMIT else value[: _SYSTEM_LIMIT - 1].rstrip() + "…"
    return json.dumps(value, ensure_ascii=False, default=str)


def _is_set(value: Any) -> bool:
    """False for the values that say nothing: no stop string, no system prompt."""
    return value is not None and value != "" and value != [] and value != {}


def _run_notes(run: dict[str, Any]) -> list[str]:
    """``run`` as 'temperature 0', 'max tokens 60'…, the usual keys first in a fixed order, empty values left out."""
    keys = [key for key in _RUN_LABELS if key in run] + [key for key in run if key not in _RUN_LABELS]
    return [
        f"{_RUN_LABELS.get(key, key.replace('_', ' '))} {_run_value(key, run[key])}"
        for key in keys
        if _is_set(run[key])
    ]


def _run_line(message: Message, conversation: Conversation, who: list[str]) -> str:
    """Who wrote an answer and with what; an answer saved before that was recorded says so instead of guessing."""
    parts = list(who)
    if message.adapter_scale is not None:
        parts.append(f"adapter {message.adapter_scale:g}")
    if message.run:
        parts += _run_notes(message.run)
    elif notes := _run_notes(conversation.params):
        parts.append("settings not saved with this answer; the conversation started with " + ", ".join(notes))
    return " · ".join(parts)


def _message_markdown(message: Message, heading: str | None, run_line: str = "") -> list[str]:
    lines = [heading or f"**{message.role}**", "", message.content]
    notes = [fmt.format(message.stats[key]) for key, fmt in _STAT_FORMATS if message.stats.get(key) is not None]
    stopped_during = _STOPPED_DURING.get(message.stats.get("stopped_during") or "")
    stopped = f"stopped while {stopped_during}" if stopped_during else "stopped"
    notes += {"streaming": ["still generating"], "cancelled": [stopped]}.get(message.status, [])
    if message.status == "error":
        notes.append(f"error: {message.error or 'unknown'}")
    if message.role == "assistant":
        lines += [line for note in (" · ".join(notes), run_line) if note for line in ("", f"*{note}*")]
    return [*lines, ""]


def _who(message: Message, panes: dict[int, Pane]) -> list[str]:
    """The model and mode stored with the message; the pane's today only for a message that has none."""
    pane = panes.get(message.pane_index)
    model = message.model or (pane.model if pane else f"pane {message.pane_index + 1}")
    mode = message.mode or (pane.mode if pane else "")
    return [model, mode] if mode else [model]


def _compare_markdown(conversation: Conversation) -> list[str]:
    lines: list[str] = []
    panes = {pane.index: pane for pane in conversation.panes}
    for turn in sorted({m.turn for m in conversation.messages}):
        in_turn = [m for m in conversation.messages if m.turn == turn]
        lines += [f"## Turn {turn + 1}", ""]
        prompts = dict.fromkeys((m.role, m.content) for m in in_turn if m.role != "assistant")
        for role, content in prompts:
            lines += [f"**{role}**", "", content, ""]
        for m in (m for m in in_turn if m.role == "assistant"):
            heading = "### " + " · ".join(_who(m, panes))
            lines += _message_markdown(m, heading, _run_line(m, conversation, []))
    return lines


def export_markdown(conversation: Conversation) -> str:
    """A readable transcript: model text as written, but with every terminal control character made inert.

    Each answer carries its own model, mode, adapter strength and sampling. The conversation's parameters are
    only the ones it started with, so the header shows them (as such) only while some answer lacks its own.
    """
    c = conversation
    header = [c.kind, c.created_at[:16].replace("T", " ") + " UTC"]
    answers = [m for m in c.messages if m.role == "assistant"]
    started = [f"{key}={value}" for key, value in c.params.items() if _is_set(value)]
    if started and (not answers or not all(m.run for m in answers)):
        header.append("started with " + ", ".join(started))
    lines = [f"# {c.title or 'Untitled'}", "", " · ".join(header), ""]
    if c.kind == "compare":
        lines += _compare_markdown(c)
    else:
        panes = {pane.index: pane for pane in c.panes}
        for message in c.messages:
            lines += _message_markdown(message, None, _run_line(message, c, _who(message, panes)))
    if c.votes:
        names = {"a": "A ({}) better", "b": "B ({}) better", "tie": "tie", "bad": "both bad"}
        lines += ["## Votes", ""]
        for vote in c.votes:
            winner = vote.model_a if vote.verdict == "a" else vote.model_b
            lines.append(f"- turn {vote.turn + 1}: " + names[vote.verdict].format(winner or "?"))
    return inert("\n".join(lines).rstrip() + "\n")
