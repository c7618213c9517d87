"""Two eval runs side by side: which cells went from pass to fail and back, and how the scores moved.

Both runs are results JSON (``EvalResults.as_json()``, as ``EvalStore.load`` returns it). Only prompts that
are the same in both (identical id, text, messages, mode and checks) are compared; when the suite changed,
the comparison says how (prompts added, removed, text or checks changed) instead of comparing silently.
A column (model) present in one run only is listed as new or gone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tuitune.evals.store import hash_prompts, prompt_fingerprint

# Status of one prompt × column cell between the two runs.
REGRESSED, FIXED, SAME_PASS, SAME_FAIL, NEW, GONE, UNANSWERED = (
    "regressed", "fixed", "pass", "fail", "new", "gone", "unanswered",
)  # fmt: skip


@dataclass
class CellChange:
    prompt: str
    column: str
    status: str  # one of the statuses above
    old_score: float | None = None
    new_score: float | None = None

    @property
    def delta(self) -> float | None:
        if self.old_score is None or self.new_score is None:
            return None
        return round(self.new_score - self.old_score, 4)


@dataclass
class ColumnDelta:
    """A column's mean score over the compared prompts, before and after."""

    column: str
    old: float
    new: float
    fixed: int
    regressed: int

    @property
    def delta(self) -> float:
        return round(self.new - self.old, 4)


@dataclass
class RunComparison:
    old_run: int | None
    new_run: int | None
    suite: str
    suite_changed: bool
    added: list[str] = field(default_factory=list)  # prompt ids only in the new run
    removed: list[str] = field(default_factory=list)
    text_changed: list[str] = field(default_factory=list)  # same id, different text/messages/mode
    checks_changed: list[str] = field(default_factory=list)  # same id, different checks
    prompts: list[str] = field(default_factory=list)  # the identical prompts, in the new run's order
    columns: list[str] = field(default_factory=list)  # in both runs
    new_columns: list[str] = field(default_factory=list)
    gone_columns: list[str] = field(default_factory=list)
    cells: list[CellChange] = field(default_factory=list)
    column_deltas: list[ColumnDelta] = field(default_factory=list)

    def by_status(self, status: str) -> list[CellChange]:
        return [change for change in self.cells if change.status == status]

    @property
    def regressions(self) -> list[CellChange]:
        return self.by_status(REGRESSED)

    @property
    def fixes(self) -> list[CellChange]:
        return self.by_status(FIXED)

    def cell(self, prompt: str, column: str) -> CellChange | None:
        return next((c for c in self.cells if c.prompt == prompt and c.column == column), None)

    def suite_note(self) -> str | None:
        """One line saying how the suite changed since the old run, or None when it is the same."""
        if not self.suite_changed:
            return None
        since = f"run {self.old_run}" if self.old_run is not None else "the old run"
        parts = []
        if self.added:
            parts.append(f"{_count(len(self.added), 'prompt')} added ({', '.join(self.added)})")
        if self.removed:
            parts.append(f"{len(self.removed)} removed ({', '.join(self.removed)})")
        if self.text_changed:
            parts.append(f"text changed on {', '.join(self.text_changed)}")
        if self.checks_changed:
            parts.append(f"checks changed on {', '.join(self.checks_changed)}")
        if not parts:
            parts.append("prompts reordered")
        return (
            f"the suite changed since {since}: {'; '.join(parts)}. "
            f"Compared only on the {_count(len(self.prompts), 'identical prompt')}."
        )

    def as_json(self) -> dict:
        data = asdict(self)
        data["cells"] = [{**asdict(change), "delta": change.delta} for change in self.cells]
        data["column_deltas"] = [{**asdict(delta), "delta": delta.delta} for delta in self.column_deltas]
        data["suite_note"] = self.suite_note()
        data["regressions"] = len(self.regressions)
        data["fixes"] = len(self.fixes)
        return data

    def format_text(self) -> str:
        """Plain text for a terminal (the caller makes it inert: ids and labels come from files and models)."""
        lines = [f"compared with run {self.old_run}" if self.old_run is not None else "compared with the old run"]
        note = self.suite_note()
        if note:
            lines.append(note)
        for delta in self.column_deltas:
            lines.append(
                f"  {delta.column}: {delta.old:.0%} → {delta.new:.0%} ({delta.delta * 100:+.0f} pts), "
                f"{delta.fixed} fixed, {delta.regressed} regressed"
            )
        for column in self.new_columns:
            lines.append(f"  {column}: new (not in run {self.old_run})")
        for column in self.gone_columns:
            lines.append(f"  {column}: gone (only in run {self.old_run})")
        moved = [c for c in self.cells if c.status in (REGRESSED, FIXED) or (c.delta or 0) != 0]
        for change in moved:
            label = {REGRESSED: "pass → fail", FIXED: "fail → pass"}.get(change.status, "score")
            lines.append(
                f"  {label:<11} {change.prompt}  {change.column}  "
                f"{change.old_score:.2f} → {change.new_score:.2f} ({change.delta:+.2f})"
            )
        if not moved and self.prompts and self.columns:
            lines.append("  no change on the compared cells")
        return "\n".join(lines) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _cells(results: dict) -> dict[tuple[str, str], dict]:
    return {(cell["prompt"], cell["column"]): cell for cell in results.get("cells", [])}


def _counted(cell: dict | None) -> bool:
    return cell is not None and (bool(cell.get("error")) or cell.get("finish_reason") != "cancelled")


def _shape(prompt: dict) -> dict:
    return {key: prompt.get(key) for key in ("text", "messages", "mode")}


def compare_runs(old: dict, new: dict, old_run: int | None = None, new_run: int | None = None) -> RunComparison:
    """Compare ``new`` with ``old`` on their identical prompts and common columns."""
    old_prompts = {p["id"]: p for p in old.get("prompts", [])}
    new_prompts = {p["id"]: p for p in new.get("prompts", [])}
    comparison = RunComparison(
        old_run,
        new_run,
        str(new.get("suite", "")),
        suite_changed=hash_prompts(old.get("prompts", [])) != hash_prompts(new.get("prompts", [])),
        added=[pid for pid in new_prompts if pid not in old_prompts],
        removed=[pid for pid in old_prompts if pid not in new_prompts],
    )
    for pid, prompt in new_prompts.items():
        before = old_prompts.get(pid)
        if before is None:
            continue
        if prompt_fingerprint(before) == prompt_fingerprint(prompt):
            comparison.prompts.append(pid)
            continue
        if _shape(before) != _shape(prompt):
            comparison.text_changed.append(pid)
        if before.get("checks") != prompt.get("checks"):
            comparison.checks_changed.append(pid)
    old_columns = [c["label"] for c in old.get("columns", [])]
    new_columns = [c["label"] for c in new.get("columns", [])]
    comparison.columns = [c for c in new_columns if c in old_columns]
    comparison.new_columns = [c for c in new_columns if c not in old_columns]
    comparison.gone_columns = [c for c in old_columns if c not in new_columns]
    old_cells, new_cells = _cells(old), _cells(new)
    for column in new_columns + comparison.gone_columns:
        scores: tuple[list[float], list[float]] = ([], [])
        for pid in comparison.prompts:
            before, after = old_cells.get((pid, column)), new_cells.get((pid, column))
            change = _change(pid, column, before, after, column in comparison.columns, column in new_columns)
            comparison.cells.append(change)
            if change.old_score is not None and change.new_score is not None:
                scores[0].append(change.old_score)
                scores[1].append(change.new_score)
        if column in comparison.columns:
            mine = [c for c in comparison.cells if c.column == column]
            comparison.column_deltas.append(
                ColumnDelta(
                    column,
                    _mean(scores[0]),
                    _mean(scores[1]),
                    sum(c.status == FIXED for c in mine),
                    sum(c.status == REGRESSED for c in mine),
                )
            )
    return comparison


def _change(
    prompt: str, column: str, before: dict | None, after: dict | None, in_both: bool, in_new: bool
) -> CellChange:
    if not in_both:
        cell = after if in_new else before
        score = float(cell["score"]) if _counted(cell) and cell is not None else None
        return CellChange(prompt, column, NEW if in_new else GONE, None if in_new else score, score if in_new else None)
    if not (_counted(before) and _counted(after)) or before is None or after is None:
        return CellChange(prompt, column, UNANSWERED)
    was, now = bool(before.get("passed")), bool(after.get("passed"))
    status = (FIXED if now else SAME_FAIL) if not was else (SAME_PASS if now else REGRESSED)
    return CellChange(prompt, column, status, float(before["score"]), float(after["score"]))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
