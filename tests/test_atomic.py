"""Files that are never half-written (tuitune.atomic) and the private (0700) folders tuitune creates.

Interruptions are real: an exception at each stage of a write, and a child process killed with SIGKILL in the
middle of one, on real files. Modes are checked with os.stat under a umask of 022, so a 0700 folder is tuitune's
doing, not the umask's.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tuitune.atomic import atomic_open, private_dir, sweep_temporaries, write_bytes, write_text

SMOL = ("--base", "smollm2-135m-instruct", "--data", str(REPO / "data/tuitune-identity.jsonl"))
ENTRY = {"id": "mine", "name": "mine", "kind": "chat", "family": "llama", "mode": "chat",
         "source": {"path": "/models/mine.gguf"}}  # fmt: skip


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A common umask, under which a plain mkdir gives 0755: a 0700 folder then proves tuitune set it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def child(script: str, *args: str) -> subprocess.Popen[str]:
    """A Python child that prints 'ready' at the moment it should be killed."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def kill_when_ready(process: subprocess.Popen[str]) -> None:
    line = process.stdout.readline() if process.stdout else ""
    assert line.strip() == "ready", line + (process.stderr.read() if process.stderr else "")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


# -- the module ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_an_exception_while_writing_leaves_the_old_file_and_no_temporary(tmp_path: Path, error: BaseException):
    target = tmp_path / "report.md"
    target.write_text("old\n")
    with pytest.raises(type(error)), atomic_open(target) as handle:
        handle.write("half of the new")
        handle.flush()
        assert temporaries(tmp_path)  # the new text went to a temporary file, not the target
        raise error
    assert target.read_text() == "old\n" and temporaries(tmp_path) == []


@pytest.mark.parametrize("stage", ["fsync", "replace"])
def test_a_failure_at_each_later_stage_leaves_the_old_file(tmp_path: Path, monkeypatch, stage: str):
    target = tmp_path / "status.json"
    target.write_text("old")

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(f"tuitune.atomic.os.{stage}", fail)
    with pytest.raises(OSError, match="No space left"):
        write_text(target, "new" * 1000)
    assert target.read_text() == "old" and temporaries(tmp_path) == []


def test_a_failed_first_write_creates_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("tuitune.atomic.os.fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_bytes(tmp_path / "new.bin", b"x" * 10)
    assert list(tmp_path.iterdir()) == []


def test_a_write_killed_half_way_leaves_the_old_file_and_the_next_write_sweeps_its_temporary(tmp_path: Path):
    target = tmp_path / "big.bin"
    target.write_bytes(b"O" * 4_000_000)
    process = child(
        """
        import sys, time
        from tuitune.atomic import atomic_open
        with atomic_open(sys.argv[1], "wb") as handle:
            handle.write(b"N" * 2_000_000)  # half of the new content
            handle.flush()
            print("ready", flush=True)
            time.sleep(60)
            handle.write(b"N" * 2_000_000)
        """,
        str(target),
    )
    kill_when_ready(process)
    assert target.read_bytes() == b"O" * 4_000_000
    left = temporaries(tmp_path)
    assert len(left) == 1 and f".big.bin.{process.pid}." in left[0]  # the killed writer's, by its pid
    write_bytes(target, b"later")
    assert target.read_bytes() == b"later" and temporaries(tmp_path) == []


def test_readers_see_whole_files_while_a_writer_is_killed_at_random_moments(tmp_path: Path):
    """A writer replaces a 2 MB file in a loop; whenever it is killed, the file is one whole version."""
    target = tmp_path / "big.bin"
    size = 2_000_000
    target.write_bytes(b"O" * size)
    script = """
        import sys
        from tuitune.atomic import atomic_open
        print("ready", flush=True)
        for turn in range(10**9):
            with atomic_open(sys.argv[1], "wb") as handle:
                for _ in range(32):
                    handle.write(b"AB"[turn % 2 : turn % 2 + 1] * (int(sys.argv[2]) // 32))
        """
    for delay in (0.3, 0.55, 0.8):
        process = child(script, str(target), str(size))
        assert process.stdout and process.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            data = target.read_bytes()
            assert len(data) == size and data.count(data[:1]) == size  # one version, whole
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        data = target.read_bytes()
        assert len(data) == size and data[:1] in b"OAB" and data.count(data[:1]) == size
    sweep_temporaries(target)
    assert temporaries(tmp_path) == []


def test_permissions_are_kept_and_new_files_get_the_given_ones(tmp_path: Path, umask_022):
    shared = tmp_path / "shared.md"
    shared.write_text("old")
    os.chmod(shared, 0o640)
    write_text(shared, "new")
    assert mode_of(shared) == 0o640 and shared.read_text() == "new"
    write_text(tmp_path / "private.toml", "x", perms=0o600)
    assert mode_of(tmp_path / "private.toml") == 0o600
    write_text(tmp_path / "plain.md", "x")
    assert mode_of(tmp_path / "plain.md") == 0o644  # what open() gives under the umask


def test_a_linked_file_is_written_through_its_link(tmp_path: Path):
    real = tmp_path / "dotfiles" / "models.toml"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "models.toml"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_private_dir_creates_every_missing_folder_0700(tmp_path: Path, umask_022):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    private_dir(shared / "a" / "b")
    assert mode_of(shared / "a") == mode_of(shared / "a" / "b") == 0o700
    assert mode_of(shared) == 0o755  # an existing folder is not ours to change
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        private_dir(tmp_path / "file")


# -- the catalog ----------------------------------------------------------------------------------------------
def test_an_entry_that_fails_validation_writes_nothing(tuitune_dirs):
    from tuitune.catalog import add_user_entry
    from tuitune.errors import CatalogError

    add_user_entry(ENTRY)
    user = tuitune_dirs["config"] / "models.toml"
    before, info = user.read_bytes(), os.stat(user)
    bad = {**ENTRY, "id": "tuned", "kind": "finetuned", "base": "no-such-model", "adapter": "/models/a.gguf"}
    with pytest.raises(CatalogError, match="no-such-model"):
        add_user_entry(bad)
    after = os.stat(user)
    assert user.read_bytes() == before and (after.st_ino, after.st_mtime_ns) == (info.st_ino, info.st_mtime_ns)
    assert temporaries(user.parent) == []


def test_a_bad_first_entry_leaves_no_catalog(tuitune_dirs):
    from tuitune.catalog import add_user_entry
    from tuitune.errors import CatalogError

    with pytest.raises(CatalogError):
        add_user_entry({**ENTRY, "pair": "mine"})  # pair points to itself
    assert not (tuitune_dirs["config"] / "models.toml").exists()


def test_a_catalog_add_killed_mid_way_leaves_the_old_catalog(tuitune_dirs):
    from tuitune.catalog import add_user_entry, load_catalog

    add_user_entry(ENTRY)
    user = tuitune_dirs["config"] / "models.toml"
    before = user.read_bytes()
    process = child(
        """
        import os, sys, time
        import tuitune.catalog as catalog

        def stop_here(*args, **kwargs):  # the risky moment: the new text is on its way into the file
            print("ready", flush=True)
            time.sleep(60)

        real_replace = os.replace
        os.replace = lambda src, dst: stop_here() if str(dst).endswith("models.toml") else real_replace(src, dst)
        catalog.load_catalog = stop_here  # where an append-then-check catalog would stop
        catalog.add_user_entry({"id": "second", "name": "second", "kind": "chat", "family": "llama",
                                "mode": "chat", "source": {"path": "/models/second.gguf"}})
        """
    )
    kill_when_ready(process)
    assert user.read_bytes() == before
    assert [entry.id for entry in load_catalog() if entry.origin == user] == ["mine"]
    add_user_entry({**ENTRY, "id": "third"})
    assert temporaries(user.parent) == []
    assert [entry.id for entry in load_catalog() if entry.origin == user] == ["mine", "third"]


# -- private folders ----------------------------------------------------------------------------------------
def test_settings_and_catalog_folders_are_created_private(tuitune_dirs, umask_022):
    from tuitune.catalog import add_user_entry
    from tuitune.settings import Settings, save_settings

    config = tuitune_dirs["config"]
    save_settings(Settings(theme="x"))
    assert mode_of(config) == 0o700 and mode_of(config / "settings.toml") == 0o600
    os.chmod(config, 0o755)  # a folder the user chose (TUITUNE_CONFIG_DIR) and opened up: left as it is
    add_user_entry(ENTRY)
    assert mode_of(config) == 0o755 and mode_of(config / "models.toml") == 0o600


def test_a_run_folder_is_created_private(tuitune_dirs, umask_022):
    result = run_cli("train", "--name", "priv", *SMOL, "--prepare")
    assert result.returncode == 0, result.stdout + result.stderr
    data = tuitune_dirs["data"]
    for folder in (data, data / "runs", data / "runs" / "priv"):
        assert mode_of(folder) == 0o700, folder


def test_the_history_folder_is_created_private(tuitune_dirs, umask_022):
    from tuitune.history import HistoryStore

    store = HistoryStore()
    try:
        assert mode_of(tuitune_dirs["data"]) == 0o700
    finally:
        store.close()


def test_default_folders_from_an_older_version_are_tightened(tmp_path: Path, monkeypatch, umask_022):
    """At its default place the data folder is tuitune's own, so a 0755 one left by an older version is fixed."""
    from tuitune.paths import app_dirs, private_app_dir

    monkeypatch.delenv("TUITUNE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    data = app_dirs().data
    (data / "runs").mkdir(parents=True)
    os.chmod(data, 0o755)
    private_app_dir(data / "runs" / "new")
    assert mode_of(data) == mode_of(data / "runs") == mode_of(data / "runs" / "new") == 0o700
    assert mode_of(tmp_path / "xdg") == 0o755  # above tuitune's folder: not ours
