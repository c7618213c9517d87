"""Eval runs kept in SQLite and compared: the store, the comparison, and `tuitune eval --compare-to` / `tuitune runs`.

Real SQLite files throughout; the CLI tests run the real smollm2 demo model on a three-prompt suite whose
checks always pass (min_tokens 1) or always fail (a string no answer contains), so the verdicts are fixed.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import run_cli
from tuitune.evals.checks import Check, CheckResult
from tuitune.evals.compare_runs import compare_runs
from tuitune.evals.results import Cell, Column, EvalResults
from tuitune.evals.store import EvalStore, EvalStoreError, hash_prompts, suite_hash
from tuitune.suites import SuitePrompt, load_suite

CHAT = "smollm2-135m-instruct"
ANSWERS = Check("min_tokens", 1)
NEVER = Check("contains", "zzqqxx")
SUITE = """
name = "kept"
[[prompt]]
id = "a"
text = "Say hello"
[[prompt.check]]
type = "min_tokens"
value = 1
[[prompt]]
id = "b"
text = "Name a colour"
[[prompt.check]]
type = "contains"
value = "zzqqxx"
[[prompt]]
id = "c"
text = "Count to three"
[[prompt.check]]
type = "min_tokens"
value = 1
"""


def results(name: str, prompts: list[SuitePrompt], verdicts: dict[tuple[str, str], float], partial=()) -> EvalResults:
    """An EvalResults built directly: ``verdicts`` maps (prompt, column) to the share of checks passed."""
    columns = list(dict.fromkeys(column for _, column in verdicts))
    cells = {}
    for (prompt_id, column), share in verdicts.items():
        prompt = next(p for p in prompts if p.id == prompt_id)
        passed = [i < round(share * len(prompt.checks)) for i in range(len(prompt.checks))]
        finish = "cancelled" if (prompt_id, column) in partial else "stop"
        cells[(prompt_id, column)] = Cell(prompt_id, column, ["answer"], [CheckResult(c, ok, "") for c, ok in
                                          zip(prompt.checks, passed, strict=True)], share, 3, 10.0, finish, 0.0)  # fmt: skip
    return EvalResults(name, [Column(c, c) for c in columns], prompts, cells, 1)


PROMPTS = [SuitePrompt("a", "Say hello", checks=(ANSWERS, NEVER)), SuitePrompt("b", "Name a colour", checks=(ANSWERS,))]


def test_save_runs_load_last_and_cells(tmp_path: Path):
    path = tmp_path / "fresh" / "evals.sqlite3"
    with EvalStore(path) as store:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        first = store.save(results("s", PROMPTS, {("a", "m1"): 0.5, ("b", "m1"): 1.0}), "s.toml", None)
        other = store.save(results("t", PROMPTS, {("a", "m1"): 1.0, ("b", "m1"): 1.0}), "t.toml", "h")
        second = store.save(
            results("s", PROMPTS, {("a", "m1"): 1.0, ("b", "m1"): 0.0, ("a", "m2"): 0.5, ("b", "m2"): 0.0},
                    partial={("b", "m2")}), "s.toml", None)  # fmt: skip
        assert [run.id for run in store.runs()] == [second, other, first]
        assert [run.id for run in store.runs(limit=1)] == [second]
        last = store.last(suite_name="s")
        assert last is not None and last.id == second and last.models == ["m1", "m2"] and last.partial
        assert last.kind == "eval" and last.scores == {"m1": 0.5, "m2": 0.5}  # b/m2 was not answered: not counted
        assert store.last(suite_name="s", before=second).id == first  # type: ignore[union-attr]
        assert store.last(suite_hash="h").id == other and store.last(suite_name="nope") is None  # type: ignore[union-attr]
        assert last.suite_hash == hash_prompts(store.load(second)["prompts"])
        assert store.load(first)["cells"][0]["checks"][0]["passed"] is True
        cells = {(c["prompt"], c["column"]): c for c in store.cells(second)}
        assert cells[("a", "m2")]["checks"] == [True, False] and not cells[("a", "m2")]["passed"]
        assert cells[("b", "m2")]["counted"] is False and cells[("a", "m1")]["passed"]
        with pytest.raises(EvalStoreError, match="no eval run 99"):
            store.load(99)
    with EvalStore(path) as again:  # reopened: kept, and the schema is not migrated twice
        assert len(again.runs()) == 3


def test_corrupt_and_foreign_files_are_refused_and_left_alone(tmp_path: Path):
    broken = tmp_path / "evals.sqlite3"
    broken.write_bytes(b"not a database at all" * 100)
    with pytest.raises(EvalStoreError, match=r"not a readable eval database.*Move it aside"):
        EvalStore(broken)
    assert broken.read_bytes() == b"not a database at all" * 100
    import sqlite3

    foreign = tmp_path / "other.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(EvalStoreError, match="not tuitune's eval runs"):
        EvalStore(foreign)


def test_compare_pass_to_fail_fail_to_pass_deltas_and_columns():
    old = results("s", PROMPTS, {("a", "m1"): 1.0, ("b", "m1"): 0.0, ("a", "gone"): 1.0, ("b", "gone"): 1.0})
    new = results("s", PROMPTS, {("a", "m1"): 0.5, ("b", "m1"): 1.0, ("a", "new"): 1.0, ("b", "new"): 0.0})
    comparison = compare_runs(old.as_json(), new.as_json(), 1, 2)
    assert not comparison.suite_changed and comparison.suite_note() is None
    assert [(c.prompt, c.column) for c in comparison.regressions] == [("a", "m1")]
    assert [(c.prompt, c.column) for c in comparison.fixes] == [("b", "m1")]
    assert comparison.cell("a", "m1").delta == -0.5  # type: ignore[union-attr]
    assert comparison.new_columns == ["new"] and comparison.gone_columns == ["gone"]
    assert comparison.cell("a", "new").status == "new" and comparison.cell("b", "gone").status == "gone"  # type: ignore[union-attr]
    (delta,) = comparison.column_deltas
    assert (delta.column, delta.old, delta.new, delta.fixed, delta.regressed) == ("m1", 0.5, 0.75, 1, 1)
    text = comparison.format_text()
    assert "pass → fail a  m1  1.00 → 0.50 (-0.50)" in text and "fail → pass b  m1" in text
    assert "new: new (not in run 1)" in text and "gone: gone (only in run 1)" in text
    data = comparison.as_json()
    assert data["regressions"] == 1 and data["fixes"] == 1 and json.dumps(data)


def test_suite_changes_are_flagged_and_only_identical_prompts_compared(tmp_path: Path):
    base = tmp_path / "base.toml"
    base.write_text(SUITE, encoding="utf-8")
    # Whitespace and comments do not change the hash; the parsed prompts and checks do.
    spaced = tmp_path / "spaced.toml"
    spaced.write_text("# a comment\n" + SUITE.replace("\n[[prompt]]", "\n\n  [[prompt]]  # again"), encoding="utf-8")
    assert suite_hash(load_suite(base)) == suite_hash(load_suite(spaced))
    changed = tmp_path / "changed.toml"
    changed.write_text(
        SUITE.replace("Say hello", "Say goodbye").replace('"zzqqxx"', '"blue"')
        + '[[prompt]]\nid = "d"\ntext = "New one"\n',
        encoding="utf-8",
    )
    old_suite, new_suite = load_suite(base), load_suite(changed)
    assert suite_hash(old_suite) != suite_hash(new_suite)
    old = results("kept", list(old_suite.prompts), {(p, CHAT): 1.0 for p in "abc"})
    new = results("kept", list(new_suite.prompts), {(p, CHAT): 0.0 for p in "abcd"})
    comparison = compare_runs(old.as_json(), new.as_json(), 4, 5)
    assert comparison.suite_changed and comparison.prompts == ["c"]
    assert comparison.added == ["d"] and comparison.removed == []
    assert comparison.text_changed == ["a"] and comparison.checks_changed == ["b"]
    assert comparison.suite_note() == (
        "the suite changed since run 4: 1 prompt added (d); text changed on a; checks changed on b. "
        "Compared only on the 1 identical prompt."
    )
    assert [(c.prompt, c.status) for c in comparison.cells] == [("c", "regressed")]
    removed = compare_runs(new.as_json(), old.as_json(), 5, 6)
    assert removed.removed == ["d"] and "1 removed (d)" in (removed.suite_note() or "")


# -- the CLI on the real demo model ------------------------------------------------------------------
def test_eval_keeps_every_run_and_compares_with_last_or_an_id(tmp_path: Path, tuitune_dirs: dict[str, Path]):
    suite_file = tmp_path / "kept.toml"
    suite_file.write_text(SUITE, encoding="utf-8")
    args = ("eval", "--suite", str(suite_file), "--models", CHAT, "--max-tokens", "4")
    first = run_cli(*args, "--compare-to", "last")
    assert first.returncode == 0, first.stderr
    assert "no earlier run of suite 'kept' to compare with" in first.stderr and len(first.stderr.splitlines()) == 1
    assert "saved as run 1" in first.stdout
    assert stat.S_IMODE(tuitune_dirs["data"].stat().st_mode) == 0o700
    # An older run of a different version of the suite: b's check and a's verdict differ, "old" was removed.
    suite = load_suite(suite_file)
    prompts = [*suite.prompts[:2], SuitePrompt("c", "Count to three", checks=(NEVER,)), SuitePrompt("old", "x")]
    with EvalStore() as store:
        seeded = store.save(results("kept", prompts, {("a", CHAT): 0.0, ("b", CHAT): 1.0, ("c", CHAT): 0.0,
                                                       ("old", CHAT): 1.0, ("a", "gone-model"): 1.0}), None, None)  # fmt: skip
    assert seeded == 2
    second = run_cli(*args, "--compare-to", "2", "--json")
    assert second.returncode == 0 and second.stderr == "", second.stderr
    payload = json.loads(second.stdout)
    assert payload["run_id"] == 3 and payload["suite"] == "kept"
    comparison = payload["comparison"]
    assert comparison["old_run"] == 2 and comparison["new_run"] == 3 and comparison["suite_changed"]
    assert comparison["prompts"] == ["a", "b"] and comparison["removed"] == ["old"]
    assert comparison["checks_changed"] == ["c"] and comparison["gone_columns"] == ["gone-model"]
    statuses = {(c["prompt"], c["column"]): c["status"] for c in comparison["cells"]}
    assert statuses[("a", CHAT)] == "fixed" and statuses[("b", CHAT)] == "regressed"
    assert "checks changed on c" in comparison["suite_note"]
    third = run_cli(*args, "--compare-to", "last")  # last: run 3, the same suite: nothing changed
    assert third.returncode == 0, third.stderr
    assert "saved as run 4" in third.stdout and "compared with run 3" in third.stdout
    assert "suite changed" not in third.stdout and "no change on the compared cells" in third.stdout

    listed = run_cli("runs")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "kind", "when", "suite", "models", "scores"]
    assert [line.split()[0] for line in lines[1:]] == ["4", "3", "2", "1"] and "eval" in lines[1]
    assert f"{CHAT} 67%" in lines[1]
    runs = json.loads(run_cli("runs", "--json", "--limit", "2").stdout)
    assert [run["id"] for run in runs] == [4, 3] and runs[0]["kind"] == "eval" and runs[0]["models"] == [CHAT]
    shown = run_cli("runs", "show", "3")
    assert shown.returncode == 0 and "run 3 (eval)" in shown.stdout and "\nb       ✗ 0.00\n" in shown.stdout
    detail = json.loads(run_cli("runs", "show", "3", "--json").stdout)
    assert detail["run"]["id"] == 3 and len(detail["results"]["cells"]) == 3


def test_unknown_run_id_is_one_line_before_any_model_loads(tmp_path: Path):
    suite_file = tmp_path / "kept.toml"
    suite_file.write_text(SUITE, encoding="utf-8")
    args = ("eval", "--suite", str(suite_file), "--models", CHAT)
    conftest.one_clear_error(run_cli(*args, "--compare-to", "42"), "no eval run 42", "tuitune runs", code=1)
    conftest.one_clear_error(run_cli(*args, "--compare-to", "yesterday"), "--compare-to takes last or a run id")
    conftest.one_clear_error(run_cli("runs", "show", "7"), "no eval run 7")
    assert "no eval runs kept yet" in run_cli("runs").stdout


def test_a_corrupt_database_warns_prints_the_results_and_is_not_overwritten(
    tmp_path: Path, tuitune_dirs: dict[str, Path]
):
    suite_file = tmp_path / "kept.toml"
    suite_file.write_text(SUITE, encoding="utf-8")
    database = tuitune_dirs["data"] / "evals.sqlite3"
    database.parent.mkdir(parents=True)
    garbage = b"\x00garbage, not SQLite\n" * 64
    database.write_bytes(garbage)
    result = run_cli("eval", "--suite", str(suite_file), "--models", CHAT, "--max-tokens", "4", "--compare-to", "last")
    assert result.returncode == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert "not a readable eval database" in line and "not kept nor compared" in line
    assert "kept: 3 prompts × 1 column" in result.stdout and "saved as run" not in result.stdout
    assert database.read_bytes() == garbage
