"""The history store on real SQLite files: round trips, search, votes, exports, corruption, threads and a real crash."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO
from tuitune.errors import TuituneError
from tuitune.history import (
    SCHEMA_VERSION,
    HistoryError,
    HistoryStore,
    Pane,
    Vote,
    default_history_path,
    title_from_prompt,
)
from tuitune.history_export import export_json, export_markdown
from tuitune.sqlite_schema import Schema

BASE, CHAT = "gemma-3-270m", "smollm2-135m-instruct"
STATS = {
    "prompt_tokens": 10,
    "completion_tokens": 60,
    "ttft_s": 0.123,
    "decode_tokens_per_s": 41.8,
    "finish_reason": "length",
}
START = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "max_tokens": 256, "seed": 42, "stop": [], "system": ""}


def run_params(**changes: object) -> dict[str, object]:
    """The sampling an answer ran with, as the TUI records it: the start settings with some changed."""
    return {**START, "min_p": 0.05, "repeat_penalty": 1.0, "n_ctx": 2048, **changes}


@pytest.fixture
def store(tmp_path: Path):
    with HistoryStore(tmp_path / "history.sqlite3") as opened:
        yield opened


def make_compare(store: HistoryStore, prompt: str = "Tell me how to train my dog to sit") -> int:
    """A two-pane comparison with one answered turn, the prompt stored in each pane as the TUI does."""
    panes = [Pane(0, BASE, "raw"), Pane(1, CHAT, "chat", {"temperature": 0.2}, adapter_scale=0.5)]
    cid = store.create_conversation("compare", title_from_prompt(prompt), panes, {"temperature": 0.7, "seed": 42})
    for pane, answer in ((0, " on a chair?"), (1, "Training a dog to sit")):
        store.add_message(cid, pane, 0, "user", prompt)
        mid = store.add_message(cid, pane, 0, "assistant", "", status="streaming")
        store.update_message(mid, answer, status="done", stats=STATS)
    return cid


def test_default_path_is_in_the_data_dir(tuitune_dirs: dict[str, Path]):
    assert default_history_path() == tuitune_dirs["data"] / "history.sqlite3"
    with HistoryStore() as store:
        assert store.path.exists()


def test_new_database_is_wal_and_versioned(store: HistoryStore):
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()


def test_chat_round_trip_survives_reopening(tmp_path: Path):
    path = tmp_path / "h.sqlite3"
    with HistoryStore(path) as store:
        cid = store.create_conversation("chat", "Mars", [Pane(0, CHAT, "chat")], {"temperature": 0.7})
        store.add_message(cid, 0, 0, "system", "Be brief.")
        store.add_message(cid, 0, 0, "user", "What do you think of Mars?")
        store.add_message(cid, 0, 0, "assistant", "Red.")
        store.add_message(cid, 0, 1, "user", "Why?")
    with HistoryStore(path) as store:
        conversation = store.load(cid)
    assert (conversation.kind, conversation.title, conversation.params) == ("chat", "Mars", {"temperature": 0.7})
    assert conversation.panes == [Pane(0, CHAT, "chat", {}, None)]
    assert [(m.turn, m.role, m.content, m.status) for m in conversation.messages] == [
        (0, "system", "Be brief.", "done"),
        (0, "user", "What do you think of Mars?", "done"),
        (0, "assistant", "Red.", "done"),
        (1, "user", "Why?", "done"),
    ]
    assert all(m.model == CHAT and m.mode == "chat" for m in conversation.messages)
    assert conversation.created_at.endswith("+00:00") and conversation.updated_at >= conversation.created_at


def test_compare_round_trip(store: HistoryStore):
    conversation = store.load(make_compare(store))
    assert conversation.kind == "compare" and conversation.title == "Tell me how to train my dog to sit"
    assert conversation.params == {"temperature": 0.7, "seed": 42}
    assert conversation.panes[1] == Pane(1, CHAT, "chat", {"temperature": 0.2}, 0.5)
    answers = [m for m in conversation.messages if m.role == "assistant"]
    assert [(m.pane_index, m.content, m.stats) for m in answers] == [
        (0, " on a chair?", STATS),
        (1, "Training a dog to sit", STATS),
    ]
    assert [m.role for m in conversation.pane_messages(1)] == ["user", "assistant"]


def test_streaming_updates_replace_the_text_and_touch_the_conversation(store: HistoryStore):
    cid = store.create_conversation("chat", "t", [Pane(0, CHAT, "chat")])
    mid = store.add_message(cid, 0, 0, "assistant", "", status="streaming")
    before = store.load(cid).updated_at
    text = ""
    for word in ["Training", " a", " dog"]:
        text += word
        assert store.update_message(mid, text) is True
        message = store.load(cid).messages[0]
        assert (message.content, message.status) == (text, "streaming")
    store.update_message(mid, text + " takes patience.", status="error", stats=STATS, error="engine crashed")
    loaded = store.load(cid)
    message = loaded.messages[0]
    assert (message.content, message.status, message.stats, message.error) == (
        "Training a dog takes patience.",
        "error",
        STATS,
        "engine crashed",
    )
    assert loaded.updated_at > before and message.updated_at > message.created_at
    store.update_message(mid, message.content)  # None leaves status, stats and error alone
    again = store.load(cid).messages[0]
    assert (again.status, again.stats, again.error) == ("error", STATS, "engine crashed")
    with pytest.raises(ValueError, match="status"):
        store.update_message(mid, "x", status="finished")


def test_update_of_a_deleted_message_reports_false(store: HistoryStore):
    cid = store.create_conversation("chat", "t", [Pane(0, CHAT, "chat")])
    mid = store.add_message(cid, 0, 0, "assistant", "", status="streaming")
    store.delete(cid)
    assert store.update_message(mid, "late token") is False


def test_search_by_title_model_and_content_newest_first(store: HistoryStore):
    dog = make_compare(store)
    mars = store.create_conversation("chat", "Mars", [Pane(0, "qwen-0.5b", "chat")])
    store.add_message(mars, 0, 0, "user", "100% sure about snake_case?")
    assert [s.id for s in store.list_conversations()] == [mars, dog]
    summary = store.list_conversations()[1]
    assert (summary.kind, summary.title, summary.models, summary.message_count) == (
        "compare",
        "Tell me how to train my dog to sit",
        [BASE, CHAT],
        4,
    )
    assert [s.id for s in store.list_conversations("TRAIN MY")] == [dog]  # title, case-insensitive
    assert [s.id for s in store.list_conversations("smollm2")] == [dog]  # model name
    assert [s.id for s in store.list_conversations("on a chair")] == [dog]  # answer text
    assert [s.id for s in store.list_conversations("qwen")] == [mars]
    assert [s.id for s in store.list_conversations("100%")] == [mars]
    assert [s.id for s in store.list_conversations("%")] == [mars]  # a literal percent sign, not "anything"
    assert store.list_conversations("M_rs") == [] and store.list_conversations("train%dog") == []
    assert [s.id for s in store.list_conversations("snake_case")] == [mars]
    assert len(store.list_conversations("  ")) == 2 and len(store.list_conversations(limit=1)) == 1
    store.add_message(dog, 0, 1, "user", "again")  # activity moves it to the top
    assert [s.id for s in store.list_conversations()] == [dog, mars]


def test_rename(store: HistoryStore):
    cid = store.create_conversation("chat", "old", [Pane(0, CHAT, "chat")])
    store.rename(cid, "new")
    assert store.load(cid).title == "new"
    assert [s.title for s in store.list_conversations("new")] == ["new"]
    with pytest.raises(HistoryError, match="no conversation 999"):
        store.rename(999, "x")


def test_delete_cascades_to_panes_messages_and_votes(store: HistoryStore):
    cid = make_compare(store)
    keep = make_compare(store)
    store.record_vote(cid, 0, "a")
    store.delete(cid)
    store.delete(cid)  # already gone: not an error
    with pytest.raises(HistoryError, match=f"no conversation {cid}"):
        store.load(cid)
    db = sqlite3.connect(store.path)
    for table in ("panes", "messages", "votes"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE conversation_id = ?", (cid,)).fetchone()[0] == 0
    db.close()
    assert len(store.load(keep).messages) == 4


def test_set_panes_keeps_the_model_each_message_was_written_with(store: HistoryStore):
    cid = make_compare(store)
    store.set_panes(cid, [Pane(0, BASE, "raw"), Pane(1, "qwen-0.5b", "raw")])
    store.add_message(cid, 1, 1, "assistant", "new answer")
    conversation = store.load(cid)
    assert [p.model for p in conversation.panes] == [BASE, "qwen-0.5b"]
    assert [(m.model, m.mode) for m in conversation.pane_messages(1)] == [
        (CHAT, "chat"),
        (CHAT, "chat"),
        ("qwen-0.5b", "raw"),
    ]
    with pytest.raises(ValueError, match="distinct"):
        store.set_panes(cid, [Pane(0, BASE, "raw"), Pane(0, CHAT, "chat")])
    with pytest.raises(ValueError, match="mode"):
        store.set_panes(cid, [Pane(0, BASE, "base")])


def test_votes_replace_and_tally(store: HistoryStore):
    first, second, third = make_compare(store), make_compare(store), make_compare(store)
    store.record_vote(first, 0, "b")
    store.record_vote(first, 0, "a")  # replaces the 'b'
    store.record_vote(second, 0, "b")
    store.record_vote(third, 0, "tie")
    store.add_message(third, 0, 1, "user", "more")
    store.record_vote(third, 1, "bad")
    assert [(v.turn, v.verdict, v.model_a, v.model_b) for v in store.load(first).votes] == [(0, "a", BASE, CHAT)]
    chat = store.create_conversation("chat", "c", [Pane(0, CHAT, "chat"), Pane(1, BASE, "raw")])
    store.record_vote(chat, 0, "a")  # not a comparison: not counted
    single = store.create_conversation("compare", "one pane", [Pane(0, CHAT, "chat")])
    store.record_vote(single, 0, "a")  # no opponent: not counted
    expected = {"wins": 1, "losses": 1, "ties": 1, "bad": 1}
    assert store.vote_tally() == {BASE: expected, CHAT: expected}
    store.set_panes(second, [Pane(0, "qwen-0.5b", "raw"), Pane(1, CHAT, "chat")])  # a later switch…
    assert store.vote_tally() == {BASE: expected, CHAT: expected}  # …does not rewrite who was voted on
    with pytest.raises(ValueError, match="verdict"):
        store.record_vote(first, 0, "A")


def test_delete_messages_from_drops_one_pane_from_that_turn_on(store: HistoryStore):
    cid = make_compare(store)
    for pane in (0, 1):
        store.add_message(cid, pane, 1, "user", "and then?")
        store.add_message(cid, pane, 1, "assistant", f"pane {pane} turn 1")
    store.record_vote(cid, 0, "a")
    store.record_vote(cid, 1, "b")
    assert store.delete_messages_from(cid, 1, 1) == 2
    conversation = store.load(cid)
    assert [(m.turn, m.role) for m in conversation.pane_messages(1)] == [(0, "user"), (0, "assistant")]
    assert len(conversation.pane_messages(0)) == 4
    assert [v.turn for v in conversation.votes] == [0]  # the vote on the regenerated turn no longer applies
    assert store.delete_messages_from(cid, 0, 0) == 4
    assert [m.pane_index for m in store.load(cid).messages] == [1, 1]


def test_recover_interrupted_cancels_streaming_and_keeps_text(store: HistoryStore):
    cid = store.create_conversation("chat", "t", [Pane(0, CHAT, "chat")])
    done = store.add_message(cid, 0, 0, "assistant", "complete")
    streaming = store.add_message(cid, 0, 1, "assistant", "", status="streaming")
    store.update_message(streaming, "half an ans")
    assert store.recover_interrupted() == 1
    assert store.recover_interrupted() == 0
    statuses = {m.id: (m.content, m.status) for m in store.load(cid).messages}
    assert statuses == {done: ("complete", "done"), streaming: ("half an ans", "cancelled")}


def test_export_json_is_complete_and_serialisable(store: HistoryStore):
    cid = make_compare(store)
    store.record_vote(cid, 0, "b")
    data = json.loads(json.dumps(export_json(store.load(cid))))
    assert data["kind"] == "compare" and data["params"] == {"temperature": 0.7, "seed": 42}
    assert data["panes"][1] == {
        "index": 1,
        "model": CHAT,
        "mode": "chat",
        "params": {"temperature": 0.2},
        "adapter_scale": 0.5,
    }
    assert [m["content"] for m in data["messages"] if m["role"] == "assistant"] == [
        " on a chair?",
        "Training a dog to sit",
    ]
    assert data["messages"][1]["stats"] == STATS
    assert data["votes"][0]["verdict"] == "b" and data["votes"][0]["model_b"] == CHAT


def test_export_markdown_compare(store: HistoryStore):
    cid = make_compare(store)
    store.add_message(cid, 0, 1, "user", "Hostile")
    mid = store.add_message(cid, 0, 1, "assistant", "", status="streaming")
    store.update_message(mid, "ok\x1b]52;c;cm0gLXJmIH4=\x07 **bold** stays", status="cancelled")
    store.record_vote(cid, 0, "b")
    markdown = export_markdown(store.load(cid))
    assert markdown.startswith("# Tell me how to train my dog to sit\n\ncompare · ")
    assert "temperature=0.7" in markdown
    assert markdown.count("Tell me how to train my dog to sit") == 2  # title + the prompt once, not once per pane
    assert (
        f"### {BASE} · raw\n\n on a chair?\n" in markdown and f"### {CHAT} · chat\n\nTraining a dog to sit" in markdown
    )
    assert "*10 prompt tokens · 60 generated · first token 0.12 s · 41.8 tok/s · length*" in markdown
    assert "## Turn 2" in markdown and "*stopped*" in markdown
    assert "ok␛]52;c;cm0gLXJmIH4=␇ **bold** stays" in markdown  # kept as written, but inert
    assert "\x1b" not in markdown and "\x07" not in markdown
    assert f"- turn 1: B ({CHAT}) better" in markdown


def test_each_answer_exports_the_parameters_it_ran_with(store: HistoryStore):
    cid = store.create_conversation("chat", "Mars", [Pane(0, CHAT, "chat")], START)
    first_run, second_run = run_params(), run_params(temperature=0.0, max_tokens=60, seed=43, system="Be brief.")
    for turn, (answer, run) in enumerate((("Red.", first_run), ("Iron oxide.", second_run))):
        store.add_message(cid, 0, turn, "user", "Why?")
        mid = store.add_message(cid, 0, turn, "assistant", "", status="streaming", run=run)
        store.update_message(mid, answer, status="done", stats=STATS)
    conversation = store.load(cid)
    assert [m.run for m in conversation.messages if m.role == "assistant"] == [first_run, second_run]
    markdown = export_markdown(conversation)
    assert "temperature=0.7" not in markdown.splitlines()[2]  # every answer has its own: the header claims none
    first, second = markdown.split("Iron oxide.")
    assert (
        f"*{CHAT} · chat · temperature 0.7 · top-p 0.95 · top-k 40 · min-p 0.05 · repeat penalty 1 · max tokens 256 · "
        "seed 42 · context 2048*" in first
    )
    assert (
        f"*{CHAT} · chat · temperature 0 · top-p 0.95 · top-k 40 · min-p 0.05 · repeat penalty 1 · max tokens 60 · "
        'seed 43 · context 2048 · system "Be brief."*' in second
    )
    assert "temperature 0.7" not in second and "max tokens 256" not in second
    data = json.loads(json.dumps(export_json(conversation)))
    assert [(m["model"], m["mode"], m["adapter_scale"], m["run"]) for m in data["messages"][1::2]] == [
        (CHAT, "chat", None, first_run),
        (CHAT, "chat", None, second_run),
    ]


def test_compare_export_shows_each_panes_own_run_and_adapter(store: HistoryStore):
    panes = [Pane(0, BASE, "raw"), Pane(1, CHAT, "chat", adapter_scale=0.5)]
    cid = store.create_conversation("compare", "dog", panes, START)
    for pane, run in ((0, run_params(temperature=0.0, max_tokens=60)), (1, run_params(stop=["\n\n", "User:"]))):
        store.add_message(cid, pane, 0, "user", "Tell me how to train my dog to sit")
        store.add_message(cid, pane, 0, "assistant", f"answer {pane}", run=run)
    markdown = export_markdown(store.load(cid))
    assert f"### {BASE} · raw\n\nanswer 0\n\n*temperature 0 · top-p 0.95 · top-k 40 · min-p 0.05 · " in markdown
    assert "max tokens 60 · seed 42 · context 2048*" in markdown
    assert f"### {CHAT} · chat\n\nanswer 1\n\n*adapter 0.5 · temperature 0.7 · " in markdown
    assert 'stop ["\\n\\n", "User:"] · context 2048*' in markdown  # stop strings quoted, newlines visible


def test_update_message_sets_the_run_once_the_seed_is_known(store: HistoryStore):
    cid = store.create_conversation("chat", "t", [Pane(0, BASE, "raw")])
    mid = store.add_message(cid, 0, 0, "assistant", "", status="streaming", run=run_params(seed=-1))
    assert "seed random" in export_markdown(store.load(cid))
    store.update_message(mid, "partial")  # no run: the stored one stays
    assert store.load(cid).messages[0].run == run_params(seed=-1)
    store.update_message(mid, "done", status="done", run=run_params(seed=1234567))
    assert store.load(cid).messages[0].run == run_params(seed=1234567)
    assert "seed 1234567" in export_markdown(store.load(cid))


def test_explicit_model_mode_and_adapter_win_over_the_panes(store: HistoryStore):
    cid = store.create_conversation("compare", "t", [Pane(0, BASE, "raw", adapter_scale=0.5)])
    store.add_message(cid, 0, 0, "assistant", "from the pane")
    store.add_message(cid, 0, 1, "assistant", "explicit", model=CHAT, mode="chat", adapter_scale=1.0)
    # Only the model given: the pane's mode and adapter strength fill the rest.
    store.add_message(cid, 0, 2, "assistant", "model only", model="qwen-0.5b")
    store.add_message(cid, 3, 0, "assistant", "unknown pane", model="qwen-0.5b", mode="raw", adapter_scale=0.0)
    labels = [(m.content, m.model, m.mode, m.adapter_scale) for m in store.load(cid).messages]
    assert labels == [
        ("from the pane", BASE, "raw", 0.5),
        ("unknown pane", "qwen-0.5b", "raw", 0.0),
        ("explicit", CHAT, "chat", 1.0),
        ("model only", "qwen-0.5b", "raw", 0.5),
    ]
    with pytest.raises(ValueError, match="mode"):
        store.add_message(cid, 0, 3, "assistant", "x", mode="base")


# Every earlier history schema exactly as that tuitune created it (from `git log -p tuitune/history.py`), typed
# out here rather than taken from history.py, so an edited released step cannot slip by. Adding a step to
# history.py means adding the schema it upgrades from here, with fill data in OLD_DATA.
OLD_SCHEMAS: dict[int, tuple[str, ...]] = {
    1: (  # 77c59a8 (first history store) to e0aa058
        """CREATE TABLE conversations (id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK (kind IN ('chat', 'compare')),
        title TEXT NOT NULL, params TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX conversations_by_update ON conversations (updated_at)",
        """CREATE TABLE panes (conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL CHECK (idx BETWEEN 0 AND 3), model TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('raw', 'chat')), params TEXT NOT NULL, adapter_scale REAL,
        PRIMARY KEY (conversation_id, idx))""",
        """CREATE TABLE messages (id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        pane_index INTEGER NOT NULL, turn INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')), content TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('streaming', 'done', 'cancelled', 'error')),
        stats TEXT NOT NULL DEFAULT '{}', error TEXT, model TEXT, mode TEXT,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX messages_by_pane ON messages (conversation_id, pane_index, turn)",
        """CREATE TABLE votes (conversation_id INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        turn INTEGER NOT NULL, verdict TEXT NOT NULL CHECK (verdict IN ('a', 'b', 'tie', 'bad')),
        model_a TEXT, model_b TEXT, created_at TEXT NOT NULL, PRIMARY KEY (conversation_id, turn))""",
    ),
}
T0, T1, T2 = "2025-05-10T09:15:00.000000+00:00", "2025-05-10T09:16:00.000000+00:00", "2025-05-11T10:00:00.000000+00:00"
DOG = "Tell me how to train my dog to sit"


def build_old_schema(path: Path, version: int, *replaced: tuple[str, str]) -> sqlite3.Connection:
    """A database as tuitune ``version`` left it, in the old default journal mode; ``replaced`` edits its SQL."""
    db = sqlite3.connect(path)
    for statement in OLD_SCHEMAS[version]:
        for old, new in replaced:
            statement = statement.replace(old, new)
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {version}")
    return db


def fill_v1(db: sqlite3.Connection) -> None:
    """A chat with an answer cut off mid-stream and a two-turn comparison with votes, as version 1 stored them."""
    db.executemany(
        "INSERT INTO conversations VALUES (:id, :kind, :title, :params, :created, :updated)",
        [
            dict(id=1, kind="chat", title="Hi", params=json.dumps({"temperature": 0.7}), created=T0, updated=T1),
            dict(id=2, kind="compare", title=DOG, params=json.dumps({"seed": 42}), created=T1, updated=T2),
        ],
    )
    db.executemany(
        "INSERT INTO panes VALUES (:cid, :idx, :model, :mode, :params, :scale)",
        [
            dict(cid=1, idx=0, model=CHAT, mode="chat", params="{}", scale=None),
            dict(cid=2, idx=0, model=BASE, mode="raw", params="{}", scale=None),
            dict(cid=2, idx=1, model=CHAT, mode="chat", params=json.dumps({"temperature": 0.2}), scale=0.5),
        ],
    )
    rows = [
        (1, 1, 0, 0, "user", "Hi", "done", "{}"),
        (2, 1, 0, 0, "assistant", "Hello! How can", "streaming", "{}"),
        (3, 2, 0, 0, "user", DOG, "done", "{}"),
        (4, 2, 0, 0, "assistant", " on a chair?", "done", json.dumps(STATS)),
        (5, 2, 1, 0, "user", DOG, "done", "{}"),
        (6, 2, 1, 0, "assistant", "Training a dog to sit", "done", json.dumps(STATS)),
        (7, 2, 0, 1, "user", "Shorter", "done", "{}"),
        (8, 2, 0, 1, "assistant", "", "error", "{}"),
    ]
    db.executemany(
        "INSERT INTO messages (id, conversation_id, pane_index, turn, role, content, status, stats, error, model, "
        "mode, created_at, updated_at) VALUES (:id, :cid, :pane, :turn, :role, :content, :status, :stats, "
        ":error, (SELECT model FROM panes WHERE conversation_id = :cid AND idx = :pane), "
        "(SELECT mode FROM panes WHERE conversation_id = :cid AND idx = :pane), :at, :at)",
        [
            dict(zip(("id", "cid", "pane", "turn", "role", "content", "status", "stats"), row, strict=True))
            | dict(error="model crashed" if row[6] == "error" else None, at=T1)
            for row in rows
        ],
    )
    db.executemany(
        "INSERT INTO votes VALUES (2, :turn, :verdict, :a, :b, :at)",
        [dict(turn=0, verdict="b", a=BASE, b=CHAT, at=T1), dict(turn=1, verdict="tie", a=BASE, b=CHAT, at=T2)],
    )


OLD_DATA = {1: fill_v1}


def schema_of(path: Path) -> dict[str, list[tuple]]:
    """Every table's columns (name, type, not null, default, key), indexes and foreign keys, for comparison."""
    db = sqlite3.connect(path)
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    shape = {
        table: [
            *db.execute('SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(:t)', dict(t=table)),
            *db.execute('SELECT name, "unique", origin FROM pragma_index_list(:t) ORDER BY name', dict(t=table)),
            *db.execute('SELECT "table", "from", "to", on_delete FROM pragma_foreign_key_list(:t)', dict(t=table)),
        ]
        for table in tables
    }
    db.close()
    return shape


def test_every_earlier_schema_is_written_out_for_the_upgrade_tests():
    assert sorted(OLD_SCHEMAS) == sorted(OLD_DATA) == list(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("version", sorted(OLD_SCHEMAS))
def test_old_database_upgrades_with_its_data_intact(tmp_path: Path, version: int):
    path = tmp_path / "history.sqlite3"
    db = build_old_schema(path, version)
    OLD_DATA[version](db)
    db.commit()
    db.close()
    with HistoryStore(path) as store:
        listed = [(c.id, c.kind, c.title, c.models, c.message_count, c.updated_at) for c in store.list_conversations()]
        assert listed == [(2, "compare", DOG, [BASE, CHAT], 6, T2), (1, "chat", "Hi", [CHAT], 2, T1)]
        assert [c.id for c in store.list_conversations("chair")] == [2]
        chat, compare = store.load(1), store.load(2)
        assert (chat.params, chat.panes, chat.created_at) == ({"temperature": 0.7}, [Pane(0, CHAT, "chat")], T0)
        assert compare.panes == [Pane(0, BASE, "raw"), Pane(1, CHAT, "chat", {"temperature": 0.2}, 0.5)]
        assert [
            (m.id, m.pane_index, m.turn, m.role, m.content, m.status, m.model, m.mode) for m in compare.messages
        ] == [
            (3, 0, 0, "user", DOG, "done", BASE, "raw"),
            (4, 0, 0, "assistant", " on a chair?", "done", BASE, "raw"),
            (5, 1, 0, "user", DOG, "done", CHAT, "chat"),
            (6, 1, 0, "assistant", "Training a dog to sit", "done", CHAT, "chat"),
            (7, 0, 1, "user", "Shorter", "done", BASE, "raw"),
            (8, 0, 1, "assistant", "", "error", BASE, "raw"),
        ]
        assert [(m.stats, m.error) for m in compare.messages if m.role == "assistant"] == [
            (STATS, None),
            (STATS, None),
            ({}, "model crashed"),
        ]
        assert all(m.run == {} and m.adapter_scale is None for m in chat.messages + compare.messages)
        assert compare.votes == [Vote(0, "b", T1, BASE, CHAT), Vote(1, "tie", T2, BASE, CHAT)]
        assert store.vote_tally() == {
            BASE: {"wins": 0, "losses": 1, "ties": 1, "bad": 0},
            CHAT: {"wins": 1, "losses": 0, "ties": 1, "bad": 0},
        }
        assert store.pairwise_votes() == [(BASE, CHAT, "b", T1), (BASE, CHAT, "tie", T2)]
        assert store.recover_interrupted() == 1
        assert store.load(1).messages[1].content == "Hello! How can"
        mid = store.add_message(1, 0, 1, "assistant", "Sure", run=run_params(), adapter_scale=1.0)
    with HistoryStore(path) as store:  # reopening runs no step twice
        assert [(m.id, m.status, m.run, m.adapter_scale) for m in store.load(1).messages] == [
            (1, "done", {}, None),
            (2, "cancelled", {}, None),
            (mid, "done", run_params(), 1.0),
        ]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()
    with HistoryStore(tmp_path / "new.sqlite3"):
        pass
    assert schema_of(path) == schema_of(tmp_path / "new.sqlite3")  # the same shape as a database made today


def test_a_step_that_fails_halfway_leaves_the_old_version_intact(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    # A hand-patched version 1 file that already has one of the two columns step 2 adds: its first ALTER
    # succeeds, its second fails, and the first must be undone with it.
    db = build_old_schema(path, 1, ("mode TEXT,", "mode TEXT, adapter_scale REAL,"))
    fill_v1(db)
    db.commit()
    before = list(db.iterdump())
    db.close()
    with pytest.raises(HistoryError) as raised:
        HistoryStore(path)
    message = str(raised.value)
    assert "\n" not in message
    assert str(path) in message and "v2_answer_run_and_adapter_scale" in message
    assert "duplicate column name: adapter_scale" in message and "still at schema 1" in message
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "run" not in [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    assert list(db.iterdump()) == before
    db.close()


def test_all_pending_steps_commit_together_or_not_at_all(tmp_path: Path):
    class ToyError(Exception):
        pass

    def _v1_notes(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")

    def _v2_tags(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE tags (name TEXT PRIMARY KEY)")
        db.execute("INSERT INTO tags VALUES (:name)", dict(name="a;b"))  # a ';' in data is no statement break

    def _v3_bad(db: sqlite3.Connection) -> None:
        db.execute("UPDATE notes SET text = :text", dict(text="rewritten"))
        db.execute("INSERT INTO tags VALUES (:name)", dict(name="a;b"))  # duplicate key: fails

    path = tmp_path / "toy.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    toy = Schema("toy", "a toy file", (_v1_notes,), ToyError)
    assert toy.upgrade(db, path) == 0
    db.execute("INSERT INTO notes (text) VALUES (:text)", dict(text="kept"))
    with pytest.raises(ToyError, match=r"from toy schema 1 to 3 failed at step v3_bad \(UNIQUE constraint"):
        Schema("toy", "a toy file", (_v1_notes, _v2_tags, _v3_bad), ToyError).upgrade(db, path)
    assert not db.in_transaction
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'tags'").fetchall() == []
    assert db.execute("SELECT text FROM notes").fetchall() == [("kept",)]
    assert Schema("toy", "a toy file", (_v1_notes, _v2_tags), ToyError).upgrade(db, path) == 1
    assert db.execute("SELECT name FROM tags").fetchall() == [("a;b",)]
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


def test_version_1_database_upgrades_with_its_data(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    db = build_old_schema(path, 1)
    params = json.dumps({"temperature": 0.7, "max_tokens": 256})
    now = "2025-05-10T09:15:00.000000+00:00"
    db.execute("INSERT INTO conversations VALUES (1, 'compare', 'old', ?, ?, ?)", (params, now, now))
    db.execute("INSERT INTO panes VALUES (1, 0, ?, 'raw', '{}', 0.5)", (BASE,))
    db.executemany(
        "INSERT INTO messages (id, conversation_id, pane_index, turn, role, content, status, stats, error, model, "
        "mode, created_at, updated_at) VALUES (?, 1, 0, 0, ?, ?, 'done', ?, NULL, ?, 'raw', ?, ?)",
        [
            (1, "user", "Sit!", "{}", BASE, now, now),
            (2, "assistant", " on a chair?", json.dumps(STATS), BASE, now, now),
        ],
    )
    db.execute("INSERT INTO votes VALUES (1, 0, 'a', ?, NULL, ?)", (BASE, now))
    db.commit()
    db.close()
    with HistoryStore(path) as store:
        old = store.load(1)
        assert [(m.id, m.role, m.content, m.stats, m.model, m.mode) for m in old.messages] == [
            (1, "user", "Sit!", {}, BASE, "raw"),
            (2, "assistant", " on a chair?", STATS, BASE, "raw"),
        ]
        assert all(m.run == {} and m.adapter_scale is None for m in old.messages)
        assert (old.params, old.panes, [v.verdict for v in old.votes]) == (
            {"temperature": 0.7, "max_tokens": 256},
            [Pane(0, BASE, "raw", {}, 0.5)],
            ["a"],
        )
        new_run = run_params(temperature=0.0, max_tokens=60)
        store.add_message(1, 0, 1, "user", "Again")
        store.add_message(1, 0, 1, "assistant", " on the floor", run=new_run, adapter_scale=1.0)
    with HistoryStore(path) as store:  # reopening does not migrate twice
        upgraded = store.load(1)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    assert [(m.run, m.adapter_scale) for m in upgraded.messages if m.role == "assistant"] == [
        ({}, None),
        (new_run, 1.0),
    ]
    markdown = export_markdown(upgraded)
    assert "started with temperature=0.7, max_tokens=256" in markdown.splitlines()[2]  # an old answer lacks its own
    assert (
        "*settings not saved with this answer; the conversation started with temperature 0.7, max tokens 256*"
        in (markdown.split("## Turn 2")[0])
    )
    assert "*adapter 1 · temperature 0 · top-p 0.95 · top-k 40 · min-p 0.05 · " in markdown.split("## Turn 2")[1]


def test_export_markdown_chat(store: HistoryStore):
    cid = store.create_conversation("chat", "Mars\x9b31m", [Pane(0, CHAT, "chat")])
    store.add_message(cid, 0, 0, "user", "What do you think of Mars?")
    mid = store.add_message(cid, 0, 0, "assistant", "", status="streaming")
    store.update_message(mid, "It is red.\x1b[2J", status="done", stats=STATS)
    markdown = export_markdown(store.load(cid))
    assert markdown.startswith("# Mars<0x9b>31m\n\nchat · ")
    assert "**user**\n\nWhat do you think of Mars?\n\n**assistant**\n\nIt is red.␛[2J\n\n*10 prompt tokens" in markdown
    assert "\x1b" not in markdown and "\x9b" not in markdown


def test_secrets_are_never_stored(store: HistoryStore):
    params = {
        "temperature": 0.7,
        "max_tokens": 256,
        "API_KEY": "sk-1",
        "openai-api-key": "sk-2",
        "headers": {"Authorization": "Bearer sk-3", "Accept": "json"},
        "token": "sk-4",
        "hf_token": "sk-5",
        "eos_token": "</s>",
    }
    cid = store.create_conversation("compare", "t", [Pane(0, CHAT, "chat", {"apiKey": "sk-6", "top_k": 40})], params)
    store.set_panes(cid, [Pane(0, CHAT, "chat", {"Access-Token": "sk-7", "top_p": 0.9})])
    conversation = store.load(cid)
    assert conversation.params == {
        "temperature": 0.7,
        "max_tokens": 256,
        "headers": {"Accept": "json"},
        "eos_token": "</s>",
    }
    assert conversation.panes[0].params == {"top_p": 0.9}
    mid = store.add_message(cid, 0, 0, "assistant", "", run={"temperature": 0.0, "api_key": "sk-8"})
    assert store.load(cid).messages[0].run == {"temperature": 0.0}
    store.update_message(mid, "hi", run={"seed": 7, "headers": {"X-Api-Key": "sk-9"}})
    assert store.load(cid).messages[0].run == {"seed": 7, "headers": {}}
    assert b"sk-" not in store.path.read_bytes() + store.path.with_name(store.path.name + "-wal").read_bytes()


def test_title_from_prompt():
    assert title_from_prompt("\n  Tell me   how\nsecond line") == "Tell me how"
    long = title_from_prompt("word " * 30)
    assert len(long) == 60 and long.endswith("…") and long.startswith("word word")
    assert title_from_prompt("x" * 60) == "x" * 60
    assert title_from_prompt("  \n ") == ""


def test_invalid_arguments_are_rejected(store: HistoryStore):
    with pytest.raises(ValueError, match="kind"):
        store.create_conversation("duel", "t", [])
    cid = store.create_conversation("chat", "t", [Pane(0, CHAT, "chat")])
    with pytest.raises(ValueError, match="role"):
        store.add_message(cid, 0, 0, "bot", "hi")
    with pytest.raises(HistoryError, match="no conversation 999"):
        store.add_message(999, 0, 0, "user", "hi")


def test_corrupt_file_is_reported_and_left_untouched(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    garbage = b"not sqlite" + os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(HistoryError) as raised:
        HistoryStore(path)
    assert isinstance(raised.value, TuituneError)
    assert str(path) in str(raised.value) and "move it aside" in str(raised.value).lower()
    assert path.read_bytes() == garbage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.sqlite3"]  # no journal or WAL left beside it


def test_newer_schema_and_foreign_databases_are_refused(tmp_path: Path):
    newer = tmp_path / "newer.sqlite3"
    with HistoryStore(newer):
        pass
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(HistoryError, match="newer tuitune"):
        HistoryStore(newer)
    foreign = tmp_path / "foreign.sqlite3"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE recipes (name TEXT)")
    db.close()
    with pytest.raises(HistoryError, match="not a tuitune history"):
        HistoryStore(foreign)
    assert sqlite3.connect(foreign).execute("SELECT count(*) FROM recipes").fetchone() == (0,)


def test_concurrent_writers_and_a_reader(store: HistoryStore):
    cid = store.create_conversation("compare", "race", [Pane(0, BASE, "raw"), Pane(1, CHAT, "chat")])
    ids = [store.add_message(cid, pane, 0, "assistant", "", status="streaming") for pane in (0, 1)]
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def stream(message_id: int, word: str) -> None:
        try:
            start.wait()
            for i in range(200):
                store.update_message(message_id, f"{word} " * (i + 1), status="done" if i == 199 else None)
        except BaseException as exc:
            errors.append(exc)

    def browse() -> None:
        try:
            start.wait()
            for _ in range(100):
                store.list_conversations("race")
                store.load(cid)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=stream, args=(ids[0], "base")),
        threading.Thread(target=stream, args=(ids[1], "chat")),
    ]
    threads.append(threading.Thread(target=browse))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    messages = store.load(cid).messages
    assert [(m.content, m.status) for m in messages] == [("base " * 200, "done"), ("chat " * 200, "done")]


def test_kill_9_mid_answer_keeps_the_streamed_text(tmp_path: Path):
    path = tmp_path / "history.sqlite3"
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from tuitune.history import HistoryStore, Pane

        store = HistoryStore(Path(sys.argv[1]))
        cid = store.create_conversation("chat", "crash", [Pane(0, "smollm2-135m-instruct", "chat")])
        store.add_message(cid, 0, 0, "user", "Tell me a story")
        mid = store.add_message(cid, 0, 0, "assistant", "", status="streaming")
        store.update_message(mid, "Once upon")
        store.update_message(mid, "Once upon a time")
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if line.strip() != "ready":
            process.kill()
            pytest.fail(f"child did not get ready: {line!r} {process.communicate()[1]}")
        process.kill()  # SIGKILL: no atexit, no close(), no checkpoint
        assert process.wait(timeout=10) == -9
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    with HistoryStore(path) as store:
        (summary,) = store.list_conversations()
        answer = store.load(summary.id).messages[-1]
        assert (answer.content, answer.status) == ("Once upon a time", "streaming")
        assert store.recover_interrupted() == 1
        answer = store.load(summary.id).messages[-1]
        assert (answer.content, answer.status) == ("Once upon a time", "cancelled")
