"""Every chat and comparison in one SQLite file, saved while it streams so a crash loses nothing already shown.

Each call is its own committed transaction. With WAL and ``synchronous=NORMAL`` a killed process keeps every
commit (only a power cut can lose the last few). Generation threads write partial answers while the UI
thread reads, so one connection is shared under a lock. A file that cannot be read is never deleted or
recreated: the user is told to move it aside.

In a comparison each pane keeps its own history, so a turn's prompt may be stored in every pane (same turn
number) or in one; the Markdown export shows each distinct prompt of a turn once.

Each answer records who wrote it (model, mode, adapter strength) and the sampling it actually ran with
(``run``), because a pane's settings can change between turns; the conversation's ``params`` are only the
settings it started with.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError
from tuitune.history_schema import STEPS
from tuitune.paths import app_dirs
from tuitune.sqlite_schema import Schema
from tuitune.sqlite_store import SqliteStore

KINDS = ("chat", "compare")
MODES = ("raw", "chat")
ROLES = ("system", "user", "assistant")
STATUSES = ("streaming", "done", "cancelled", "error")
VERDICTS = ("a", "b", "tie", "bad")
MAX_PANES = 4
# Matched against lower-cased keys with "-" as "_": api_key, X-Api-Key, Authorization, hf_token… but not max_tokens.
_SECRET_KEY = re.compile(r"api_?key|authori[sz]ation|^(access_|auth_|bearer_|api_|hf_)?token$|secret|password")


class HistoryError(TuituneError):
    """The history database cannot be read or written, or holds no such conversation."""


# Append new steps; never edit a released one. tests/test_history.py builds every older version by hand.
_SCHEMA = Schema(
    name="history",
    owner="a tuitune history",
    steps=STEPS,
    error=HistoryError,
)
SCHEMA_VERSION = _SCHEMA.version


@dataclass
class Pane:
    """One column of a conversation: the model, how it is prompted, and its own sampling overrides."""

    index: int
    model: str
    mode: str
    params: dict[str, Any] = field(default_factory=dict)
    adapter_scale: float | None = None


@dataclass
class Message:
    """One message of one pane, labelled with what wrote it then: a pane can switch model or settings later.

    ``run`` is the sampling the answer actually used (empty for messages saved before it was recorded).
    """

    id: int
    pane_index: int
    turn: int
    role: str
    content: str
    status: str
    stats: dict[str, Any]
    error: str | None
    created_at: str
    updated_at: str
    model: str | None = None
    mode: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    adapter_scale: float | None = None


@dataclass
class Vote:
    """The user's verdict on one turn of a comparison, with the models of panes 0 and 1 when it was cast."""

    turn: int
    verdict: str
    created_at: str
    model_a: str | None = None
    model_b: str | None = None


@dataclass
class Conversation:
    id: int
    kind: str
    title: str
    created_at: str
    updated_at: str
    params: dict[str, Any]
    panes: list[Pane]
    messages: list[Message]
    votes: list[Vote]

    def pane_messages(self, pane_index: int) -> list[Message]:
        """One pane's history in order, as an engine needs it for the next turn."""
        return sorted((m for m in self.messages if m.pane_index == pane_index), key=lambda m: (m.turn, m.id))


@dataclass
class ConversationSummary:
    id: int
    kind: str
    title: str
    updated_at: str
    models: list[str]  # distinct, in pane order
    message_count: int


def default_history_path() -> Path:
    return app_dirs().data / "history.sqlite3"


def title_from_prompt(text: str, limit: int = 60) -> str:
    """A list-friendly title: the prompt's first non-blank line, whitespace collapsed, cut with an ellipsis."""
    line = next((" ".join(line.split()) for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _now() -> str:
    """ISO-8601 UTC with fixed microsecond precision, so the strings sort in time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _without_secrets(value: Any) -> Any:
    """``value`` minus any key that names a credential: a safety net, params must never persist an API key."""
    if isinstance(value, dict):
        return {
            key: _without_secrets(item)
            for key, item in value.items()
            if not _SECRET_KEY.search(str(key).lower().replace("-", "_"))
        }
    if isinstance(value, list | tuple):
        return [_without_secrets(item) for item in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, default=str)  # a stray non-JSON stat must not cost the answer being saved


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")


def _check_panes(panes: list[Pane]) -> None:
    indexes = [pane.index for pane in panes]
    if len(set(indexes)) != len(indexes) or not all(0 <= i < MAX_PANES for i in indexes):
        raise ValueError(f"pane indexes must be distinct and in 0..{MAX_PANES - 1}, got {indexes}")
    for pane in panes:
        _check(pane.mode, MODES, "pane mode")


def _storage_error(path: Path, exc: sqlite3.Error) -> HistoryError:
    reason = str(exc)
    if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return HistoryError(
            f"{path} is not a readable history database ({reason}); tuitune left it untouched. "
            f"Move it aside (e.g. rename it to {path.name}.broken) and a new, empty history will be started."
        )
    if not isinstance(exc, sqlite3.OperationalError):  # a constraint, a closed store: a bug, not the disk
        return HistoryError(f"the history database {path} refused the operation ({reason})")
    return HistoryError(
        f"cannot use the history database {path} ({reason}). Check that the file and its folder are writable, "
        "the disk is not full and no other program keeps it locked."
    )


class HistoryStore(SqliteStore):
    """Saved chats and comparisons. Safe to share between threads; every call is committed when it returns."""

    SCHEMA = _SCHEMA
    CONTENTS = "the history"
    ERROR = HistoryError

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(Path(path) if path is not None else default_history_path())

    def storage_error(self, exc: sqlite3.Error) -> Exception:
        return _storage_error(self.path, exc)

    def _touch(self, db: sqlite3.Connection, conversation_id: int, now: str) -> None:
        """Move the conversation to the top of the list; a missing one is an error rather than a silent no-op."""
        touched = db.execute(
            "UPDATE conversations SET updated_at = :now WHERE id = :cid", dict(now=now, cid=conversation_id)
        )
        if touched.rowcount != 1:
            raise HistoryError(f"no conversation {conversation_id} in the history (was it deleted?)")

    def _insert_panes(self, db: sqlite3.Connection, conversation_id: int, panes: list[Pane]) -> None:
        db.executemany(
            "INSERT INTO panes (conversation_id, idx, model, mode, params, adapter_scale) "
            "VALUES (:cid, :idx, :model, :mode, :params, :scale)",
            [
                dict(
                    cid=conversation_id,
                    idx=p.index,
                    model=p.model,
                    mode=p.mode,
                    params=_json(_without_secrets(p.params)),
                    scale=p.adapter_scale,
                )
                for p in panes
            ],
        )

    def create_conversation(self, kind: str, title: str, panes: list[Pane], params: dict | None = None) -> int:
        _check(kind, KINDS, "kind")
        _check_panes(panes)
        now = _now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO conversations (kind, title, params, created_at, updated_at) "
                "VALUES (:kind, :title, :params, :now, :now)",
                dict(kind=kind, title=title, params=_json(_without_secrets(params or {})), now=now),
            )
            conversation_id = int(cursor.lastrowid or 0)
            self._insert_panes(db, conversation_id, panes)
        return conversation_id

    def set_panes(self, conversation_id: int, panes: list[Pane]) -> None:
        """Replace the pane specs (a model or mode switch); messages keep the model they were written with."""
        _check_panes(panes)
        with self._transaction() as db:
            self._touch(db, conversation_id, _now())
            db.execute("DELETE FROM panes WHERE conversation_id = :cid", dict(cid=conversation_id))
            self._insert_panes(db, conversation_id, panes)

    def add_message(
        self,
        conversation_id: int,
        pane_index: int,
        turn: int,
        role: str,
        content: str,
        status: str = "done",
        *,
        model: str | None = None,
        mode: str | None = None,
        adapter_scale: float | None = None,
        run: dict | None = None,
    ) -> int:
        """Append a message. ``model``, ``mode`` and ``adapter_scale`` default to the pane's as saved now;
        the caller passes them when it knows better (what the engine really ran), and ``run`` is the sampling
        the answer uses, scrubbed of credentials like every stored dict.
        """
        _check(role, ROLES, "role")
        _check(status, STATUSES, "status")
        if mode is not None:
            _check(mode, MODES, "mode")
        now = _now()
        pane = "FROM panes WHERE conversation_id = :cid AND idx = :pane"
        with self._transaction() as db:
            self._touch(db, conversation_id, now)
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, pane_index, turn, role, content, status, model, mode, "
                "adapter_scale, run, created_at, updated_at) VALUES (:cid, :pane, :turn, :role, :content, :status, "
                f"coalesce(:model, (SELECT model {pane})), coalesce(:mode, (SELECT mode {pane})), "
                f"coalesce(:scale, (SELECT adapter_scale {pane})), :run, :now, :now)",
                dict(
                    cid=conversation_id,
                    pane=pane_index,
                    turn=turn,
                    role=role,
                    content=content,
                    status=status,
                    model=model,
                    mode=mode,
                    scale=adapter_scale,
                    run=_json(_without_secrets(run or {})),
                    now=now,
                ),
            )
            return int(cursor.lastrowid or 0)

    def update_message(
        self,
        message_id: int,
        content: str,
        status: str | None = None,
        stats: dict | None = None,
        error: str | None = None,
        *,
        run: dict | None = None,
    ) -> bool:
        """Save the full text so far (~10×/s while streaming). None leaves a field as it was.

        ``run`` replaces the stored sampling as a whole: the resolved seed of a random-seed request is only
        known once generation ends. Returns False if the message is gone (its conversation was deleted
        mid-answer), so a generation thread can stop instead of failing.
        """
        if status is not None:
            _check(status, STATUSES, "status")
        now = _now()
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE messages SET content = :content, status = coalesce(:status, status), "
                "stats = coalesce(:stats, stats), error = coalesce(:error, error), run = coalesce(:run, run), "
                "updated_at = :now WHERE id = :id",
                dict(
                    content=content,
                    status=status,
                    stats=None if stats is None else _json(stats),
                    error=error,
                    run=None if run is None else _json(_without_secrets(run)),
                    now=now,
                    id=message_id,
                ),
            ).rowcount
            db.execute(
                "UPDATE conversations SET updated_at = :now "
                "WHERE id = (SELECT conversation_id FROM messages WHERE id = :id)",
                dict(now=now, id=message_id),
            )
        return updated == 1

    def delete_messages_from(self, conversation_id: int, pane_index: int, turn: int) -> int:
        """Drop one pane's messages from ``turn`` on (regenerate, edit and resend), and the votes they invalidate."""
        with self._transaction() as db:
            self._touch(db, conversation_id, _now())
            deleted = db.execute(
                "DELETE FROM messages WHERE conversation_id = :cid AND pane_index = :pane AND turn >= :turn",
                dict(cid=conversation_id, pane=pane_index, turn=turn),
            ).rowcount
            db.execute(
                "DELETE FROM votes WHERE conversation_id = :cid AND turn >= :turn", dict(cid=conversation_id, turn=turn)
            )
        return deleted

    def record_vote(self, conversation_id: int, turn: int, verdict: str) -> None:
        """Save the verdict on a turn, replacing an earlier one; 'a' means pane 0's answer was the better one."""
        _check(verdict, VERDICTS, "verdict")
        now = _now()
        model = "(SELECT model FROM panes WHERE conversation_id = :cid AND idx = {})"
        with self._transaction() as db:
            self._touch(db, conversation_id, now)
            db.execute(
                "INSERT OR REPLACE INTO votes (conversation_id, turn, verdict, model_a, model_b, created_at) "
                f"VALUES (:cid, :turn, :verdict, {model.format(0)}, {model.format(1)}, :now)",
                dict(cid=conversation_id, turn=turn, verdict=verdict, now=now),
            )

    def list_conversations(self, search: str | None = None, limit: int = 200) -> list[ConversationSummary]:
        """Newest activity first; ``search`` matches title, model names and message text (ASCII case-insensitive)."""
        pattern = None
        if search and search.strip():
            escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
        like = "LIKE :pattern ESCAPE '\\'"
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT c.id, c.kind, c.title, c.updated_at, "
                "(SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count "
                f"FROM conversations c WHERE :pattern IS NULL OR c.title {like} "
                f"OR EXISTS (SELECT 1 FROM panes p WHERE p.conversation_id = c.id AND p.model {like}) "
                f"OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content {like}) "
                "ORDER BY c.updated_at DESC, c.id DESC LIMIT :limit",
                dict(pattern=pattern, limit=limit),
            ).fetchall()
            models: dict[int, list[str]] = {row["id"]: [] for row in rows}
            for pane in db.execute(
                "SELECT conversation_id, model FROM panes "
                "WHERE conversation_id IN (SELECT value FROM json_each(:ids)) ORDER BY idx",
                dict(ids=json.dumps(list(models))),
            ):
                if pane["model"] not in models[pane["conversation_id"]]:
                    models[pane["conversation_id"]].append(pane["model"])
        return [ConversationSummary(**dict(row), models=models[row["id"]]) for row in rows]

    def load(self, conversation_id: int) -> Conversation:
        with self._transaction(write=False) as db:
            by_id = dict(cid=conversation_id)
            row = db.execute("SELECT * FROM conversations WHERE id = :cid", by_id).fetchone()
            if row is None:
                raise HistoryError(f"no conversation {conversation_id} in the history (was it deleted?)")
            panes = db.execute(
                'SELECT idx AS "index", model, mode, params, adapter_scale FROM panes WHERE conversation_id = :cid '
                "ORDER BY idx",
                by_id,
            ).fetchall()
            messages = db.execute(
                "SELECT id, pane_index, turn, role, content, status, stats, error, created_at, updated_at, model, "
                "mode, run, adapter_scale FROM messages WHERE conversation_id = :cid ORDER BY turn, pane_index, id",
                by_id,
            ).fetchall()
            votes = db.execute(
                "SELECT turn, verdict, created_at, model_a, model_b FROM votes WHERE conversation_id = :cid "
                "ORDER BY turn",
                by_id,
            ).fetchall()
        return Conversation(
            **{key: row[key] for key in ("id", "kind", "title", "created_at", "updated_at")},
            params=json.loads(row["params"]),
            panes=[Pane(**{**dict(p), "params": json.loads(p["params"])}) for p in panes],
            messages=[
                Message(**{**dict(m), "stats": json.loads(m["stats"]), "run": json.loads(m["run"])}) for m in messages
            ],
            votes=[Vote(**dict(v)) for v in votes],
        )

    def rename(self, conversation_id: int, title: str) -> None:
        with self._transaction() as db:
            renamed = db.execute(
                "UPDATE conversations SET title = :title WHERE id = :cid", dict(title=title, cid=conversation_id)
            )
            if renamed.rowcount != 1:
                raise HistoryError(f"no conversation {conversation_id} in the history (was it deleted?)")

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation with its panes, messages and votes; deleting one already gone is not an error."""
        with self._transaction() as db:
            db.execute("DELETE FROM conversations WHERE id = :cid", dict(cid=conversation_id))

    def pairwise_votes(self) -> list[tuple[str, str, str, str]]:
        """(model_a, model_b, verdict, created_at) of every Compare vote, oldest first, for the leaderboard.

        A vote always judges pane A against pane B (the models saved with it), also with 3–4 panes open:
        Compare says so when it records one ("A better (x vs y)"), so extra panes do not change its meaning.
        """
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT v.model_a, v.model_b, v.verdict, v.created_at FROM votes v "
                "JOIN conversations c ON c.id = v.conversation_id WHERE c.kind = 'compare' "
                "AND v.model_a IS NOT NULL AND v.model_b IS NOT NULL ORDER BY v.created_at, v.conversation_id, v.turn"
            ).fetchall()
        return [tuple(row) for row in rows]  # type: ignore[misc]

    def vote_tally(self) -> dict[str, dict[str, int]]:
        """Per model: wins, losses, ties and bad, from the votes on comparisons of (at least) two panes."""
        with self._transaction(write=False) as db:
            votes = db.execute(
                "SELECT v.verdict, v.model_a, v.model_b FROM votes v JOIN conversations c ON c.id = v.conversation_id "
                "WHERE c.kind = 'compare' AND v.model_a IS NOT NULL AND v.model_b IS NOT NULL"
            ).fetchall()
        tally: dict[str, dict[str, int]] = {}
        outcome = {"a": ("wins", "losses"), "b": ("losses", "wins"), "tie": ("ties", "ties"), "bad": ("bad", "bad")}
        for verdict, model_a, model_b in votes:
            for model, result in zip((model_a, model_b), outcome[verdict], strict=True):
                tally.setdefault(model, dict.fromkeys(("wins", "losses", "ties", "bad"), 0))[result] += 1
        return tally

    def recover_interrupted(self) -> int:
        """At startup: answers a crashed process left 'streaming' become 'cancelled', their text kept."""
        with self._transaction() as db:
            return db.execute("UPDATE messages SET status = 'cancelled' WHERE status = 'streaming'").rowcount
