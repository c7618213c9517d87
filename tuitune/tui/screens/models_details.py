"""What the Models screen says about a catalog model: sizes, sources, and the details panel's label/value grid.

Every value is made inert and shown as ``rich.text.Text``, never parsed as markup: catalog strings and GGUF
metadata are anyone's text.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tuitune.catalog import ModelEntry
from tuitune.gguf import GGUFInfo
from tuitune.safe_text import inert

PENDING = "…"
NONE = "-"
TEMPLATE_PREVIEW = 300

HeaderState = GGUFInfo | str  # a header, or the error message that replaced it


def human_size(size: int | None) -> str:
    """Decimal units, as download pages and `ls -h --si` show them: 253113024 → "253 MB"."""
    if size is None:
        return NONE
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def has_gguf(entry: ModelEntry) -> bool:
    """Endpoints and LoRA finetunes have no single local GGUF to read here."""
    return entry.kind not in ("endpoint", "finetuned") and entry.source is not None


def is_downloadable(entry: ModelEntry) -> bool:
    return entry.source is not None and entry.source.kind == "hf"


def source_text(entry: ModelEntry) -> str:
    if entry.source is not None:
        return entry.source.describe()
    if entry.has_adapter:
        return f"base {entry.base} + adapter {entry.adapter}"
    config = entry.endpoint
    text = f"endpoint {config.get('base_url', '?')} · model {config.get('model', '?')}"
    if config.get("api_key_env"):  # the variable's name and whether it is set; never its value
        state = "set" if os.environ.get(config["api_key_env"]) else "not set"
        text += f" · key from ${config['api_key_env']} ({state})"
    return text


def entry_details(
    entry: ModelEntry, header: HeaderState | None, installed: bool | None, show_directories: bool
) -> RenderableType:
    """Everything known about ``entry``: a label/value grid of plain Text, so nothing is read as markup."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()

    def line(label: str, value: object, style: str = "") -> None:
        grid.add_row(label, Text(inert(str(value)), style=style))

    line("id", entry.id)
    line("kind", f"{entry.kind} · family {entry.family} · mode {entry.mode}")
    line("pair", entry.pair or NONE)
    line("source", source_text(entry))
    line("license", entry.license or NONE)
    if entry.description:
        line("description", entry.description)
    if entry.origin is not None:
        line("catalog", f"{entry.origin.name}, line {entry.line}" if entry.line else entry.origin.name)
        if show_directories:
            line("", entry.origin.parent, "dim")
    line("", "")
    if header is None:
        reason = "not installed" if has_gguf(entry) and installed is False else f"no local GGUF ({entry.kind})"
        if is_downloadable(entry) and installed is False:
            size = f" ({human_size(entry.size)})" if entry.size else ""
            reason = f"not downloaded: press d to download{size} from the Hub"
        line("GGUF", reason)
    elif header == PENDING:
        line("GGUF", "reading the header… (the Gemma demo is assembled on first use)", "dim")
    elif isinstance(header, str):
        line("GGUF", "error", "bold red")
        line("", header, "red")
    else:
        _header_details(line, entry, header, show_directories)
    return Group(Text(inert(entry.name), style="bold"), grid)


def _header_details(line: Callable[..., None], entry: ModelEntry, info: GGUFInfo, show_directories: bool) -> None:
    line("file", info.path.name)
    if show_directories:
        line("", info.path.parent, "dim")
    line("architecture", info.architecture)
    line("general.name", info.name or NONE)
    line("quantization", info.quantization or NONE)
    line("context length", f"{info.context_length:,}" if info.context_length else "?")
    line("vocab size", f"{info.vocab_size:,}" if info.vocab_size else "?")
    line("tensors", f"{info.tensor_count:,}")
    line("file size", f"{human_size(info.file_size)} ({info.file_size:,} bytes)")
    template = info.chat_template
    if not template:
        fallback = f"; chat mode uses the catalog's chat_format '{entry.chat_format}'" if entry.chat_format else ""
        line("chat template", f"no{fallback}")
        return
    line("chat template", f"yes ({len(template):,} characters)")
    preview = template[:TEMPLATE_PREVIEW] + ("…" if len(template) > TEMPLATE_PREVIEW else "")
    line("", preview, "dim")
