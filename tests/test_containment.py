"""Hostile names never leave the cache: typed, listed by a mirror, as a revision, as --name, or as a redirect.

Every test runs the real `tuitune pull` (or the library) against the real local Hub server, which serves the
hostile names as given, so on code without the checks the file really lands outside the cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import one_clear_error, run_cli
from tests.support.hub_server import HubServer, Repo
from tests.support.model_files import tiny_gguf
from tuitune.catalog import ModelEntry, Source
from tuitune.containment import UnsafeNameError, check_repo_file, check_repo_id, check_revision, contained
from tuitune.downloads import pull_model
from tuitune.sources import hf_local_file, is_installed

REPO_ID = "org/normal"


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    found = {name: tmp_path / name for name in ("config", "data", "cache", "logs", "outside")}
    for name in ("config", "data", "cache"):
        monkeypatch.setenv(f"TUITUNE_{name.upper()}_DIR", str(found[name]))
    monkeypatch.setenv("TUITUNE_LOG_DIR", str(found["logs"]))
    monkeypatch.delenv("TUITUNE_CATALOG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return found


def dotdot(target: Path) -> str:
    """A relative name that climbs from any cache directory to the root, then down to ``target``."""
    return "../" * 40 + str(target).lstrip("/")


def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, Path], **repo) -> HubServer:
    server = HubServer({REPO_ID: Repo(files, **repo)})
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return server


def written(cache: Path) -> list[Path]:
    return sorted(path for path in cache.rglob("*") if path.is_file() and path.name != "models.toml")


def test_typed_file_name_with_dotdot_is_refused_before_any_request(dirs, tmp_path, monkeypatch):
    target = dirs["outside"] / "PWN.gguf"
    name = dotdot(target)
    with serve(monkeypatch, tmp_path, {name: tiny_gguf(tmp_path / "served.gguf")}) as hub:
        result = run_cli("pull", REPO_ID, name, "--name", "p")
    one_clear_error(result, "leaves the repository: no '..' parts")
    assert not target.exists() and hub.log == [] and written(dirs["cache"]) == []


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_a_mirror_listing_hostile_names_for_a_pattern_entry_writes_nothing(dirs, tmp_path, monkeypatch, kind):
    target = dirs["outside"] / f"PWN-{kind}.gguf"
    name = str(target) if kind == "absolute" else dotdot(target)
    dirs["config"].mkdir(parents=True)
    (dirs["config"] / "models.toml").write_text(
        f'[[model]]\nid = "pwn"\nname = "pwn"\nkind = "base"\nfamily = "llama"\n'
        f'source = {{ hf = "{REPO_ID}", pattern = "*PWN*.gguf" }}\n',
        encoding="utf-8",
    )
    with serve(monkeypatch, tmp_path, {name: tiny_gguf(tmp_path / "served.gguf")}) as hub:
        result = run_cli("pull", "pwn")
    line = one_clear_error(result, "file name '")
    assert ("absolute path" in line) if kind == "absolute" else ("no '..' parts" in line)
    assert not target.exists() and written(dirs["cache"]) == []
    assert [entry.path.split("?")[0] for entry in hub.log] == [f"/api/models/{REPO_ID}/revision/main"]


def test_revision_dotdot_is_refused_before_any_request(dirs, tmp_path, monkeypatch):
    with serve(monkeypatch, tmp_path, {"good.gguf": tiny_gguf(tmp_path / "g.gguf")}, revisions=("..",)) as hub:
        result = run_cli("pull", REPO_ID, "good.gguf", "--revision", "..", "--name", "p")
    one_clear_error(result, "revision '..'")
    assert hub.log == [] and written(dirs["cache"]) == []


def test_name_dotdot_is_refused_before_any_request(dirs, tmp_path, monkeypatch):
    with serve(monkeypatch, tmp_path, {"good.gguf": tiny_gguf(tmp_path / "g.gguf")}) as hub:
        result = run_cli("pull", REPO_ID, "good.gguf", "--name", "../evil")
    one_clear_error(result, "model id '../evil'", "--name")
    assert hub.log == [] and written(dirs["cache"]) == []


def test_a_file_redirect_is_refused_and_leaves_nothing(dirs, tmp_path, monkeypatch):
    secret = tmp_path / "secret.gguf"
    secret.write_bytes(b"not for the network")
    with serve(monkeypatch, tmp_path, {"good.gguf": tiny_gguf(tmp_path / "g.gguf")}) as hub:
        hub.redirect_to = secret.as_uri()
        result = run_cli("pull", REPO_ID, "good.gguf", "--name", "p")
    one_clear_error(result, "file URL", "only http(s)")
    assert written(dirs["cache"]) == []  # no .part, .part.json or .lock
    assert [entry.method for entry in hub.log] == ["HEAD"]


def test_a_file_already_outside_the_cache_is_never_reported_verified(dirs, tmp_path, monkeypatch):
    target = tiny_gguf(dirs["outside"] / "PWN.gguf")
    (dirs["cache"] / "models" / "hf" / "org--normal" / "main").mkdir(parents=True)  # another file of it was pulled
    with serve(monkeypatch, tmp_path, {}) as hub:
        result = run_cli("pull", REPO_ID, dotdot(target), "--name", "p")
        assert "verified" not in result.stdout
        one_clear_error(result, "leaves the repository")
        entry = ModelEntry(id="p", name="p", kind="base", family="llama", mode="raw",
                           source=Source(kind="hf", repo=REPO_ID, file=dotdot(target)))  # fmt: skip
        with pytest.raises(UnsafeNameError, match="leaves the repository"):
            pull_model(entry)
        with pytest.raises(UnsafeNameError):
            hf_local_file(entry)
        assert not is_installed(entry)
    assert hub.log == []
    assert not (dirs["config"] / "models.toml").exists()


@pytest.mark.parametrize(
    ("check", "value", "fragment"),
    [
        (check_repo_file, "a\\b.gguf", "backslash"),
        (check_repo_file, "C:/x.gguf", "absolute path"),
        (check_repo_file, "dir//x.gguf", "empty or '.' part"),
        (check_repo_file, "x\x1b]52;c;.gguf", "control characters"),
        (check_repo_id, "org/..", "not a valid name"),
        (check_repo_id, "a--b/c", "no '..' or '--'"),
        (check_repo_id, "/etc", "not a valid name"),
        (check_repo_id, "a/b/c", "org/name"),
        (check_revision, "refs/../x", "'..'"),
        (check_revision, ".hidden", "starting with '.'"),
        (check_revision, "a\nb", "character"),
    ],
)
def test_hub_rules_name_the_bad_part(check, value, fragment):
    with pytest.raises(UnsafeNameError) as caught:
        check(value)
    message = str(caught.value)
    assert fragment in message and "\n" not in message and "\x1b" not in message


def test_good_names_pass_and_a_symlink_out_of_the_directory_is_caught(tmp_path):
    assert check_repo_file("Q4_K_M/model-00001-of-00002.gguf")
    assert check_repo_id("TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF") and check_revision("refs/pr/1")
    base = tmp_path / "base"
    base.mkdir()
    (base / "link").symlink_to(tmp_path)
    assert contained(base, "x.gguf") == base / "x.gguf"
    with pytest.raises(UnsafeNameError, match="leads outside"):
        contained(base, "link", "x.gguf")
