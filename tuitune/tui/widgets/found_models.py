"""The Models screen's "Found on disk" table: GGUF models in the HF cache, Ollama and LM Studio, not yet in the catalog.

Scanning the stores reads every model's GGUF header, seconds on a big store, so it runs in a thread worker and
the rows fill in when it ends; a rescan's generation number drops what an older scan reports. Every cell comes
from another tool's store (file names, Ollama names, GGUF metadata): it is made inert and shown as ``Text``,
never parsed as markup, so ``[red]`` in a file name stays literal and an escape sequence shows as ``␛``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import DataTable

from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.catalog import Catalog
    from tuitune.discovery import FoundModel

SOURCE_NAMES = {"hf-cache": "HF cache", "ollama": "Ollama", "lmstudio": "LM Studio"}
FOUND_COLUMNS = ("source", "model", "size", "quant", "template", "problem")
PROBLEM_WIDTH = 48  # the table shows the start of a problem; the details panel shows all of it


def short_name(model: FoundModel) -> str:
    """The reference without its store prefix and HF commit: what a person would call the model."""
    name = model.reference.split(":", 1)[1] if ":" in model.reference else model.reference
    if model.source == "hf-cache" and "@" in name:
        name = name.rsplit("@", 1)[0]
    return name


def found_cells(model: FoundModel) -> list[Text]:
    """One table row; every piece of store text inert and literal."""
    from tuitune.tui.screens.models_details import human_size

    problem = model.problem or "-"
    if problem.startswith(str(model.path)):  # the row already says which file: keep the table narrow
        problem = problem[len(str(model.path)) :].lstrip(": ")
    problem = inert(problem).replace("\n", "\u240a")
    if len(problem) > PROBLEM_WIDTH:
        problem = problem[: PROBLEM_WIDTH - 1] + "…"
    return [
        Text(SOURCE_NAMES.get(model.source, inert(model.source))),
        Text(inert(short_name(model)).replace("\n", "\u240a")),
        Text(human_size(model.size), justify="right"),
        Text(inert(model.quantization or "-")),
        Text("yes" if model.has_chat_template else "no", style="" if model.has_chat_template else "dim"),
        Text(problem, style="red" if model.problem else "dim"),
    ]


def found_details(model: FoundModel, show_directories: bool = True) -> RenderableType:
    """Everything discovery knows about ``model``, as a label/value grid of plain Text."""
    from tuitune.found_models import default_id
    from tuitune.tui.screens.models_details import human_size

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()

    def line(label: str, value: object, style: str = "") -> None:
        grid.add_row(label, Text(inert(str(value)), style=style))

    line("found in", SOURCE_NAMES.get(model.source, model.source))
    line("reference", model.reference)
    line("file", model.path.name)
    if show_directories:
        line("", model.path.parent, "dim")
    line("architecture", model.architecture or "-")
    line("quantization", model.quantization or "-")
    line("chat template", "yes" if model.has_chat_template else "no")
    size = f"{human_size(model.size)} ({model.size:,} bytes)" if model.size is not None else "-"
    line("file size", size + (f" in {model.shards} files" if model.shards > 1 else ""))
    line("", "")
    if model.problem:
        line("problem", model.problem, "red")
        line("", "it cannot be added until the file is fixed or downloaded again", "dim")
    else:
        line("add", f"press a to add it to your catalog (as '{default_id(model.reference)}'); nothing is copied")
    return Group(Text(inert(short_name(model)), style="bold"), grid)


class FoundModels(DataTable):
    """Found models the catalog does not already run (``tuitune.found_models.unlisted``), one row per file."""

    DEFAULT_CSS = """
    FoundModels {
        height: auto;
        max-height: 30%;
        border-top: solid $panel;
        border-title-align: left;
        border-title-color: $text-muted;
    }
    """

    class Scanned(Message):
        """From the scan worker: what discovery found (or why the scan failed), for one generation."""

        def __init__(self, generation: int, found: list[FoundModel], error: str | None = None):
            super().__init__()
            self.generation, self.found, self.error = generation, found, error

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, show_header=False, **kwargs)
        self.found: list[FoundModel] | None = None  # everything the last scan found; None until one ends
        self.shown: dict[str, FoundModel] = {}  # reference → model, for the rows shown
        self.error: str | None = None
        self.generation = 0
        self.catalog: Catalog | None = None

    def on_mount(self) -> None:
        for key in FOUND_COLUMNS:
            self.add_column(key, key=key)
        self.update_title()

    @property
    def scanning(self) -> bool:
        return self.generation > 0 and self.found is None

    def scan(self, catalog: Catalog) -> None:
        """Scan the stores again; the rows shown stay until the new results replace them."""
        self.catalog = catalog
        self.generation += 1
        self.found = None
        self.update_title()
        self.discover(self.generation)

    @work(thread=True, exclusive=True, group="found-scan", exit_on_error=False)
    def discover(self, generation: int) -> None:
        from tuitune import discovery

        try:
            found = discovery.discover()
        except Exception as error:  # someone else's store, in any state: report it, never crash
            self.post_message(self.Scanned(generation, [], f"{type(error).__name__}: {error}"))
            return
        self.post_message(self.Scanned(generation, found))

    def on_found_models_scanned(self, message: Scanned) -> None:
        message.stop()
        if message.generation != self.generation:
            return  # an older scan, overtaken by a rescan
        self.found, self.error = message.found, message.error
        self.show(self.catalog)

    def show(self, catalog: Catalog | None) -> None:
        """Fill the table with the found models ``catalog`` does not already run (again after an addition)."""
        from tuitune.found_models import unlisted

        self.catalog = catalog
        found = self.found or []
        models = unlisted(found, catalog) if catalog is not None else found
        current = self.highlighted_reference()
        self.shown = {}
        self.clear()
        for model in models:
            if model.reference not in self.shown:  # one row per reference, whatever a store holds
                self.shown[model.reference] = model
                self.add_row(*found_cells(model), key=model.reference)
        self.show_header = bool(self.shown)
        if current in self.shown:
            self.move_cursor(row=self.get_row_index(current))
        self.update_title()

    def update_title(self) -> None:
        if self.scanning:
            title = "Found on disk: scanning the HF cache, Ollama and LM Studio…"
        elif self.error:
            title = f"Found on disk: the scan failed ({inert(self.error)[:80]})"
        elif self.shown:
            hidden = len(self.found or []) - len(self.shown)
            more = f"; {hidden} already in the catalog" if hidden else ""
            title = f"Found on disk: {len(self.shown)} not in the catalog{more} · a adds the highlighted one"
        else:
            title = "Found on disk: nothing new in the HF cache, Ollama or LM Studio"
        self.border_title = Text(title)

    def highlighted_reference(self) -> str | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return row_key.value

    def highlighted_model(self) -> FoundModel | None:
        reference = self.highlighted_reference()
        return self.shown.get(reference) if reference is not None else None
