"""History: every saved chat and comparison, to search, reopen, rename, delete, export and tally votes.

Titles, prompts and answers come from the store, so they are untrusted (model output, pasted text): every
string is made inert (no terminal control characters) and shown as Rich ``Text``, never parsed as markup
(escaping is not enough: Textual reads ``[$accent]`` or ``[B]`` as styles even after ``rich.markup.escape``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from tuitune.atomic import write_text
from tuitune.errors import TuituneError
from tuitune.history_export import export_json, export_markdown
from tuitune.paths import app_dirs, private_app_dir
from tuitune.safe_text import inert, safe_json
from tuitune.tui.screens.dialogs import Confirm, TextPrompt
from tuitune.tui.text import Part, styled

if TYPE_CHECKING:
    from tuitune.history import Conversation, ConversationSummary, HistoryStore

SEARCH_DELAY_S = 0.15  # debounce: one query per pause in typing, not one per key
PREVIEW_CHARS = 300
FIXED_COLUMNS = (("updated", 16), ("kind", 7))
COUNT_WIDTH = 4
LETTERS = "ABCD"
VERDICTS = {"a": "A better", "b": "B better", "tie": "tie", "bad": "both bad"}


def clip(text: str, limit: int = PREVIEW_CHARS) -> str:
    """One line of at most ``limit`` characters: enough to recognise an answer in a preview."""
    line = " ".join(inert(text).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def slug(title: str) -> str:
    """A file-name-safe form of the title, so exports are recognisable in a file manager."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].rstrip("-") or "conversation"


def cell(text: str, justify: str = "left") -> Text:
    """A table cell that is never parsed as markup and ends in an ellipsis when the column is too narrow."""
    return Text(inert(text), no_wrap=True, overflow="ellipsis", justify=justify)  # type: ignore[arg-type]


class HistoryTable(DataTable):
    """The conversation list. The history keys live here so letters typed in the search box never trigger them."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "screen.open", "Open", id="history.open"),
        Binding("r", "screen.rename", "Rename", id="history.rename"),
        Binding("d", "screen.delete", "Delete", id="history.delete"),
        Binding("m", "screen.export('md')", "Export .md", id="history.export_md"),
        Binding("j", "screen.export('json')", "Export .json", id="history.export_json"),
        Binding("v", "screen.votes", "Votes", id="history.votes"),
    ]


class VoteTally(ModalScreen[None]):
    """Wins, losses, ties and both-bad per model, over every comparison the user voted on."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,v,q", "dismiss(None)", "Close")]

    def __init__(self, tally: dict[str, dict[str, int]]):
        super().__init__(classes="dialog-screen")
        self.tally = tally

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="vote-tally"):
            yield Label("[b]Votes per model[/b] [dim]over all comparisons · Esc closes[/]")
            if self.tally:
                yield DataTable(cursor_type="row", id="vote-table")
            else:
                yield Label("No votes yet: when both panes of a comparison have answered, vote with alt+1…alt+4.")

    def on_mount(self) -> None:
        if not self.tally:
            return
        table = self.query_one("#vote-table", DataTable)
        table.add_column("model")
        for label in ("wins", "losses", "ties", "both bad"):
            table.add_column(label, width=len(label))
        ranked = sorted(self.tally.items(), key=lambda item: (-item[1]["wins"], item[1]["losses"], item[0]))
        for model, counts in ranked:
            numbers = (counts["wins"], counts["losses"], counts["ties"], counts["bad"])
            table.add_row(cell(model), *(cell(str(n), "right") for n in numbers))


class HistoryScreen(Screen):
    """Saved conversations, newest first, with a preview of the highlighted one."""

    SUB_TITLE = "History"
    AUTO_FOCUS = "#history-table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", id="history.search"),
        Binding("escape", "focus_table", "List", show=False, id="history.list"),
    ]
    timezone: ClassVar[tzinfo | None] = None  # None: the local zone. Tests pin it to keep snapshots stable.

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[ConversationSummary] = []
        self._search_timer: Timer | None = None
        self._width = 0

    @property
    def store(self) -> HistoryStore | None:
        return getattr(self.app, "history", None)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Search titles, models and text  ( / )", id="history-search")
        yield HistoryTable(id="history-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="history-preview-box"):
            yield Static(id="history-preview")
        yield Static(id="history-off")
        yield Footer()

    # -- the list ----------------------------------------------------------------------------------
    def on_screen_resume(self) -> None:
        """Reload each time the screen is shown: Compare and Chat save while this screen is hidden."""
        self.reload()

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self._render_rows()

    def reload(self) -> None:
        store = self.store
        for widget in self.query("#history-search, #history-table, #history-preview-box"):
            widget.display = store is not None
        off = self.query_one("#history-off", Static)
        off.display = store is None
        if store is None:
            off.update(
                "[b]History is off.[/b] The history database could not be opened (see the message at startup),\n"
                "so chats and comparisons are not being saved. Fix or move the file aside and restart tuitune."
            )
            return
        try:
            self.rows = store.list_conversations(search=self.query_one("#history-search", Input).value)
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self._render_rows()

    def _render_rows(self) -> None:
        """Fill the table at the current width: title and models share what the fixed columns leave."""
        table = self.query_one(HistoryTable)
        keep, near = self.selected_id(), table.cursor_row  # stay on the same conversation, or near where it was
        fixed = sum(width for _, width in FIXED_COLUMNS) + COUNT_WIDTH
        flexible = max(24, (self._width or self.size.width) - fixed - 2 * 5 - 2)  # cell padding, scrollbar
        title_need = max((len(row.title) for row in self.rows), default=5)
        models_need = max((len(", ".join(row.models)) for row in self.rows), default=0)
        models_need = max(models_need, len("models"))
        models_width = min(models_need, max(flexible * 2 // 5, flexible - title_need))  # spare room goes to titles
        title_width = flexible - models_width
        table.clear(columns=True)
        for label, width in (*FIXED_COLUMNS, ("title", title_width), ("models", models_width)):
            table.add_column(label, width=width, key=label)
        table.add_column(Text("msgs", justify="right"), width=COUNT_WIDTH, key="messages")
        for row in self.rows:
            table.add_row(
                cell(self.when(row.updated_at)),
                cell(row.kind),
                cell(row.title or "Untitled"),
                cell(", ".join(row.models)),
                cell(str(row.message_count), "right"),
                key=str(row.id),
            )
        ids = [row.id for row in self.rows]
        if ids:
            table.move_cursor(row=ids.index(keep) if keep in ids else min(near, len(ids) - 1))
        self.show_preview()

    def when(self, iso: str) -> str:
        """A stored UTC timestamp as short local time."""
        try:
            return datetime.fromisoformat(iso).astimezone(self.timezone).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return iso[:16]

    def selected_id(self) -> int | None:
        table = self.query_one(HistoryTable)
        if not table.row_count or not table.is_valid_row_index(table.cursor_row):
            return None
        return int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or 0)

    def selected(self) -> ConversationSummary | None:
        """The highlighted conversation, or None with a hint (actions call this first)."""
        chosen = self.selected_id()
        row = next((row for row in self.rows if row.id == chosen), None)
        if row is None or self.store is None:
            self.notify("no conversation selected", severity="warning")
            return None
        return row

    # -- the preview -------------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#history-table")
    def show_preview(self) -> None:
        preview = self.query_one("#history-preview", Static)
        chosen = self.selected_id()
        if chosen is None or self.store is None:
            search = self.query_one("#history-search", Input).value.strip()
            hint = f"Nothing matches “{search}”." if search else "No saved conversations yet: chat or compare."
            preview.update(styled((hint, "dim")))
            return
        try:
            preview.update(self.preview_text(self.store.load(chosen)))
        except TuituneError as error:
            preview.update(styled((str(error), "bold red")))

    def preview_text(self, conversation: Conversation) -> Text:
        """Title, kind, date, panes, votes, then the first turn's prompt and each pane's answer, clipped."""
        c = conversation
        turns = sorted({m.turn for m in c.messages})
        votes = ", ".join(f"turn {v.turn + 1}: {VERDICTS.get(v.verdict, v.verdict)}" for v in c.votes) or "none"
        when = f"{c.kind} · {self.when(c.created_at)} · {len(turns)} turn(s) · votes: {votes}"
        parts: list[Part] = [(c.title or "Untitled", "bold"), "\n", (when, "dim"), "\n"]
        for pane in c.panes:
            parts += [(LETTERS[pane.index], "bold"), f" {pane.model} · {pane.mode}   "]
        first = [m for m in c.messages if turns and m.turn == turns[0]]
        prompt = next((m.content for m in first if m.role == "user"), "")
        parts += ["\n\n", ("prompt ", "bold"), clip(prompt)]
        models = {p.index: p.model for p in c.panes}
        for m in (m for m in first if m.role == "assistant"):
            who = f"{LETTERS[m.pane_index]} {m.model or models.get(m.pane_index, '?')} "
            parts += ["\n", (who, "bold"), clip(m.content) if m.content else (f"({m.status}, no text)", "dim")]
        return styled(*parts)

    # -- keys --------------------------------------------------------------------------------------
    @on(Input.Changed, "#history-search")
    def _search_changed(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY_S, self.reload)

    @on(Input.Submitted, "#history-search")
    def _search_submitted(self) -> None:
        self.action_focus_table()

    def action_focus_search(self) -> None:
        self.query_one("#history-search", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one(HistoryTable).focus()

    async def action_open(self) -> None:
        row = self.selected()
        if row is not None:
            try:
                await self.app.open_conversation(row.id)  # type: ignore[attr-defined]
            except TuituneError as error:
                self.notify(str(error), severity="error", markup=False)

    def action_rename(self) -> None:
        row, store = self.selected(), self.store
        if row is None or store is None:
            return

        def renamed(title: str | None) -> None:
            if title and title != row.title:
                self._change(lambda: store.rename(row.id, title))

        self.app.push_screen(TextPrompt("Rename conversation", row.title), renamed)

    def action_delete(self) -> None:
        row, store = self.selected(), self.store
        if row is None or store is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._change(lambda: store.delete(row.id))

        question = f"Delete “{clip(row.title, 40)}” for good ({row.message_count} messages)?"
        self.app.push_screen(Confirm(question), answered)

    def _change(self, change: Callable[[], None]) -> None:
        try:
            change()
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
        self.reload()

    def action_export(self, fmt: str) -> None:
        """Write the highlighted conversation to the exports folder as Markdown ('md') or JSON ('json')."""
        row, store = self.selected(), self.store
        if row is None or store is None:
            return
        folder = app_dirs().data / "exports"
        path = folder / f"{row.id}-{slug(row.title)}.{fmt}"
        try:
            conversation = store.load(row.id)
            text = export_markdown(conversation) if fmt == "md" else safe_json(export_json(conversation), indent=2)
            private_app_dir(folder)  # conversations are as private as the history they come from
            write_text(path, text if text.endswith("\n") else text + "\n", perms=0o600)
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
        except OSError as error:
            self.notify(f"cannot write {path}: {error.strerror or error}", severity="error", markup=False)
        else:
            self.notify(f"exported to {path}", markup=False)

    def action_votes(self) -> None:
        if self.store is None:
            self.notify("history is off: no votes are saved", severity="warning")
            return
        try:
            tally = self.store.vote_tally()
        except TuituneError as error:
            self.notify(str(error), severity="error", markup=False)
            return
        self.app.push_screen(VoteTally(tally))

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """Commands this screen adds to the command palette: (title, help, callback)."""
        return [
            ("Reopen conversation", "Continue the highlighted conversation in Chat or Compare", self.action_open),
            ("Rename conversation", "Give the highlighted conversation a new title", self.action_rename),
            ("Delete conversation", "Delete the highlighted conversation for good", self.action_delete),
            ("Export as Markdown", "A readable transcript to the exports folder", lambda: self.action_export("md")),
            ("Export as JSON", "Everything saved, to the exports folder", lambda: self.action_export("json")),
            ("Vote tally", "Wins, losses, ties and both-bad per model", self.action_votes),
        ]
