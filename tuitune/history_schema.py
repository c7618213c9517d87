"""The history database's schema steps, in order: each a named function with its SQL written out.

Kept apart from ``history`` so the store reads as what it does, and so each released step stays frozen here
(tests/test_history.py builds every older version by hand and upgrades it). Append new steps; never edit one.
"""

from __future__ import annotations

import sqlite3


def _v1_conversations_panes_messages_votes(db: sqlite3.Connection) -> None:
    """The first schema: conversations, their panes, every message, and the votes on Compare turns."""
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('chat', 'compare')),
            title TEXT NOT NULL,
            params TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX conversations_by_update ON conversations (updated_at)")
    db.execute(
        """
        CREATE TABLE panes (
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL CHECK (idx BETWEEN 0 AND 3),
            model TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('raw', 'chat')),
            params TEXT NOT NULL,
            adapter_scale REAL,
            PRIMARY KEY (conversation_id, idx)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            pane_index INTEGER NOT NULL,
            turn INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('streaming', 'done', 'cancelled', 'error')),
            stats TEXT NOT NULL DEFAULT '{}',
            error TEXT,
            model TEXT,
            mode TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX messages_by_pane ON messages (conversation_id, pane_index, turn)")
    db.execute(
        """
        CREATE TABLE votes (
            conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            turn INTEGER NOT NULL,
            verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'bad')),
            model_a TEXT,
            model_b TEXT,
            created_at TEXT NOT NULL,
            PRIMARY KEY (conversation_id, turn)
        )
        """
    )


def _v2_answer_run_and_adapter_scale(db: sqlite3.Connection) -> None:
    """What each answer actually ran with (JSON sampling) and the adapter strength it was written with."""
    db.execute("ALTER TABLE messages ADD COLUMN run TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE messages ADD COLUMN adapter_scale REAL")


STEPS = (_v1_conversations_panes_messages_votes, _v2_answer_run_and_adapter_scale)
