"""A pane's state and how it reads: a short label in the header, one line of detail under the answers."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from tuitune.tui.text import styled


@dataclass(frozen=True)
class PaneStatus:
    """What the pane is doing now. ``state``: empty | loading | ready | reading | generating | stopping | error."""

    state: str = "empty"
    model: str = ""
    size: int | None = None  # bytes of the model being loaded, when the catalog knows
    fraction: float = 0.0  # of the load
    done: int = 0  # prompt tokens read
    total: int = 0  # prompt tokens
    tokens: int = 0  # generated so far
    rate: float | None = None
    detail: str = ""


def header_state(status: PaneStatus) -> tuple[str, str]:
    """The header's state label and its style: always the true state, short enough for a 28-column pane."""
    state = status.state
    if state == "loading":
        return (f"loading {status.fraction:.0%}" if status.fraction else "loading…"), "bold yellow"
    if state == "reading":
        return (f"reading {_percent(status)}" if status.total else "reading…"), "bold yellow"
    if state == "generating":
        return "generating", "bold green"
    if state == "stopping":
        return "stopping…", "bold magenta"
    if state == "error":
        return "error", "bold red"
    if state == "ready":
        return "ready", "dim"
    return "not loaded", "dim"


def _percent(status: PaneStatus) -> str:
    return f"{status.done / status.total:.0%}" if status.total else ""


def status_line(status: PaneStatus) -> Text:
    """The line under a pane's answers: the state with its numbers, or the reason of an error."""
    state = status.state
    if state == "loading":
        size = f" ({status.size / 1e6:,.0f} MB)" if status.size else ""
        progress = f" {status.fraction:.0%}" if status.fraction else ""
        return styled(f"loading {status.model}{size}…{progress} · Esc stops")
    if state == "reading":
        if not status.total:
            return styled("reading the prompt… · Esc stops")
        read = f"{status.done:,} of {status.total:,} tokens ({_percent(status)})"
        return styled(f"reading the prompt: {read} · Esc stops")
    if state == "generating":
        if not status.tokens:
            return styled(("generating · waiting for the first token…", "dim"))
        rate = f" · {status.rate:.1f} tok/s" if status.rate else ""
        return styled(("generating · ", "dim"), f"{status.tokens} tokens{rate}")
    if state == "stopping":
        return styled(("stopping…", "bold"))
    if state == "error":
        return styled((status.detail or "error", "bold red"))
    if state == "ready":
        return styled(("ready" + (f" · {status.detail}" if status.detail else ""), "dim"))
    return styled((status.detail or "not loaded yet", "dim"))
