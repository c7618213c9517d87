"""Every eval run kept in one SQLite file, so a run can be compared with the last one and listed later.

A run is stored whole (the results JSON, answers included) plus one row per cell (prompt × column) for
queries such as a leaderboard. The suite is identified by name and by a hash of its *parsed* prompts (id,
text, messages, mode and checks, as the results JSON has them): reformatting the TOML, comments, notes and
groups do not change it, any change to what is asked or how it is scored does. A file that cannot be read
is never deleted or recreated: the caller is told to move it aside, and the run's output is still shown.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuitune.errors import TuituneError
from tuitune.paths import app_dirs
from tuitune.sqlite_schema import Schema
from tuitune.sqlite_store import SqliteStore

if TYPE_CHECKING:
    from tuitune.evals.results import EvalResults
    from tuitune.suites import Suite


def _v1_runs_and_cells(db: sqlite3.Connection) -> None:
    """Each run whole (results JSON) and one row per cell (prompt × column) for leaderboard queries."""
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL DEFAULT 'eval',
            created_at TEXT NOT NULL,
            suite_name TEXT NOT NULL,
            suite_path TEXT,
            suite_hash TEXT NOT NULL,
            models TEXT NOT NULL,
            columns TEXT NOT NULL,
            sampling TEXT,
            judge TEXT,
            partial INTEGER NOT NULL DEFAULT 0,
            summary TEXT NOT NULL,
            results TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX runs_by_suite ON runs (suite_name, id)")
    db.execute("CREATE INDEX runs_by_hash ON runs (suite_hash, id)")
    db.execute(
        """
        CREATE TABLE cells (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            prompt_id TEXT NOT NULL,
            column_label TEXT NOT NULL,
            passed INTEGER NOT NULL,
            score REAL NOT NULL,
            checks TEXT NOT NULL,
            counted INTEGER NOT NULL,
            error TEXT,
            PRIMARY KEY (run_id, prompt_id, column_label)
        )
        """
    )


_HASHED_PROMPT_FIELDS = ("id", "text", "messages", "mode", "checks")


class EvalStoreError(TuituneError):
    """The eval database cannot be read or written, or holds no such run."""


@dataclass
class RunSummary:
    """One stored run as a list shows it: what ran, on what, and each column's pass rate."""

    id: int
    kind: str
    created_at: str
    suite_name: str
    suite_path: str | None
    suite_hash: str
    models: list[str]  # column labels, in order
    scores: dict[str, float]  # column label → pass rate (mean cell score)
    partial: bool = False
    prompts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # sampling and judge settings

    def as_json(self) -> dict:
        return asdict(self)


def default_eval_store_path() -> Path:
    return app_dirs().data / "evals.sqlite3"


def prompt_fingerprint(prompt: dict) -> str:
    """A hash of what a prompt asks and how it is scored (results-JSON form); notes and groups do not count."""
    kept = {key: prompt.get(key) for key in _HASHED_PROMPT_FIELDS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def hash_prompts(prompts: list[dict]) -> str:
    """The suite hash: every prompt's fingerprint, in order (short, as it is shown to people)."""
    joined = "\n".join(prompt_fingerprint(prompt) for prompt in prompts)
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


def suite_hash(suite: Suite) -> str:
    """The hash of a parsed suite, the same as ``hash_prompts`` of the results JSON a run of it gives."""
    from tuitune.evals.results import EvalResults

    return hash_prompts(EvalResults(suite.name, [], list(suite.prompts), {}, 1).as_json()["prompts"])


def is_partial(results: dict) -> bool:
    """A stopped run: some cell is missing or was left unanswered by a cancel."""
    cells = results.get("cells", [])
    expected = len(results.get("prompts", [])) * len(results.get("columns", []))
    return len(cells) < expected or any(c.get("finish_reason") == "cancelled" and not c.get("error") for c in cells)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _storage_error(path: Path, exc: sqlite3.Error) -> EvalStoreError:
    reason = str(exc)
    if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return EvalStoreError(
            f"{path} is not a readable eval database ({reason}); tuitune left it untouched. "
            f"Move it aside (e.g. rename it to {path.name}.broken) and new runs will be kept in a new one."
        )
    return EvalStoreError(
        f"cannot use the eval database {path} ({reason}). Check that the file and its folder are writable, "
        "the disk is not full and no other program keeps it locked."
    )


# Append new steps (see tuitune.sqlite_schema); never edit a released one.
_SCHEMA = Schema(name="eval", owner="tuitune's eval runs", steps=(_v1_runs_and_cells,), error=EvalStoreError)
SCHEMA_VERSION = _SCHEMA.version


class EvalStore(SqliteStore):
    """Stored eval runs. Safe to share between threads; every call is committed when it returns."""

    SCHEMA = _SCHEMA
    CONTENTS = "the eval runs"
    ERROR = EvalStoreError

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(Path(path) if path is not None else default_eval_store_path())

    def storage_error(self, exc: sqlite3.Error) -> Exception:
        return _storage_error(self.path, exc)

    def save(
        self,
        results: EvalResults | dict,
        suite_path: str | Path | None,
        suite_hash: str | None,
        *,
        partial: bool = False,
    ) -> int:
        """Keep a run; returns its id. ``suite_hash`` None: computed from the results' prompts."""
        data = results if isinstance(results, dict) else results.as_json()
        columns = data.get("columns", [])
        labels = [column["label"] for column in columns]
        summary = data.get("summary", [])
        partial = partial or is_partial(data)
        row = dict(
            created_at=_now(),
            suite_name=str(data.get("suite", "")),
            suite_path=None if suite_path is None else str(suite_path),
            suite_hash=suite_hash or hash_prompts(data.get("prompts", [])),
            models=json.dumps(labels),
            columns=json.dumps(columns, default=str),
            sampling=json.dumps(data.get("sampling"), default=str),
            judge=json.dumps(data["judge"], default=str) if data.get("judge") is not None else None,
            partial=int(partial),
            summary=json.dumps(summary, default=str),
            results=json.dumps(data, default=str),
        )
        cells = [
            (
                c["prompt"],
                c["column"],
                int(bool(c.get("passed"))),
                float(c.get("score", 0.0)),
                json.dumps([bool(check.get("passed")) for check in c.get("checks", [])]),
                int(bool(c.get("error")) or c.get("finish_reason") != "cancelled"),
                c.get("error"),
            )
            for c in data.get("cells", [])
        ]
        with self._transaction() as db:
            cursor = db.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join(':' + key for key in row)})", row
            )
            run_id = int(cursor.lastrowid or 0)
            db.executemany(
                "INSERT OR REPLACE INTO cells (run_id, prompt_id, column_label, passed, score, checks, counted, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *cell) for cell in cells],
            )
        return run_id

    @staticmethod
    def _summary(row: sqlite3.Row) -> RunSummary:
        summary = json.loads(row["summary"])
        extra = {"sampling": json.loads(row["sampling"]) if row["sampling"] else None}
        if row["judge"]:
            extra["judge"] = json.loads(row["judge"])
        return RunSummary(
            id=row["id"],
            kind=row["kind"],
            created_at=row["created_at"],
            suite_name=row["suite_name"],
            suite_path=row["suite_path"],
            suite_hash=row["suite_hash"],
            models=json.loads(row["models"]),
            scores={s["column"]: s["pass_rate"] for s in summary if "column" in s},
            partial=bool(row["partial"]),
            prompts=max((s.get("prompts", 0) for s in summary), default=0),
            extra=extra,
        )

    _SUMMARY_COLUMNS = (
        "id, kind, created_at, suite_name, suite_path, suite_hash, models, sampling, judge, partial, summary"
    )

    def runs(self, limit: int | None = None, suite_name: str | None = None) -> list[RunSummary]:
        """Newest first; ``suite_name`` keeps one suite's runs."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {self._SUMMARY_COLUMNS} FROM runs WHERE :suite IS NULL OR suite_name = :suite "
                "ORDER BY id DESC LIMIT :limit",
                dict(suite=suite_name, limit=-1 if limit is None else limit),
            ).fetchall()
        return [self._summary(row) for row in rows]

    def get(self, run_id: int) -> RunSummary:
        with self._transaction(write=False) as db:
            row = db.execute(f"SELECT {self._SUMMARY_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise EvalStoreError(f"no eval run {run_id} in {self.path}; `tuitune runs` lists the stored runs")
        return self._summary(row)

    def load(self, run_id: int) -> dict:
        """The stored results JSON of a run (``EvalResults.as_json()`` as it was saved)."""
        with self._transaction(write=False) as db:
            row = db.execute("SELECT results FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise EvalStoreError(f"no eval run {run_id} in {self.path}; `tuitune runs` lists the stored runs")
        return json.loads(row["results"])

    def last(
        self, suite_hash: str | None = None, suite_name: str | None = None, before: int | None = None
    ) -> RunSummary | None:
        """The latest run of a suite (by hash and/or name), optionally older than run ``before``; None if none."""
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {self._SUMMARY_COLUMNS} FROM runs WHERE (:hash IS NULL OR suite_hash = :hash) "
                "AND (:name IS NULL OR suite_name = :name) AND (:before IS NULL OR id < :before) "
                "ORDER BY id DESC LIMIT 1",
                dict(hash=suite_hash, name=suite_name, before=before),
            ).fetchone()
        return None if row is None else self._summary(row)

    def cells(self, run_id: int) -> list[dict]:
        """The per-cell rows of a run: prompt, column, passed, score, checks (pass list), counted, error."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT prompt_id, column_label, passed, score, checks, counted, error FROM cells WHERE run_id = ? "
                "ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return [
            {"prompt": r["prompt_id"], "column": r["column_label"], "passed": bool(r["passed"]), "score": r["score"],
             "checks": json.loads(r["checks"]), "counted": bool(r["counted"]), "error": r["error"]}
            for r in rows
        ]  # fmt: skip
