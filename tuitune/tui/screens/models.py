"""Models: the catalog as a table, with each installed model's GGUF header read in the background.

Hub models download from here too (``d``): each download runs in its own thread worker with a cancel event,
reports progress through messages (the table's "installed" cell and a progress bar under the details), and
keeps its bytes when cancelled or interrupted, so the next ``d`` (or ``tuitune pull``) resumes it.

Reading a header needs the model's file, and the chunked Gemma demo is assembled on its first use
(seconds), so installed state and headers come from a thread worker and fill in as they arrive: the screen
paints at once with "…" and never waits on the disk. Untrusted text (GGUF metadata, catalog strings) is
shown through ``rich.text.Text``, never parsed as markup.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static

from tuitune.catalog import ModelEntry
from tuitune.errors import TuituneError
from tuitune.gguf import GGUFInfo, read_gguf
from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.tui.app import TuituneApp

PENDING = "…"
NONE = "-"
COLUMNS = ("id", "kind", "size", "quant", "context", "template", "installed", "family", "pair")  # narrow first
RIGHT = {"size", "context"}
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


def source_text(entry: ModelEntry) -> str:
    if entry.source is not None:
        return entry.source.describe()
    if entry.kind == "finetuned":
        return f"base {entry.base} + adapter {entry.adapter}"
    config = entry.endpoint
    text = f"endpoint {config.get('base_url', '?')} · model {config.get('model', '?')}"
    if config.get("api_key_env"):  # the variable's name and whether it is set; never its value
        state = "set" if os.environ.get(config["api_key_env"]) else "not set"
        text += f" · key from ${config['api_key_env']} ({state})"
    return text


class Installed(Message):
    """From the probe worker: whether a model's file (or package) is present."""

    def __init__(self, generation: int, model_id: str, installed: bool):
        super().__init__()
        self.generation, self.model_id, self.installed = generation, model_id, installed


class HeaderRead(Message):
    """From the probe worker: a model's GGUF header, or why it could not be read."""

    def __init__(self, generation: int, model_id: str, header: HeaderState):
        super().__init__()
        self.generation, self.model_id, self.header = generation, model_id, header


class DownloadUpdate(Message):
    """From a download worker: progress (``progress`` set) or the end (``result``: "done" or a message)."""

    def __init__(self, model_id: str, progress: Any = None, result: str | None = None, failed: bool = False):
        super().__init__()
        self.model_id, self.progress, self.result, self.failed = model_id, progress, result, failed


def is_downloadable(entry: ModelEntry) -> bool:
    return entry.source is not None and entry.source.kind == "hf"


def progress_text(progress: Any) -> str:
    from tuitune.downloads import human_bytes

    if progress is None:
        return "starting…"
    if progress.phase == "checking":
        return f"checking {human_bytes(progress.done)} kept from an earlier download…"
    if progress.phase == "verifying":
        return "verifying sha256…"
    eta = progress.eta_s
    eta_text = f" · ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else ""
    return f"{human_bytes(progress.done)} of {human_bytes(progress.total)} · {human_bytes(progress.speed)}/s{eta_text}"


class ModelsScreen(Screen):
    """Every catalog model, its GGUF facts, and one key to chat with it or compare it with its pair."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: the table's own Enter (and any click) would otherwise "select" the row instead
        Binding("enter,c", "open_chat", "Chat", id="models.chat", priority=True),
        Binding("p", "open_pair", "Compare pair", id="models.pair"),
        Binding("d", "download", "Download", id="models.download"),
        Binding("x", "cancel_download", "Cancel download", id="models.cancel_download"),
        Binding("delete", "delete_file", "Delete file", id="models.delete"),
        Binding("r", "refresh", "Refresh", id="models.refresh"),
    ]

    show_directories = True  # False keeps machine-specific directories out of the details (snapshot tests)

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, ModelEntry] = {}
        self.installed: dict[str, bool] = {}  # cached for the session; `r` clears it
        self.headers: dict[str, HeaderState] = {}
        self.generation = 0  # results from a worker older than the last refresh are dropped
        self.downloads: dict[str, threading.Event] = {}  # model id → its cancel event, while downloading
        self.download_progress: dict[str, Any] = {}

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="models-details"):
            yield Static(id="models-details-text")
        with Horizontal(id="models-download"):
            yield ProgressBar(id="models-download-bar", show_eta=False)
            yield Static(id="models-download-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#models-download").display = False
        table = self.query_one(DataTable)
        for key in COLUMNS:
            table.add_column(key, key=key)
        self.action_refresh()
        table.focus()

    # -- loading -----------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        """Forget what was read (installs change under a running app) and read everything again."""
        if self.generation:  # not the first read: the catalog itself may have grown (a training run, a pull)
            self.tuitune.reload_catalog()
        self.generation += 1
        self.installed.clear()
        self.headers.clear()
        self.entries = {entry.id: entry for entry in self.tuitune.catalog}
        table = self.query_one(DataTable)
        current = self.highlighted_id()
        table.clear()
        for entry in self.entries.values():
            table.add_row(*self.cells(entry), key=entry.id)
        if current in self.entries:
            table.move_cursor(row=table.get_row_index(current))
        self.show_details()
        self.probe(list(self.entries.values()), self.generation)

    @work(thread=True, exclusive=True, group="models-probe")
    def probe(self, entries: list[ModelEntry], generation: int) -> None:
        """Installed state for all first (cheap), then headers, files that need no assembling first."""
        from textual.worker import get_current_worker

        from tuitune.sources import is_installed, model_path

        worker = get_current_worker()
        installed = {}
        for entry in entries:
            installed[entry.id] = is_installed(entry)
            self.post_message(Installed(generation, entry.id, installed[entry.id]))
        for entry in sorted(entries, key=lambda e: bool(e.source and e.source.assemble)):
            if worker.is_cancelled:
                return
            if not (has_gguf(entry) and installed[entry.id]):
                continue
            try:
                header: HeaderState = read_gguf(model_path(entry))
            except TuituneError as error:
                header = str(error)
            except Exception as error:  # a corrupt or odd file must not take the whole app down
                header = f"{entry.id}: cannot read the GGUF header ({type(error).__name__}: {error})"
            self.post_message(HeaderRead(generation, entry.id, header))

    def on_installed(self, message: Installed) -> None:
        if message.generation == self.generation:
            self.installed[message.model_id] = message.installed
            self.update_row(message.model_id)

    def on_header_read(self, message: HeaderRead) -> None:
        if message.generation == self.generation:
            self.headers[message.model_id] = message.header
            self.update_row(message.model_id)

    # -- rendering ---------------------------------------------------------------------------------
    def header_state(self, entry: ModelEntry) -> HeaderState | None:
        """The header, an error message, PENDING, or None when there is no local file to read."""
        if not has_gguf(entry):
            return None
        installed = self.installed.get(entry.id)
        if installed is None:
            return PENDING
        return self.headers.get(entry.id, PENDING) if installed else None

    def cells(self, entry: ModelEntry) -> list[Text]:
        header = self.header_state(entry)
        info = header if isinstance(header, GGUFInfo) else None
        if info is not None:
            context = str(info.context_length) if info.context_length else "?"
            template = "yes" if info.chat_template else "no"
        else:
            context = template = NONE if header is None else ("error" if header != PENDING else PENDING)
        installed = self.installed.get(entry.id)
        installed_text = PENDING if installed is None else ("yes" if installed else "no")
        if entry.id in self.downloads:
            fraction = getattr(self.download_progress.get(entry.id), "fraction", None)
            installed_text = f"{fraction * 100:.0f}%" if fraction is not None else "↓"
        values = {
            "id": entry.id,
            "kind": entry.kind,
            "family": entry.family,
            "pair": entry.pair or NONE,
            "size": human_size(info.file_size if info else entry.size),
            "quant": (info.quantization if info else None) or entry.quant or NONE,
            "context": context,
            "template": template,
            "installed": installed_text,
        }
        style = {"error": "red", "no": "dim"}
        return [
            Text(inert(values[key]), style=style.get(values[key], ""), justify="right" if key in RIGHT else "left")
            for key in COLUMNS
        ]

    def update_row(self, model_id: str) -> None:
        entry = self.entries.get(model_id)
        if entry is None:
            return
        table = self.query_one(DataTable)
        for key, cell in zip(COLUMNS, self.cells(entry), strict=True):
            table.update_cell(model_id, key, cell, update_width=True)
        if model_id == self.highlighted_id():
            self.show_details()

    def highlighted_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def highlighted_entry(self) -> ModelEntry | None:
        model_id = self.highlighted_id()
        return self.entries.get(model_id) if model_id else None

    @on(DataTable.RowHighlighted)
    def show_details(self) -> None:
        entry = self.highlighted_entry()
        details = self.query_one("#models-details-text", Static)
        details.update(self.details(entry) if entry else Text("The catalog is empty: add models to models.toml."))
        self.show_download(entry.id if entry else None)

    def show_download(self, model_id: str | None) -> None:
        """The progress bar under the details follows the highlighted model's download, if it has one."""
        box = self.query_one("#models-download")
        box.display = model_id in self.downloads
        if not box.display:
            return
        progress = self.download_progress.get(model_id)
        bar = self.query_one("#models-download-bar", ProgressBar)
        bar.update(total=getattr(progress, "total", None), progress=getattr(progress, "done", 0))
        label = Text(progress_text(progress) + "  ")
        label.append("x cancels; the bytes are kept", style="dim")
        self.query_one("#models-download-text", Static).update(label)

    def details(self, entry: ModelEntry) -> RenderableType:
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
            if self.show_directories:
                line("", entry.origin.parent, "dim")
        line("", "")
        header = self.header_state(entry)
        if header is None:
            installed = self.installed.get(entry.id)
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
            self.header_details(line, entry, header)
        return Group(Text(inert(entry.name), style="bold"), grid)

    def header_details(self, line: Callable[..., None], entry: ModelEntry, info: GGUFInfo) -> None:
        line("file", info.path.name)
        if self.show_directories:
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

    # -- actions -----------------------------------------------------------------------------------
    def warn_if_missing(self, entries: list[ModelEntry]) -> None:
        """Opening a missing model still works (the pane explains the load error); say why up front."""
        from tuitune.sources import is_installed

        for entry in entries:
            installed = self.installed.get(entry.id)
            if not (installed if installed is not None else is_installed(entry)):
                self.notify(
                    f"{entry.id} is not installed (source: {source_text(entry)})",
                    severity="warning",
                    markup=False,
                )

    async def action_open_chat(self) -> None:
        entry = self.highlighted_entry()
        if entry is None:
            self.notify("no model highlighted", severity="warning")
            return
        self.warn_if_missing([entry])
        await self.tuitune.open_chat(entry.id)

    async def action_open_pair(self) -> None:
        entry = self.highlighted_entry()
        if entry is None:
            self.notify("no model highlighted", severity="warning")
            return
        other = self.entries.get(entry.pair or "")
        if other is None:
            self.notify(
                f'{entry.id} has no pair in the catalog (set pair = "…" in models.toml)',
                severity="warning",
                markup=False,
            )
            return
        pair = [entry, other]
        if is_base_of(other, entry) and not is_base_of(entry, other):
            pair.reverse()
        self.warn_if_missing(pair)
        await self.tuitune.open_compare([item.id for item in pair])

    # -- downloads -----------------------------------------------------------------------------------
    def action_download(self) -> None:
        entry = self.highlighted_entry()
        if entry is None:
            return
        if not is_downloadable(entry):
            self.notify(f"{entry.id} does not come from the Hub ({source_text(entry)})", severity="warning",
                        markup=False)  # fmt: skip
            return
        if entry.id in self.downloads:
            self.notify(f"{entry.id} is already downloading", markup=False)
            return
        if self.installed.get(entry.id):
            self.notify(f"{entry.id} is already downloaded", markup=False)
            return
        cancel = threading.Event()
        self.downloads[entry.id] = cancel
        self.download_progress.pop(entry.id, None)
        self.update_row(entry.id)
        self.download(entry, cancel)

    @work(thread=True, exit_on_error=False)
    def download(self, entry: ModelEntry, cancel: threading.Event) -> None:
        from tuitune.downloads import DownloadCancelled, pull_model

        def progress(update: Any) -> None:
            self.post_message(DownloadUpdate(entry.id, progress=update))

        try:
            path = pull_model(entry, progress=progress, cancel=cancel)
        except DownloadCancelled as stopped:
            self.post_message(DownloadUpdate(entry.id, result=str(stopped)))
        except TuituneError as error:
            self.post_message(DownloadUpdate(entry.id, result=str(error), failed=True))
        except Exception as error:  # never let a download take the app down
            self.post_message(DownloadUpdate(entry.id, result=f"download failed: {error!r}", failed=True))
        else:
            self.post_message(DownloadUpdate(entry.id, result=f"{entry.id} downloaded and verified: {path.name}"))

    def on_download_update(self, message: DownloadUpdate) -> None:
        if message.result is None:
            self.download_progress[message.model_id] = message.progress
        else:
            self.downloads.pop(message.model_id, None)
            self.download_progress.pop(message.model_id, None)
            self.notify(message.result, severity="error" if message.failed else "information", markup=False,
                        timeout=10 if message.failed else 5)  # fmt: skip
            self.recheck(message.model_id)
        self.update_row(message.model_id)
        if message.model_id == self.highlighted_id():
            self.show_download(message.model_id)

    def recheck(self, model_id: str) -> None:
        """Installed state and header of one model again, after its file came or went."""
        from tuitune.sources import is_installed

        entry = self.entries.get(model_id)
        if entry is None:
            return
        self.headers.pop(model_id, None)
        self.installed[model_id] = is_installed(entry)
        if self.installed[model_id]:
            self.read_header(entry, self.generation)

    @work(thread=True)
    def read_header(self, entry: ModelEntry, generation: int) -> None:
        from tuitune.sources import model_path

        try:
            header: HeaderState = read_gguf(model_path(entry))
        except TuituneError as error:
            header = str(error)
        self.post_message(HeaderRead(generation, entry.id, header))

    def action_cancel_download(self) -> None:
        model_id = self.highlighted_id()
        if model_id not in self.downloads:
            running = ", ".join(self.downloads) or "none"
            self.notify(f"{model_id} is not downloading (downloads running: {running})", markup=False)
            return
        self.downloads[model_id].set()

    def action_delete_file(self) -> None:
        from tuitune.tui.screens.dialogs import Confirm

        entry = self.highlighted_entry()
        if entry is None:
            return
        if not is_downloadable(entry):
            self.notify(f"tuitune deletes only files it downloaded; {entry.id} comes from {source_text(entry)}",
                        severity="warning", markup=False)  # fmt: skip
            return
        if entry.id in self.downloads:
            self.notify("cancel the download first (x)", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            from tuitune.downloads import human_bytes, remove_model

            removed = remove_model(entry)
            freed = human_bytes(sum(size for _, size in removed))
            self.notify(f"deleted {entry.id}'s files ({freed}); the catalog entry stays" if removed
                        else f"nothing downloaded for {entry.id}", markup=False)  # fmt: skip
            self.recheck(entry.id)
            self.update_row(entry.id)

        self.app.push_screen(Confirm(f"Delete the downloaded file of {entry.id}? (press d to get it back)"), answered)

    def on_unmount(self) -> None:
        for cancel in self.downloads.values():  # threads stop after their current block; bytes are kept
            cancel.set()

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Commands this screen adds to the command palette: (title, help, callback)."""
        model = self.highlighted_id() or "the highlighted model"
        return [
            (f"Chat with {model}", "Open the highlighted model in Chat", self.action_open_chat),
            (f"Compare {model} with its pair", "Base first, then its chat sibling", self.action_open_pair),
            (f"Download {model}", "Fetch it from the Hugging Face Hub (resumes)", self.action_download),
            (f"Cancel the download of {model}", "Stop it; the bytes are kept", self.action_cancel_download),
            (f"Delete the file of {model}", "Remove a downloaded model's file", self.action_delete_file),
            ("Refresh models", "Re-read installed state and GGUF headers", self.action_refresh),
        ]


def is_base_of(candidate: ModelEntry, other: ModelEntry) -> bool:
    """Whether ``candidate`` goes first in a comparison with ``other``: a base model, or a finetune's base."""
    return candidate.kind == "base" or (other.kind == "finetuned" and other.base == candidate.id)
