"""Schema upgrades for tuitune's SQLite files: ordered, named steps, all pending ones in one transaction.

A step is a Python function that runs one statement per ``execute`` call, so SQL is never cut up on ``;``
(which breaks on a ``;`` inside a string literal or trigger body) and a step can move data with named
parameters. ``PRAGMA user_version`` counts the steps a file has had. Every pending step and the version bump
commit together: a step that fails rolls all of them back and the file stays exactly at its old version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Step = Callable[[sqlite3.Connection], None]

# Errors about the file or the machine, not the schema: the store's own message (disk full, locked…) fits better.
_ENVIRONMENT_ERRORS = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_PERM",
)


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def step_name(step: Step) -> str:
    """The name a person sees for a step: its function name without the private underscore."""
    return step.__name__.lstrip("_")


@dataclass(frozen=True)
class Schema:
    """The ordered upgrade steps of one database file; ``steps[n]`` takes it from version n to n + 1.

    Append new steps; never edit or reorder a released one (files in the wild already ran it).
    ``name`` ("history") and ``owner`` ("a tuitune history") word the error messages, raised as ``error``.
    """

    name: str
    owner: str
    steps: tuple[Step, ...]
    error: type[Exception]

    @property
    def version(self) -> int:
        return len(self.steps)

    def upgrade(self, db: sqlite3.Connection, path: Path) -> int:
        """Run the pending steps and return the version the file had; refuse newer or foreign files.

        ``db`` must be in autocommit mode (``isolation_level=None``) so that this transaction is the only one.
        """
        db.execute("BEGIN IMMEDIATE")  # read the version under the write lock: another tuitune may be upgrading
        try:
            old = user_version(db)
            if old > self.version:
                raise self.error(
                    f"{path} was written by a newer tuitune ({self.name} schema {old}, this one knows "
                    f"{self.version}): upgrade tuitune, or move the file aside to start a new one."
                )
            if old == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise self.error(f"{path} is an SQLite database but not {self.owner}: move it aside.")
            for step in self.steps[old:]:
                try:
                    step(db)
                except sqlite3.Error as exc:
                    if getattr(exc, "sqlite_errorname", "").startswith(_ENVIRONMENT_ERRORS):
                        raise
                    raise self.error(
                        f"upgrading {path} from {self.name} schema {old} to {self.version} failed at step "
                        f"{step_name(step)} ({exc}); nothing was changed, the file is still at schema {old}. "
                        "Move it aside to start a new one, or report this as a tuitune bug."
                    ) from exc
            if old != self.version:
                # PRAGMA takes no bound parameters; the value is an int we computed, never user text.
                db.execute(f"PRAGMA user_version = {int(self.version)}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise
        return old
