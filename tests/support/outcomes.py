"""Pairwise outcomes written where the leaderboard reads them: Compare votes in a history file, judge verdicts in an eval store."""

from __future__ import annotations

from pathlib import Path

from tuitune.evals.results import PairVerdict
from tuitune.evals.store import EvalStore
from tuitune.history import HistoryStore, Pane

HOSTILE = "evil\x1b]52;c;cm0gLXJmIH4=\x07\x1b[31m"


def compare(store: HistoryStore, models: list[str], verdicts: list[str]) -> int:
    """A comparison with one answered turn per verdict, voted as Compare does."""
    panes = [Pane(i, model, "chat") for i, model in enumerate(models)]
    conversation = store.create_conversation("compare", "q", panes)
    for turn, verdict in enumerate(verdicts):
        for pane in panes:
            store.add_message(conversation, pane.index, turn, "user", "q")
            store.add_message(conversation, pane.index, turn, "assistant", f"answer {turn}")
        store.record_vote(conversation, turn, verdict)
    return conversation


def verdict(winner: str, failed: bool = False) -> dict:
    """One pairwise verdict as the eval results JSON holds it."""
    return PairVerdict("p1", "base", "tuned", winner, winner != "tie", ("why",), failed).as_json()


def eval_results(pairwise: list) -> dict:
    return {"suite": "tiny", "prompts": [], "columns": [{"label": "base"}, {"label": "tuned"}], "cells": [],
            "summary": [], "pairwise": pairwise}  # fmt: skip


def fill_evals(path: Path) -> None:
    with EvalStore(path) as store:
        store.save(eval_results([verdict("b"), verdict("tie")]), None, None)
        malformed = {**verdict("a"), "winner": "maybe"}
        store.save(eval_results([verdict("b"), verdict("tie", failed=True), malformed, "junk"]), None, None)
        store.save({"suite": "old", "prompts": [], "columns": [], "cells": [], "summary": []}, None, None)


def fill_history(path: Path) -> None:
    with HistoryStore(path) as store:
        compare(store, ["base", "chat"], ["b", "b", "a", "tie"])
        compare(store, ["chat", "tuned"], ["b", "bad"])
        compare(store, ["base", "tuned", "chat"], ["b"])  # three panes: the vote is A against B
        chat = store.create_conversation("chat", "solo", [Pane(0, "base", "raw")])
        store.add_message(chat, 0, 0, "user", "hi")
