"""`tuitune leaderboard`: one Bradley–Terry ranking of Compare votes and judge verdicts (see evals.leaderboard)."""

from __future__ import annotations

import argparse
import sys

from tuitune.safe_text import inert

SOURCE_CHOICES = ("both", "votes", "judge")
MAX_BOOTSTRAP = 100_000
EMPTY = "no outcomes yet: vote in Compare (F6…F9 after both panes answer) or run an eval with a pairwise judge"


def bootstrap_rounds(text: str) -> int:
    """--bootstrap N: 0 (no intervals) up to MAX_BOOTSTRAP rounds."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_BOOTSTRAP:
        raise argparse.ArgumentTypeError(f"give a whole number of rounds from 0 (no intervals) to {MAX_BOOTSTRAP}")
    return value


def load_board(source: str, bootstrap: int, seed: int):
    """Read the outcomes from the default history and eval store, then fit. Creates no file that is not there."""
    from tuitune.evals.leaderboard import from_stores
    from tuitune.history import HistoryStore, default_history_path

    history = HistoryStore() if source != "judge" and default_history_path().exists() else None
    try:
        return from_stores(source, history, bootstrap, seed)
    finally:
        if history is not None:
            history.close()


def interval(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{low:.0f}–{high:.0f}"


def table_rows(board) -> list[tuple[str, ...]]:
    """The board as text cells; a group column only when the models fall into several groups."""
    rows = []
    for r in board.ratings:
        cells = (str(r.rank), inert(r.model), f"{r.rating:.0f}", interval(r.ci_low, r.ci_high), str(r.games),
                 f"{r.wins}/{r.losses}/{r.ties}")  # fmt: skip
        rows.append((str(r.group + 1), *cells) if board.groups > 1 else cells)
    return rows


def summary(board) -> str:
    """Where the outcomes came from and how the intervals were made, in one line."""
    used = ", ".join(f"{count} {'Compare votes' if name == 'votes' else 'judge verdicts'}"
                     for name, count in board.counts.items() if count)  # fmt: skip
    ci = f"95 % CI from {board.bootstrap} bootstrap rounds, seed {board.seed}" if board.bootstrap else "no CI"
    return f"{sum(board.counts.values())} outcomes ({used}); Bradley–Terry on the Elo scale, {ci}"


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from tuitune.safe_text import safe_json

    board = load_board(args.source, args.bootstrap, args.seed)
    if args.json:
        print(safe_json(board.as_json(), indent=2))
        return 0
    for note in board.notes:
        print(f"tuitune: {inert(note)}", file=sys.stderr)
    if not board.ratings:
        print(EMPTY)
        return 0
    header = ("RANK", "MODEL", "RATING", "95% CI", "GAMES", "W/L/T")
    if board.groups > 1:
        header = ("GROUP", *header)
    table = [header, *table_rows(board)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    right = {"RANK", "RATING", "95% CI", "GAMES", "W/L/T", "GROUP"}
    for row in table:
        cells = (c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(row, widths, header, strict=True))
        print("  ".join(cells).rstrip())
    print(f"\n{summary(board)}")
    return 0
