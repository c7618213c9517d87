"""The leaderboard: the Bradley–Terry fit on simulated outcomes, votes from a real history file, judge verdicts
from a real eval store, and `tuitune leaderboard` end to end in a subprocess."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from tests.conftest import one_clear_error, run_cli
from tests.support.outcomes import HOSTILE, compare, fill_evals, fill_history
from tuitune.evals.leaderboard import ANCHOR, Outcome, build, collect, judge_outcomes, vote_outcomes
from tuitune.evals.store import EvalStore, default_eval_store_path
from tuitune.history import HistoryStore, default_history_path


def simulate(strengths: dict[str, float], games: int, seed: int, tie_band: float = 0.05) -> list[Outcome]:
    """Bradley–Terry outcomes: a beats b with probability σ(s_a − s_b); a band around it becomes a tie."""
    rng = random.Random(seed)
    names = sorted(strengths)
    outcomes = []
    for _ in range(games):
        a, b = rng.sample(names, 2)
        p, u = 1 / (1 + math.exp(strengths[b] - strengths[a])), rng.random()
        winner = "tie" if abs(u - p) < tie_band else ("a" if u < p else "b")
        outcomes.append(Outcome(a, b, winner, "votes"))
    return outcomes


def ratings(board) -> dict[str, float]:
    return {r.model: r.rating for r in board.ratings}


def games(a: str, b: str, *winners: str, source: str = "votes") -> list[Outcome]:
    return [Outcome(a, b, winner, source) for winner in winners]


# -- the fit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_numpy", [True, False])
def test_fit_recovers_the_order_of_known_strengths(use_numpy: bool):
    strengths = {"m0": 0.0, "m1": 0.5, "m2": 1.0, "m3": 1.5, "m4": 2.0, "m5": 2.5}
    board = build(simulate(strengths, 3000, seed=7), bootstrap=0, use_numpy=use_numpy)
    assert [r.model for r in board.ratings] == ["m5", "m4", "m3", "m2", "m1", "m0"]
    assert [r.rank for r in board.ratings] == [1, 2, 3, 4, 5, 6]
    # 0.5 natural-log odds per step is 87 Elo points; the fit lands near it (ties and the prior shrink a little)
    top, bottom = board.ratings[0].rating, board.ratings[-1].rating
    assert 5 * 87 * 0.8 < top - bottom < 5 * 87 * 1.1
    assert sum(ratings(board).values()) / 6 == pytest.approx(ANCHOR)
    assert sum(r.games for r in board.ratings) == 2 * 3000 and board.counts == {"votes": 3000, "judge": 0}


def test_numpy_and_pure_python_fits_agree():
    outcomes = simulate({"a": 0.0, "b": 0.7, "c": 1.1, "d": -0.4}, 400, seed=3)
    with_numpy = ratings(build(outcomes, bootstrap=0, use_numpy=True))
    pure = ratings(build(outcomes, bootstrap=0, use_numpy=False))
    assert with_numpy == pytest.approx(pure, abs=1e-6)


def test_symmetric_outcomes_give_equal_ratings():
    outcomes = []
    for a, b in (("x", "y"), ("y", "z"), ("x", "z")):
        outcomes += games(a, b, "a", "a", "b", "b", "tie")
    board = build(outcomes, bootstrap=0)
    assert list(ratings(board).values()) == pytest.approx([ANCHOR] * 3, abs=1e-6)
    assert [(r.wins, r.losses, r.ties) for r in board.ratings] == [(4, 4, 2)] * 3


def test_a_tie_is_half_a_win_each_way():
    with_ties = build(games("a", "b", "a", "tie", "tie"), bootstrap=0)
    as_wins = build(games("a", "b", "a", "a", "b"), bootstrap=0)
    assert ratings(with_ties) == pytest.approx(ratings(as_wins), abs=1e-9)
    assert ratings(with_ties)["a"] > ratings(with_ties)["b"]
    assert [(r.model, r.wins, r.losses, r.ties) for r in with_ties.ratings] == [("a", 1, 0, 2), ("b", 0, 1, 2)]
    only_ties = build(games("a", "b", "tie", "tie"), bootstrap=0)
    assert list(ratings(only_ties).values()) == pytest.approx([ANCHOR, ANCHOR])


def test_a_model_that_always_wins_stays_finite():
    outcomes = games("champ", "b", *["a"] * 200) + games("b", "c", "a", "b", "tie") + games("c", "champ", *["b"] * 50)
    board = build(outcomes, bootstrap=200, seed=1)
    top = board.ratings[0]
    assert top.model == "champ" and top.losses == 0
    for r in board.ratings:
        assert math.isfinite(r.rating) and math.isfinite(r.ci_low) and math.isfinite(r.ci_high)
    assert top.rating - board.ratings[-1].rating < 2000  # the prior holds it; without one it runs off to infinity


def test_bootstrap_interval_holds_the_estimate_shrinks_with_data_and_repeats_with_the_seed():
    strengths = {"a": 0.0, "b": 0.4, "c": 0.8, "d": 1.2}
    small = build(simulate(strengths, 200, seed=5), bootstrap=300, seed=11)
    large = build(simulate(strengths, 4000, seed=5), bootstrap=300, seed=11)
    for board in (small, large):
        for r in board.ratings:
            assert r.ci_low < r.rating < r.ci_high
    width = {"small": {r.model: r.ci_high - r.ci_low for r in small.ratings},
             "large": {r.model: r.ci_high - r.ci_low for r in large.ratings}}  # fmt: skip
    for model in strengths:
        assert width["large"][model] < width["small"][model] / 2  # 20× the data: about 1/√20 the width
    again = build(simulate(strengths, 200, seed=5), bootstrap=300, seed=11)
    assert [(r.ci_low, r.ci_high) for r in again.ratings] == [(r.ci_low, r.ci_high) for r in small.ratings]
    other = build(simulate(strengths, 200, seed=5), bootstrap=300, seed=12)
    assert [(r.ci_low, r.ci_high) for r in other.ratings] != [(r.ci_low, r.ci_high) for r in small.ratings]


def test_pure_python_bootstrap_is_seeded_too():
    outcomes = simulate({"a": 0.0, "b": 1.0, "c": 0.5}, 150, seed=2)
    first, second = (build(outcomes, bootstrap=50, seed=4, use_numpy=False) for _ in range(2))
    assert [(r.ci_low, r.ci_high) for r in first.ratings] == [(r.ci_low, r.ci_high) for r in second.ratings]
    for r in first.ratings:
        assert r.ci_low < r.rating < r.ci_high


def test_groups_that_never_met_are_rated_and_ranked_apart():
    outcomes = games("a", "b", "a", "a", "b") + games("x", "y", "b", "b", "b", "a") + games("y", "z", "a", "b")
    board = build(outcomes, bootstrap=0)
    assert board.groups == 2 and any("2 groups that never met" in note for note in board.notes)
    assert [(r.group, r.rank, r.model) for r in board.ratings] == [
        (0, 1, "y"), (0, 2, "z"), (0, 3, "x"), (1, 1, "a"), (1, 2, "b"),
    ]  # fmt: skip
    for group in (0, 1):
        members = [r.rating for r in board.ratings if r.group == group]
        assert sum(members) / len(members) == pytest.approx(ANCHOR)


def test_no_outcomes_and_self_play():
    empty = build([], bootstrap=100)
    assert empty.ratings == [] and empty.groups == 0 and empty.as_json()["outcomes"] == 0
    board = build(games("a", "a", "a", "b") + games("a", "b", "a"), bootstrap=0)
    assert [r.model for r in board.ratings] == ["a", "b"] and board.counts["votes"] == 1
    assert any("2 outcome(s) of a model against itself" in note for note in board.notes)
    one_pair = build(games("a", "b", "b"), bootstrap=20)
    assert [r.model for r in one_pair.ratings] == ["b", "a"]
    with pytest.raises(ValueError, match="winner"):
        build([Outcome("a", "b", "A", "votes")])


# -- sources ---------------------------------------------------------------------------------------
def test_pairwise_votes_and_outcomes_from_a_real_history(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    fill_history(path)
    with HistoryStore(path) as store:
        rows = store.pairwise_votes()
        assert [row[:3] for row in rows] == [
            ("base", "chat", "b"), ("base", "chat", "b"), ("base", "chat", "a"), ("base", "chat", "tie"),
            ("chat", "tuned", "b"), ("chat", "tuned", "bad"), ("base", "tuned", "b"),
        ]  # fmt: skip
        assert [row[3] for row in rows] == sorted(row[3] for row in rows)
        outcomes = vote_outcomes(store)
        assert outcomes[5] == Outcome("chat", "tuned", "tie", "votes")  # "both bad" counts as a tie
        board, notes = collect("both", store, None)
    assert len(board) == 7 and notes == ["no judge verdicts: there are no stored eval runs"]
    fitted = build(board, bootstrap=0)
    assert [r.model for r in fitted.ratings] == ["tuned", "chat", "base"]
    assert [(r.wins, r.losses, r.ties) for r in fitted.ratings] == [(2, 0, 1), (2, 2, 2), (1, 3, 1)]


def test_both_bad_rates_like_a_tie(tmp_path: Path):
    boards = []
    for verdict in ("bad", "tie"):
        with HistoryStore(tmp_path / f"{verdict}.sqlite3") as store:
            compare(store, ["x", "y"], ["a", verdict, verdict])
            boards.append(build(vote_outcomes(store), bootstrap=0))
    assert ratings(boards[0]) == pytest.approx(ratings(boards[1]))
    assert ratings(boards[0])["x"] > ratings(boards[0])["y"]


def test_judge_verdicts_from_a_real_eval_store(tmp_path: Path):
    fill_evals(tmp_path / "evals.sqlite3")
    with EvalStore(tmp_path / "evals.sqlite3") as store:
        outcomes, skipped = judge_outcomes(store)
        assert sorted(o.winner for o in outcomes) == ["b", "b", "tie"] and skipped == 3
        assert {o.source for o in outcomes} == {"judge"}
        found, notes = collect("judge", None, store)
    assert found == outcomes and notes == ["3 judge verdict(s) left out: the judge failed or the entry is malformed"]
    board = build(found, bootstrap=0)
    assert [r.model for r in board.ratings] == ["tuned", "base"] and board.counts == {"votes": 0, "judge": 3}


# -- the command -----------------------------------------------------------------------------------
def test_cli_table_json_and_sources(tuitune_dirs: dict[str, Path]):
    fill_history(default_history_path())
    fill_evals(default_eval_store_path())
    with HistoryStore(default_history_path()) as store:
        compare(store, [HOSTILE, "base"], ["a"])
    result = run_cli("leaderboard", "--bootstrap", "100")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RANK", "MODEL", "RATING", "95%", "CI", "GAMES", "W/L/T"]
    hostile = "evil␛]52;c;cm0gLXJmIH4=␇␛[31m"  # one win over the weakest: first, with a wide interval
    assert [line.split()[:2] for line in lines[1:5]] == [["1", hostile], ["2", "tuned"], ["3", "chat"], ["4", "base"]]
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "evil" in result.stdout
    assert "11 outcomes (8 Compare votes, 3 judge verdicts)" in result.stdout
    assert "100 bootstrap rounds, seed 0" in result.stdout
    assert "3 judge verdict(s) left out" in result.stderr

    payload = json.loads(run_cli("leaderboard", "--json", "--source", "votes", "--bootstrap", "50").stdout)
    assert payload["sources"] == {"votes": 8, "judge": 0} and payload["bootstrap"] == 50
    by_model = {row["model"]: row for row in payload["models"]}
    assert set(by_model) == {"base", "chat", "tuned", HOSTILE}
    assert by_model["chat"]["games"] == 6 and by_model["chat"]["ties"] == 2
    for row in payload["models"]:
        assert row["ci_low"] <= row["rating"] <= row["ci_high"]
    again = json.loads(run_cli("leaderboard", "--json", "--source", "votes", "--bootstrap", "50").stdout)
    assert again == payload  # seeded: the same intervals every time

    judge = json.loads(run_cli("leaderboard", "--json", "--source", "judge", "--bootstrap", "0").stdout)
    assert judge["sources"] == {"votes": 0, "judge": 3} and [r["model"] for r in judge["models"]] == ["tuned", "base"]
    assert judge["models"][0]["ci_low"] is None


def test_cli_empty_database_and_bad_flags(tuitune_dirs: dict[str, Path]):
    HistoryStore(default_history_path()).close()  # a history with no votes in it
    result = run_cli("leaderboard")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "no outcomes yet: vote in Compare (F6…F9 after both panes answer) or run an eval with a pairwise judge"
    )
    assert not default_eval_store_path().exists()  # reading does not create the eval store
    for flags, fragment in ((["--bootstrap", "-5"], "give a whole number of rounds from 0"), (["--source", "x"], "")):
        result = run_cli("leaderboard", *flags)
        assert result.returncode == 2 and result.stdout == ""  # argparse: usage, then the one error line
        assert result.stderr.splitlines()[-1].startswith(f"tuitune leaderboard: error: argument {flags[0]}: {fragment}")
    broken = default_eval_store_path()
    broken.write_bytes(b"not a database at all" * 100)
    one_clear_error(run_cli("leaderboard", "--source", "judge"), "not a readable eval database", "Move it aside")
