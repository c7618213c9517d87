"""The leaderboard over the Eval screen: one Bradley–Terry ranking of Compare votes and judge verdicts.

The fit (and its bootstrap) runs in a thread worker, so the screen stays responsive on a large history; a
newer request (another source) cancels the older one. Model names come from the history and from eval files,
so every cell is inert Rich ``Text``, never markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Select, Static
from textual.worker import get_current_worker

from tuitune.errors import TuituneError
from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.evals.leaderboard import Leaderboard
    from tuitune.history import HistoryStore

SOURCES = [("votes and judge", "both"), ("Compare votes", "votes"), ("judge verdicts", "judge")]
SOURCE_NAMES = {"votes": "Compare votes", "judge": "judge verdicts"}
EMPTY = "No outcomes yet: vote in Compare (F6…F9 after both panes answer) or run an eval with a pairwise judge."


def _cell(text: str, justify: str = "right") -> Text:
    return Text(inert(text), no_wrap=True, overflow="ellipsis", justify=justify)  # type: ignore[arg-type]


def describe(board: Leaderboard) -> Text:
    """The line under the title: how many outcomes from where, how the intervals were made, and any notes."""
    used = ", ".join(f"{count} {SOURCE_NAMES.get(name, name)}" for name, count in board.counts.items() if count)
    ci = f"95 % CI: {board.bootstrap} bootstrap rounds, seed {board.seed}" if board.bootstrap else "no CI"
    text = Text(f"{sum(board.counts.values())} outcomes" + (f" ({used})" if used else "") + f" · {ci}")
    for note in board.notes:
        text.append("\n" + inert(note), style="yellow")
    return text


class LeaderboardScreen(ModalScreen[None]):
    """Rank, model, rating, 95 % interval, games and W/L/T; the source picker recomputes in a worker."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss(None)", "Close", id="leaderboard.close"),
        Binding("r", "refresh", "Refresh", id="leaderboard.refresh"),
    ]
    DEFAULT_CSS = """
    #leaderboard { max-width: 110; }
    #leaderboard-top { height: auto; }
    #leaderboard-source { width: 28; }
    #leaderboard-title { padding: 1 2 0 0; }
    #leaderboard-table { height: auto; max-height: 20; }
    #leaderboard-status { height: auto; margin-bottom: 1; }
    """

    def __init__(self, history: HistoryStore | None, source: str = "both", bootstrap: int = 1000, seed: int = 0):
        super().__init__(classes="dialog-screen")
        self.history = history
        self.source = source
        self.bootstrap = bootstrap
        self.seed = seed
        self.board: Leaderboard | None = None
        self.computing = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="leaderboard"):
            with Horizontal(id="leaderboard-top"):
                yield Label("[b]Leaderboard[/b] [dim]Bradley–Terry, Elo scale · Esc closes[/]", id="leaderboard-title")
                yield Select(SOURCES, value=self.source, allow_blank=False, id="leaderboard-source")
            yield Static("computing…", id="leaderboard-status")
            yield DataTable(id="leaderboard-table", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#leaderboard-table", DataTable).display = False
        self.action_refresh()

    @on(Select.Changed, "#leaderboard-source")
    def _source_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.source:
            self.source = event.value
            self.action_refresh()

    def action_refresh(self) -> None:
        self.computing = True
        self.query_one("#leaderboard-status", Static).update("computing…")
        self.compute(self.source)

    @work(thread=True, exclusive=True, group="leaderboard")
    def compute(self, source: str) -> None:
        """Read the outcomes and fit, off the UI thread; only the newest request gets to show its board."""
        from tuitune.evals.leaderboard import from_stores

        try:
            board = from_stores(source, self.history, self.bootstrap, self.seed)
        except TuituneError as error:
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self._failed, str(error))
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, source, board)

    def _failed(self, message: str) -> None:
        self.computing = False
        self.query_one("#leaderboard-status", Static).update(Text(inert(message), style="red"))

    def _show(self, source: str, board: Leaderboard) -> None:
        if source != self.source:  # the picker moved on while this one was computed
            return
        self.board, self.computing = board, False
        if board.ratings:
            status = describe(board)
        else:
            status = Text(EMPTY)
            for note in board.notes:
                status.append("\n" + inert(note), style="yellow")
        self.query_one("#leaderboard-status", Static).update(status)
        table = self.query_one("#leaderboard-table", DataTable)
        table.clear(columns=True)
        table.display = bool(board.ratings)
        grouped = board.groups > 1
        columns = (["group"] if grouped else []) + ["rank", "model", "rating", "95% CI", "games", "W/L/T"]
        for name in columns:
            table.add_column(Text(name, justify="left" if name == "model" else "right"), key=name)
        for r in board.ratings:
            ci = "-" if r.ci_low is None or r.ci_high is None else f"{r.ci_low:.0f}–{r.ci_high:.0f}"
            cells = [_cell(str(r.rank)), _cell(r.model, "left"), _cell(f"{r.rating:.0f}"), _cell(ci),
                     _cell(str(r.games)), _cell(f"{r.wins}/{r.losses}/{r.ties}")]  # fmt: skip
            table.add_row(*([_cell(str(r.group + 1))] if grouped else []), *cells, key=f"{r.group}:{r.model}")
