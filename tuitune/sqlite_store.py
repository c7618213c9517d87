"""One SQLite file shared between threads: what the history and the eval store have in common.

Opening reads the file before anything writes (a file that is not a database is never touched), turns on WAL,
and brings the schema up to date (sqlite_schema.py). Every call then runs in one transaction under one lock,
committed before it returns, so a crash never leaves half of a call behind.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from tuitune.paths import private_app_dir
from tuitune.sqlite_schema import Schema


class SqliteStore:
    """Subclasses set ``SCHEMA``, ``CONTENTS`` (for the folder error) and ``ERROR``, and map sqlite errors to
    their own one-line message in ``storage_error``."""

    SCHEMA: Schema
    CONTENTS: str  # "the history", "the eval runs"
    ERROR: type[Exception]

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            private_app_dir(self.path.parent)
            self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        except OSError as exc:
            raise self.ERROR(f"cannot create {self.path.parent} for {self.CONTENTS} ({exc.strerror})") from exc
        except sqlite3.Error as exc:
            raise self.storage_error(exc) from exc
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # read before anything writes
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self.SCHEMA.upgrade(self._db, self.path)
        except sqlite3.Error as exc:
            self._db.close()
            raise self.storage_error(exc) from exc
        except BaseException:
            self._db.close()
            raise

    def storage_error(self, exc: sqlite3.Error) -> Exception:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """Hold the lock for one transaction, committed before the caller returns (a read gets one snapshot)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.rollback()
                    raise
            except sqlite3.Error as exc:
                raise self.storage_error(exc) from exc
