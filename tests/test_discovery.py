"""Discovery of GGUF models other tools downloaded: the HF cache, Ollama's store, LM Studio's folder.

The stores are built with each tool's real layout (the HF cache by huggingface_hub's own ``hf_hub_download``
from the local Hub server), with the real demo models hard-linked in, plus hostile and broken entries.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, one_clear_error, run_cli
from tests.support.hub_server import HubServer, Repo
from tests.support.model_files import COMMIT, link_or_copy, ollama_manifest
from tuitune.discovery import discover
from tuitune.gguf import read_gguf

ORG_REPO = "someorg/tiny-GGUF"


def tiny_gguf(path: Path, file_type: int = 15, template: str | None = "{{ messages }}", arch: str = "llama") -> Path:
    """A small but valid GGUF (one tensor) written with the gguf package."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_file_type(file_type)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty, private locations for the three stores (and a home with no LM Studio settings)."""
    paths = {"hf": tmp_path / "hf-cache", "ollama": tmp_path / "ollama", "home": tmp_path / "home"}
    paths["home"].mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(paths["hf"]))
    monkeypatch.setenv("OLLAMA_MODELS", str(paths["ollama"]))
    monkeypatch.setenv("HOME", str(paths["home"]))
    monkeypatch.delenv("HF_HOME", raising=False)
    paths["lmstudio"] = paths["home"] / ".lmstudio" / "models"
    return paths


def snapshot(*roots: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``roots`` with its size, mtime and link target: a scan must change none of them."""
    result = {}
    for folder, dirs, files in (step for root in roots for step in os.walk(root)):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            result[str(path)] = (info.st_size, info.st_mtime_ns, os.readlink(path) if path.is_symlink() else "")
    return result


def by_reference(found) -> dict:
    return {model.reference: model for model in found}


def test_nothing_found_without_stores_and_huggingface_hub_is_not_imported(stores):
    (stores["hf"] / "models--org--no-gguf" / "snapshots" / COMMIT).mkdir(parents=True)  # a cache with no GGUF
    (stores["hf"] / "models--org--no-gguf" / "snapshots" / COMMIT / "config.json").write_text("{}")
    code = "import sys; from tuitune.discovery import discover; print(discover(), 'huggingface_hub' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.split() == ["[]", "False"]


def test_the_hf_cache_hf_hub_download_fills_is_found(stores, smollm_path: Path, tmp_path: Path):
    from huggingface_hub import hf_hub_download, scan_cache_dir

    shard1 = tiny_gguf(tmp_path / "served" / "big-Q8_0-00001-of-00002.gguf", file_type=7)
    shard2 = tiny_gguf(tmp_path / "served" / "big-Q8_0-00002-of-00002.gguf", file_type=7, template=None)
    files = {
        "smol.Q8_0.gguf": smollm_path,
        "sub/tiny-base.gguf": tiny_gguf(tmp_path / "served" / "tiny-base.gguf", file_type=1, template=None),
        shard1.name: shard1,
        shard2.name: shard2,
        "mmproj-f16.gguf": tiny_gguf(tmp_path / "served" / "mmproj.gguf", file_type=1),
        "README.md": REPO / "README.md",
    }
    with HubServer({ORG_REPO: Repo(files)}) as hub:
        for name in files:
            hf_hub_download(ORG_REPO, name, cache_dir=stores["hf"], endpoint=hub.endpoint)
    assert sum(repo.nb_files for repo in scan_cache_dir(stores["hf"]).repos) == len(files)  # the library's own view
    found = by_reference(discover())
    assert set(found) == {
        f"hf:{ORG_REPO}/smol.Q8_0.gguf@{COMMIT}",
        f"hf:{ORG_REPO}/sub/tiny-base.gguf@{COMMIT}",
        f"hf:{ORG_REPO}/{shard1.name}@{COMMIT}",  # a split model once, under its first shard; no mmproj
    }
    smol = found[f"hf:{ORG_REPO}/smol.Q8_0.gguf@{COMMIT}"]
    header = read_gguf(smollm_path)
    assert (smol.source, smol.problem, smol.size) == ("hf-cache", None, smollm_path.stat().st_size)
    assert (smol.quantization, smol.architecture, smol.has_chat_template) == (header.quantization, "llama", True)
    assert smol.path.is_symlink() and smol.path.parent.parent.name == "snapshots"  # HF's own link, followed
    base = found[f"hf:{ORG_REPO}/sub/tiny-base.gguf@{COMMIT}"]
    assert (base.quantization, base.has_chat_template) == ("F16", False)
    split = found[f"hf:{ORG_REPO}/{shard1.name}@{COMMIT}"]
    assert (split.shards, split.problem, split.quantization) == (2, None, "Q8_0")
    assert split.size == shard1.stat().st_size + shard2.stat().st_size


def test_ollama_and_lmstudio_stores_are_found(stores, smollm_path: Path, gemma_path: Path):
    ollama = stores["ollama"]
    link_or_copy(smollm_path, ollama / "blobs" / f"sha256-{'a' * 64}")
    link_or_copy(gemma_path, ollama / "blobs" / f"sha256-{'b' * 64}")
    ollama_manifest(ollama, "registry.ollama.ai/library/smollm2/135m", "sha256:" + "a" * 64)
    ollama_manifest(ollama, "registry.ollama.ai/someone/gemma3/270m", "sha256:" + "b" * 64)
    ollama_manifest(ollama, "hf.co/org/model/Q4_K_M", "sha256:" + "b" * 64)
    ollama_manifest(ollama, "registry.ollama.ai/library/nomodel/latest", "sha256:" + "c" * 64, layer_type="x/other")
    lms = stores["lmstudio"]
    link_or_copy(smollm_path, lms / "bartowski" / "SmolLM2-GGUF" / "SmolLM2-135M-Instruct-Q8_0.gguf")
    tiny_gguf(lms / "pub" / "split-GGUF" / "m-00001-of-00003.gguf")
    tiny_gguf(lms / "pub" / "split-GGUF" / "m-00002-of-00003.gguf")  # the third shard is missing
    tiny_gguf(lms / "pub" / "split-GGUF" / "mmproj-m-f16.gguf")
    tiny_gguf(lms / "toplevel.gguf")  # not PUBLISHER/REPO/FILE: not LM Studio's layout
    found = by_reference(discover())
    assert set(found) == {
        "ollama:smollm2:135m", "ollama:someone/gemma3:270m", "ollama:hf.co/org/model:Q4_K_M",
        "lmstudio:bartowski/SmolLM2-GGUF/SmolLM2-135M-Instruct-Q8_0.gguf", "lmstudio:pub/split-GGUF/m-00001-of-00003.gguf",
    }  # fmt: skip
    smol = found["ollama:smollm2:135m"]
    assert (smol.source, smol.architecture, smol.problem) == ("ollama", "llama", None)
    assert smol.size == smollm_path.stat().st_size and smol.has_chat_template
    gemma = found["ollama:someone/gemma3:270m"]
    assert (gemma.architecture, gemma.quantization, gemma.has_chat_template) == ("gemma3", "Q4_K_M", False)
    split = found["lmstudio:pub/split-GGUF/m-00001-of-00003.gguf"]
    assert split.shards == 2 and "split into 3 files but 2 are here" in split.problem
    assert found["lmstudio:bartowski/SmolLM2-GGUF/SmolLM2-135M-Instruct-Q8_0.gguf"].problem is None


def test_lmstudio_configured_downloads_folder_wins(stores, tmp_path: Path):
    elsewhere = tmp_path / "my-models"
    tiny_gguf(elsewhere / "pub" / "repo" / "a.gguf")
    tiny_gguf(stores["lmstudio"] / "pub" / "repo" / "default.gguf")
    settings = stores["home"] / ".lmstudio" / "settings.json"
    settings.write_text(json.dumps({"downloadsFolder": str(elsewhere)}))
    assert [model.reference for model in discover()] == ["lmstudio:pub/repo/a.gguf"]
    settings.write_text("{not json")  # a broken settings file: back to the default folder, no crash
    assert [model.reference for model in discover()] == ["lmstudio:pub/repo/default.gguf"]


def test_hostile_and_broken_entries_are_listed_with_their_problem_and_nothing_changes(
    stores, smollm_path: Path, tmp_path: Path
):
    outside = tiny_gguf(tmp_path / "outside" / "secret.gguf")
    ollama = stores["ollama"]
    (ollama / "blobs").mkdir(parents=True)
    truncated = ollama / "blobs" / f"sha256-{'1' * 64}"
    truncated.write_bytes(smollm_path.read_bytes()[:100_000])
    ollama_manifest(ollama, "registry.ollama.ai/library/truncated/latest", "sha256:" + "1" * 64)
    ollama_manifest(ollama, "registry.ollama.ai/library/escape/latest", "sha256:../../../etc/passwd")
    ollama_manifest(ollama, "registry.ollama.ai/library/missing/latest", "sha256:" + "2" * 64)
    ollama_manifest(ollama, "registry.ollama.ai/library/number/latest", 12345)
    (ollama / "blobs" / f"sha256-{'3' * 64}").symlink_to(outside)
    ollama_manifest(ollama, "registry.ollama.ai/library/linked/latest", "sha256:" + "3" * 64)
    broken = ollama / "manifests" / "registry.ollama.ai" / "library"
    (broken / "notjson").mkdir()
    (broken / "notjson" / "latest").write_bytes(b"\x00\xffGGUF not json")
    (broken / "deep").mkdir()
    (broken / "deep" / "latest").write_text("[" * 100_000 + "]" * 100_000)
    (broken / "huge").mkdir()
    (broken / "huge" / "latest").write_text(json.dumps({"layers": [], "pad": "x" * 2_000_000}))
    (broken / "nolayers").mkdir()
    (broken / "nolayers" / "latest").write_text('{"layers": "model"}')
    lms = stores["lmstudio"] / "pub" / "repo"
    lms.mkdir(parents=True)
    huge_count = bytearray(tiny_gguf(tmp_path / "h.gguf").read_bytes())
    huge_count[8:16] = (2**62).to_bytes(8, "little")  # the tensor count
    (lms / "huge-count.gguf").write_bytes(bytes(huge_count))
    (lms / "notgguf.gguf").write_text("hello")
    (lms / "empty.gguf").write_bytes(b"")
    (lms / "escape.gguf").symlink_to(outside)
    (lms / "dangling.gguf").symlink_to(lms / "gone.gguf")
    (lms / "\x1b]52;c;evil\x07.gguf").write_text("x")
    hf_repo = stores["hf"] / "models--org--broken"
    (hf_repo / "snapshots" / COMMIT).mkdir(parents=True)
    (hf_repo / "snapshots" / COMMIT / "model.gguf").symlink_to("../../blobs/" + "f" * 64)  # the blob is gone
    watched = (stores["hf"], stores["ollama"], stores["home"], outside.parent)
    before = snapshot(*watched)
    assert len(before) > 30

    found = by_reference(discover())

    assert snapshot(*watched) == before
    expected = {
        "ollama:truncated:latest": "truncated",
        "ollama:escape:latest": "not a sha256 digest",
        "ollama:number:latest": "not a sha256 digest",
        "ollama:missing:latest": "blob is missing",
        "ollama:linked:latest": "outside the store",
        "ollama:notjson:latest": "not valid JSON",
        "ollama:deep:latest": "not valid JSON (nested deeper than 100 levels",
        "ollama:huge:latest": "over 1,048,576 bytes",
        "ollama:nolayers:latest": "no 'layers' list",
        "lmstudio:pub/repo/huge-count.gguf": "tensor table of 4,611,686,018,427,387,904 tensors",
        "lmstudio:pub/repo/notgguf.gguf": "not a GGUF file",
        "lmstudio:pub/repo/empty.gguf": "not a GGUF file",
        "lmstudio:pub/repo/escape.gguf": "outside the models folder",
        "lmstudio:pub/repo/dangling.gguf": "does not exist",
        "lmstudio:pub/repo/\x1b]52;c;evil\x07.gguf": "not a GGUF file",
        f"hf:org/broken/model.gguf@{COMMIT}": "damaged",
    }
    assert set(found) == set(expected)
    for reference, problem in expected.items():
        assert problem in (found[reference].problem or ""), (reference, found[reference].problem)
    assert all(outside.parent not in model.path.parents for model in found.values())

    result = run_cli("models")  # the CLI lists them too, without a traceback and with no raw escape codes
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "␛]52;c;evil␇.gguf" in result.stdout
    assert snapshot(*watched) == before


def test_models_lists_found_models_and_json_has_them(stores, tmp_path: Path):
    quiet = run_cli("models")
    assert quiet.returncode == 0 and "found on disk" not in quiet.stdout
    assert json.loads(run_cli("models", "--json").stdout)["found"] == []
    size = tiny_gguf(stores["lmstudio"] / "pub" / "repo" / "tiny-Q4_K_M.gguf").stat().st_size
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("found on disk", 1)[1].splitlines()
    assert section[1].split() == ["SOURCE", "REFERENCE", "SIZE", "QUANT", "TEMPLATE", "PROBLEM"]
    expected = ["lmstudio", "lmstudio:pub/repo/tiny-Q4_K_M.gguf", str(size), "B", "Q4_K_M", "yes", "-"]
    assert section[2].split() == expected
    (row,) = json.loads(run_cli("models", "--json").stdout)["found"]
    assert row["reference"] == "lmstudio:pub/repo/tiny-Q4_K_M.gguf" and row["quant"] == "Q4_K_M"
    assert row["chat_template"] is True and row["problem"] is None and row["size"] == size


def test_models_add_then_chat_runs_the_found_file(stores, smollm_path: Path, tuitune_dirs):
    ollama = stores["ollama"]
    link_or_copy(smollm_path, ollama / "blobs" / f"sha256-{'a' * 64}")
    ollama_manifest(ollama, "registry.ollama.ai/library/smol/q4", "sha256:" + "a" * 64)
    before = snapshot(ollama)
    result = run_cli("models", "add", "ollama:smol:q4", "--kind", "chat", "--pair", "gemma-3-270m")
    assert result.returncode == 0, result.stderr
    assert "added 'smol-q4' (chat)" in result.stdout
    catalog = (tuitune_dirs["config"] / "models.toml").read_text()
    assert f'path = "{ollama / "blobs" / ("sha256-" + "a" * 64)}"' in catalog and 'pair = "gemma-3-270m"' in catalog
    rows = {row["id"]: row for row in json.loads(run_cli("models", "--json").stdout)["models"]}
    assert rows["smol-q4"]["installed"] and rows["smol-q4"]["family"] == "llama"
    chat = run_cli("chat", "smol-q4", "Say hi", "--max-tokens", "8", "--temperature", "0", "--json")
    assert chat.returncode == 0, chat.stderr
    answer = json.loads(chat.stdout)
    assert (answer["model"], answer["mode"]) == ("smol-q4", "chat") and answer["completion_tokens"] > 0
    assert snapshot(ollama) == before  # the store itself was never written


def test_models_add_refuses_with_one_clear_line(stores, tuitune_dirs):
    tiny_gguf(stores["lmstudio"] / "pub" / "repo" / "tiny.gguf")
    (stores["lmstudio"] / "pub" / "repo" / "bad.gguf").write_text("nope")
    ref = "lmstudio:pub/repo/tiny.gguf"
    one_clear_error(run_cli("models", "add", "lmstudio:pub/repo/nope.gguf", "--kind", "base"), "no model found on disk")
    one_clear_error(run_cli("models", "add", ref, "--kind", "instruct"), "--kind is 'instruct'", "base|chat")
    one_clear_error(run_cli("models", "add", ref), "--kind is missing")
    one_clear_error(run_cli("models", "add", ref, "--kind", "base", "--id", "gemma-3-270m"), "already in the catalog")
    one_clear_error(run_cli("models", "add", ref, "--kind", "base", "--pair", "nosuch"), "--pair 'nosuch'")
    one_clear_error(run_cli("models", "add", "lmstudio:pub/repo/bad.gguf", "--kind", "base"), "not a GGUF file")
    one_clear_error(run_cli("models", "add", ref, "--kind", "base", "--id", "../x"), "model id '../x'")
    assert not (tuitune_dirs["config"] / "models.toml").exists()  # nothing half-written by any refusal
    ok = run_cli("models", "add", ref, "--kind", "base", "--name", "Tiny one")
    assert ok.returncode == 0, ok.stderr
    one_clear_error(run_cli("models", "add", ref, "--kind", "base"), "id 'tiny' is already in the catalog")


# ---- the shared add function and "never listed twice" -----------------------------------------------------


def hf_cache_file(root: Path, repo_id: str, name: str, source: Path, commit: str = COMMIT) -> Path:
    """``name`` in a hand-built HF cache (blob, snapshot link, refs/main), as ``hf download`` leaves it."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    blob = link_or_copy(source, repo / "blobs" / ("f" * 64))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    link = repo / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def test_default_id_from_references():
    from tuitune.found_models import default_id

    assert default_id("ollama:smol:q4") == "smol-q4"
    assert default_id("ollama:hf.co/org/model:Q4_K_M") == "model-q4_k_m"
    assert default_id(f"hf:org/repo/sub/Big-Q8_0-00001-of-00002.gguf@{COMMIT}") == "big-q8_0"
    assert default_id("lmstudio:pub/repo/[red]x\x1b.gguf") == "red-x"
    assert default_id("lmstudio:pub/repo/%%%.gguf") == "found-model"


def test_unlisted_leaves_out_files_the_catalog_already_runs(stores, smollm_path: Path, tuitune_dirs, tmp_path: Path):
    from tuitune.catalog import add_user_entry, load_catalog
    from tuitune.found_models import unlisted

    ollama = stores["ollama"]
    blob = link_or_copy(smollm_path, ollama / "blobs" / f"sha256-{'a' * 64}")
    ollama_manifest(ollama, "registry.ollama.ai/library/smol/q4", "sha256:" + "a" * 64)
    ollama_manifest(ollama, "registry.ollama.ai/library/other/q4", "sha256:" + "b" * 64)  # blob missing: a problem
    hf_cache_file(stores["hf"], ORG_REPO, "smol.Q8_0.gguf", smollm_path)
    tiny_gguf(stores["lmstudio"] / "pub" / "repo" / "tiny.gguf")
    found = discover()
    assert len(found) == 4
    assert [m.reference for m in unlisted(found, load_catalog())] == [m.reference for m in found]
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "smol.gguf").symlink_to(blob)  # a path entry through a link: the same file
    add_user_entry({"id": "mine", "name": "mine", "kind": "chat", "family": "llama", "mode": "chat",
                    "source": {"path": str(tmp_path / "links" / "smol.gguf")}})  # fmt: skip
    add_user_entry({"id": "pulled", "name": "pulled", "kind": "chat", "family": "llama", "mode": "chat",
                    "source": {"hf": ORG_REPO, "file": "smol.Q8_0.gguf"}})  # fmt: skip
    left = [model.reference for model in unlisted(found, load_catalog())]
    assert left == ["ollama:other:q4", "lmstudio:pub/repo/tiny.gguf"]


def test_add_found_writes_an_entry_or_nothing_with_the_cli_messages(stores, tuitune_dirs):
    from tuitune.errors import TuituneError
    from tuitune.found_models import add_found

    path = tiny_gguf(stores["lmstudio"] / "pub" / "repo" / "tiny-Q4_K_M.gguf")
    (stores["lmstudio"] / "pub" / "repo" / "bad.gguf").write_text("nope")
    ref, user = "lmstudio:pub/repo/tiny-Q4_K_M.gguf", tuitune_dirs["config"] / "models.toml"
    refusals = [
        ((ref, "instruct"), {}, "--kind is 'instruct'"),
        ((ref, None), {}, "--kind is missing"),
        ((ref, "base"), {"model_id": "gemma-3-270m"}, "already in the catalog"),
        ((ref, "base"), {"pair": "nosuch"}, "--pair 'nosuch' is not a model in the catalog"),
        ((ref, "base"), {"model_id": "../x"}, "model id '../x'"),
        (("lmstudio:pub/repo/bad.gguf", "base"), {}, "not a GGUF file"),
        (("lmstudio:pub/repo/nope.gguf", "base"), {}, "no model found on disk"),
    ]
    for args, kwargs, message in refusals:
        with pytest.raises(TuituneError, match=re.escape(message)):
            add_found(*args, **kwargs)
    assert not user.exists()
    added = add_found(ref, "chat", pair="gemma-3-270m", name="Tiny [b]one[/b]")
    assert (added.id, added.catalog_file, added.model.path) == ("tiny-q4_k_m", user, path)
    assert added.fields == {"id": "tiny-q4_k_m", "name": "Tiny [b]one[/b]", "kind": "chat", "family": "llama",
                            "mode": "chat", "pair": "gemma-3-270m", "size": path.stat().st_size, "quant": "Q4_K_M",
                            "description": f"found on disk: {ref}", "source": {"path": str(path)}}  # fmt: skip
    from tuitune.catalog import load_catalog

    entry = load_catalog().get("tiny-q4_k_m")
    assert (entry.kind, entry.pair, entry.source.path) == ("chat", "gemma-3-270m", path)


def test_models_does_not_list_an_added_model_as_found_again(stores, smollm_path: Path):
    ollama = stores["ollama"]
    link_or_copy(smollm_path, ollama / "blobs" / f"sha256-{'a' * 64}")
    ollama_manifest(ollama, "registry.ollama.ai/library/smol/q4", "sha256:" + "a" * 64)
    tiny_gguf(stores["lmstudio"] / "pub" / "repo" / "tiny.gguf")

    def references() -> list[str]:
        return [row["reference"] for row in json.loads(run_cli("models", "--json").stdout)["found"]]

    assert references() == ["ollama:smol:q4", "lmstudio:pub/repo/tiny.gguf"]
    assert run_cli("models", "add", "ollama:smol:q4", "--kind", "chat").returncode == 0
    assert references() == ["lmstudio:pub/repo/tiny.gguf"]
    listing = run_cli("models").stdout
    assert "found on disk (1;" in listing and "ollama:smol:q4" not in listing.split("found on disk", 1)[1]
