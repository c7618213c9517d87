"""Models: the catalog as a table, with each installed model's GGUF header read in the background.

Hub models download from here too (``d``, see ``models_downloads``). Under the catalog, the models other tools
left on disk (HF cache, Ollama, LM Studio) that the catalog does not run yet are listed ("Found on disk",
``tuitune.tui.widgets.found_models``, scanned in a thread worker); ``a`` adds the highlighted one.

Reading a header needs the model's file, and the chunked Gemma demo is assembled on its first use
(seconds), so installed state and headers come from a thread worker and fill in as they arrive: the screen
paints at once with "…" and never waits on the disk. Untrusted text (GGUF metadata, catalog strings) is
shown through ``rich.text.Text``, never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual import events, on, work
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
from tuitune.tui.screens.models_details import (
    NONE,
    PENDING,
    HeaderState,
    entry_details,
    has_gguf,
    human_size,
    source_text,
)
from tuitune.tui.screens.models_downloads import DownloadsMixin
from tuitune.tui.widgets.found_models import FoundModels, found_details

if TYPE_CHECKING:
    from tuitune.found_models import AddedModel
    from tuitune.tui.app import TuituneApp

COLUMNS = ("id", "kind", "size", "quant", "context", "template", "installed", "family", "pair")  # narrow first
RIGHT = {"size", "context"}


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


class ModelsScreen(DownloadsMixin, Screen):
    """Every catalog model, its GGUF facts, and one key to chat with it or compare it with its pair."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # priority: the table's own Enter (and any click) would otherwise "select" the row instead
        Binding("enter,c", "open_chat", "Chat", id="models.chat", priority=True),
        Binding("p", "open_pair", "Compare pair", id="models.pair"),
        Binding("d", "download", "Download", id="models.download"),
        Binding("x", "cancel_download", "Cancel download", id="models.cancel_download"),
        Binding("delete", "delete_file", "Delete file", id="models.delete"),
        Binding("a", "add_found", "Add found", id="models.add_found"),
        Binding("r", "refresh", "Refresh", id="models.refresh"),
    ]

    show_directories = True  # False keeps machine-specific directories out of the details (snapshot tests)

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[str, ModelEntry] = {}
        self.installed: dict[str, bool] = {}  # cached for the session; `r` clears it
        self.headers: dict[str, HeaderState] = {}
        self.generation = 0  # results from a worker older than the last refresh are dropped
        self.downloads = {}  # model id → its cancel event, while downloading
        self.download_progress = {}
        self.details_for = "catalog"  # which table the details panel follows: the one focused last

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        yield FoundModels(id="found-table")
        with VerticalScroll(id="models-details"):
            yield Static(id="models-details-text")
        with Horizontal(id="models-download"):
            yield ProgressBar(id="models-download-bar", show_eta=False)
            yield Static(id="models-download-text")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#models-download").display = False
        table = self.query_one("#models-table", DataTable)
        for key in COLUMNS:
            table.add_column(key, key=key)
        self.action_refresh()
        table.focus()

    # -- loading -----------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        """Forget what was read (installs change under a running app) and read everything again."""
        if self.generation:  # not the first read: the catalog itself may have grown (a training run, a pull)
            self.tuitune.reload_catalog()
        self.load_catalog()
        self.query_one(FoundModels).scan(self.tuitune.catalog)

    def load_catalog(self, select: str | None = None) -> None:
        """Rows for the app's catalog as it is now, then installed state and headers from a worker."""
        self.generation += 1
        self.installed.clear()
        self.headers.clear()
        self.entries = {entry.id: entry for entry in self.tuitune.catalog}
        table = self.query_one("#models-table", DataTable)
        current = select or self.highlighted_id()
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
        table = self.query_one("#models-table", DataTable)
        for key, cell in zip(COLUMNS, self.cells(entry), strict=True):
            table.update_cell(model_id, key, cell, update_width=True)
        if model_id == self.highlighted_id() and self.details_for == "catalog":
            self.show_details()

    def highlighted_id(self) -> str | None:
        table = self.query_one("#models-table", DataTable)
        if not table.row_count:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return row_key.value

    def highlighted_entry(self) -> ModelEntry | None:
        model_id = self.highlighted_id()
        return self.entries.get(model_id) if model_id else None

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if event.widget.id in ("models-table", "found-table"):
            self.details_for = "found" if event.widget.id == "found-table" else "catalog"
            self.show_details()

    @on(DataTable.RowHighlighted)
    def show_details(self) -> None:
        """The highlighted row of the table focused last: a catalog model, or one found on disk."""
        details = self.query_one("#models-details-text", Static)
        found = self.query_one(FoundModels).highlighted_model() if self.details_for == "found" else None
        if found is not None:
            details.update(found_details(found, self.show_directories))
            self.show_download(None)
            return
        entry = self.highlighted_entry()
        details.update(self.details(entry) if entry else Text("The catalog is empty: add models to models.toml."))
        self.show_download(entry.id if entry else None)

    def details(self, entry: ModelEntry) -> RenderableType:
        """Everything known about ``entry``: a label/value grid of plain Text, so nothing is read as markup."""
        return entry_details(entry, self.header_state(entry), self.installed.get(entry.id), self.show_directories)

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
        if self.details_for == "found":  # a found model must join the catalog before it can chat
            self.action_add_found()
            return
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
        except Exception as error:  # as in probe: a corrupt or odd file must not take the whole app down
            header = f"{entry.id}: cannot read the GGUF header ({type(error).__name__}: {error})"
        self.post_message(HeaderRead(generation, entry.id, header))

    # -- found on disk -------------------------------------------------------------------------------
    def action_add_found(self) -> None:
        """Ask how to add the highlighted found model (kind, id, pair); the dialog writes the catalog entry."""
        from tuitune.tui.screens.dialogs import AddFoundModel

        found = self.query_one(FoundModels)
        model = found.highlighted_model()
        if model is None:
            waiting = "still looking for models on disk…" if found.scanning else "no model found on disk to add"
            self.notify(f"{waiting} (r scans again)", severity="warning")
            return
        if model.problem is not None:
            self.notify(f"{model.reference} cannot be added: {model.problem}", severity="warning", markup=False)
            return
        self.app.push_screen(AddFoundModel(model, self.tuitune.catalog), self.added_found)

    def added_found(self, added: AddedModel | None) -> None:
        """After the dialog: the new model joins the catalog table (highlighted) and leaves the found one."""
        if added is None:
            return
        self.tuitune.reload_catalog()
        self.load_catalog(select=added.id)
        self.query_one(FoundModels).show(self.tuitune.catalog)
        self.query_one("#models-table", DataTable).focus()
        self.notify(f"added '{added.id}' ({added.fields['kind']}) to {added.catalog_file}", markup=False)

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Commands this screen adds to the command palette: (title, help, callback)."""
        model = self.highlighted_id() or "the highlighted model"
        return [
            (f"Chat with {model}", "Open the highlighted model in Chat", self.action_open_chat),
            (f"Compare {model} with its pair", "Base first, then its chat sibling", self.action_open_pair),
            (f"Download {model}", "Fetch it from the Hugging Face Hub (resumes)", self.action_download),
            (f"Cancel the download of {model}", "Stop it; the bytes are kept", self.action_cancel_download),
            (f"Delete the file of {model}", "Remove a downloaded model's file", self.action_delete_file),
            ("Add a model found on disk", "Add the highlighted found model to your catalog", self.action_add_found),
            (
                "Refresh models",
                "Re-read installed state and GGUF headers; scan for models on disk",
                self.action_refresh,
            ),
        ]


def is_base_of(candidate: ModelEntry, other: ModelEntry) -> bool:
    """Whether ``candidate`` goes first in a comparison with ``other``: a base model, or a finetune's base."""
    return candidate.kind == "base" or (other.kind == "finetuned" and other.base == candidate.id)
