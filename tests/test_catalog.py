"""The catalog: shipped demo pair, user overrides, and a clear error for every kind of bad entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tuitune.catalog import load_catalog, parse_catalog_file
from tuitune.errors import CatalogError, ModelNotFoundError
from tuitune.sources import is_installed

GOOD_ENTRY = """
[[model]]
id = "my-model"
name = "My model"
kind = "chat"
family = "llama"
mode = "chat"
source = { path = "my-model.gguf" }
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_catalog_has_the_demo_pair_installed(catalog):
    gemma = catalog.get("gemma-3-270m")
    smollm = catalog.get("smollm2-135m-instruct")
    assert (gemma.kind, gemma.mode, gemma.pair) == ("base", "raw", "smollm2-135m-instruct")
    assert (smollm.kind, smollm.mode, smollm.pair) == ("chat", "chat", "gemma-3-270m")
    assert gemma.source.kind == smollm.source.kind == "pypi"
    assert is_installed(gemma) and is_installed(smollm)


def test_user_entries_override_shipped_ones_and_add_new(tmp_path: Path):
    user = write(
        tmp_path / "user.toml",
        GOOD_ENTRY
        + """
[[model]]
id = "smollm2-135m-instruct"
name = "My SmolLM"
kind = "chat"
family = "llama"
pair = "gemma-3-270m"
source = { path = "/models/smol.gguf" }
""",
    )
    catalog = load_catalog(user=user)
    assert catalog.get("smollm2-135m-instruct").name == "My SmolLM"
    assert catalog.get("smollm2-135m-instruct").source.path == Path("/models/smol.gguf")
    assert catalog.get("my-model").source.path == tmp_path / "my-model.gguf"  # relative to the catalog file
    assert catalog.ids()[:2] == ["gemma-3-270m", "smollm2-135m-instruct"]
    assert not is_installed(catalog.get("my-model"))


def test_unknown_model_suggests_close_ids(catalog):
    with pytest.raises(ModelNotFoundError, match="did you mean smollm2-135m-instruct"):
        catalog.get("smollm2-135m-instrukt")


ENDPOINT = """
[[model]]
id = "remote"
name = "Remote"
kind = "endpoint"
family = "remote"
base_url = "http://127.0.0.1:8000/v1"
model = "m"
"""

BAD_CATALOGS = [
    ("syntax", '[[model]]\nid = "x"\nname = "X\n', ["line 3", "TOML syntax error"]),
    ("kind", GOOD_ENTRY.replace('kind = "chat"', 'kind = "instruct"'), ["line 2", "my-model", "unknown kind 'instruct'", "base, chat, finetuned, endpoint"]),
    ("duplicate", GOOD_ENTRY + "\n" + GOOD_ENTRY, ["line 11", "model entry #2", "duplicate id 'my-model'", "line 2"]),
    ("missing", GOOD_ENTRY.replace('family = "llama"\n', ""), ["line 2", "my-model", "missing field 'family'"]),
    ("pair", GOOD_ENTRY.replace('mode = "chat"', 'mode = "chat"\npair = "nobody"'), ["line 2", "my-model", "pair 'nobody' is not a model"]),
    ("field", GOOD_ENTRY.replace('mode = "chat"', 'mode = "chat"\nfamilly = "x"'), ["my-model", "unknown field(s) familly"]),
    ("source", GOOD_ENTRY.replace('{ path = "my-model.gguf" }', '{ url = "x" }'), ["my-model", "needs exactly one of pypi, hf, path"]),
    ("mode", GOOD_ENTRY.replace('mode = "chat"', 'mode = "instruct"'), ["my-model", "mode 'instruct' is not one of raw, chat"]),
    ("no source", GOOD_ENTRY.replace('source = { path = "my-model.gguf" }', ""), ["my-model", "missing field 'source'"]),
    ("train weights", GOOD_ENTRY + 'train_weights = { hf = "no-slash" }\n', ["my-model", "train_weights hf = 'no-slash' is not a Hub repo id"]),
    ("train weights table", GOOD_ENTRY + 'train_weights = "org/name"\n', ["my-model", "'train_weights' must be a table"]),
    ("endpoint url", ENDPOINT.replace("http://127.0.0.1:8000/v1", "127.0.0.1:8000"), ["remote", "must be an http(s) URL"]),
    ("endpoint key", ENDPOINT + 'api_key_env = "sk-abc123-not-a-name"\n', ["remote", "NAME of an environment variable"]),
    ("endpoint auth header", ENDPOINT + 'headers = { Authorization = "Bearer x" }\n', ["remote", "the key goes in api_key_env"]),
    ("endpoint timeout", ENDPOINT + "timeout = -1\n", ["remote", "timeout must be a positive number"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "expected"), BAD_CATALOGS, ids=[c[0] for c in BAD_CATALOGS])
def test_bad_catalog_names_file_entry_and_fix(tmp_path: Path, name: str, text: str, expected: list[str]):
    path = write(tmp_path / "models.toml", text)
    with pytest.raises(CatalogError) as caught:
        load_catalog(user=path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_every_entry_line_is_found(tmp_path: Path):
    path = write(tmp_path / "models.toml", GOOD_ENTRY + GOOD_ENTRY.replace("my-model", "other"))
    assert [entry.line for entry in parse_catalog_file(path)] == [2, 10]


def test_cli_reports_a_bad_user_catalog_in_one_line(tuitune_dirs):
    write(tuitune_dirs["config"] / "models.toml", GOOD_ENTRY.replace('kind = "chat"', 'kind = "instruct"'))
    result = run_cli("models")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown kind 'instruct'" in lines[0] and "models.toml, line 2" in lines[0]


def test_models_json_lists_ids_kinds_pairs_and_installed():
    import json

    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)["models"]}
    assert rows["gemma-3-270m"]["installed"] and rows["smollm2-135m-instruct"]["installed"]
    assert rows["gemma-3-270m"]["pair"] == "smollm2-135m-instruct"
    assert set(rows["gemma-3-270m"]) >= {"id", "kind", "family", "pair", "source", "size", "installed"}


def test_models_table_is_plain_text():
    result = run_cli("models")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.strip().splitlines()
    assert header.split() == ["ID", "KIND", "FAMILY", "PAIR", "SOURCE", "SIZE", "INSTALLED"]
    assert any(row.startswith("gemma-3-270m ") and row.rstrip().endswith("yes") for row in rows)


def test_shipped_hub_pairs_are_complete(catalog):
    """Every Hub model names its sibling, and the pair goes both ways (base ↔ chat), so Compare pair works."""
    hub = [entry for entry in catalog if entry.source is not None and entry.source.kind == "hf"]
    assert {"llama-2-7b", "llama-2-7b-chat", "qwen2.5-0.5b", "tinyllama-1.1b-chat"} <= {e.id for e in hub}
    for entry in hub:
        sibling = catalog.get(entry.pair)
        assert {entry.kind, sibling.kind} == {"base", "chat"}, entry.id
        assert (entry.source.file or entry.source.pattern).lower().endswith(".gguf")


def test_hf_source_needs_a_file_or_a_pattern(tmp_path: Path):
    from tuitune.catalog import load_catalog

    user = tmp_path / "models.toml"
    base = '[[model]]\nid = "x"\nname = "X"\nkind = "base"\nfamily = "llama"\n'
    user.write_text(base + 'source = { hf = "org/repo" }\n')
    with pytest.raises(CatalogError, match=r"line 1.*either 'file'.*or 'pattern'"):
        load_catalog(user=user)
    user.write_text(base + 'source = { hf = "repo-without-org", file = "a.gguf" }\n')
    with pytest.raises(CatalogError, match="not a Hub repo id"):
        load_catalog(user=user)
    user.write_text(base + 'source = { hf = "org/repo", pattern = "*Q4_K_M.gguf", revision = "v1" }\n')
    entry = load_catalog(user=user).get("x")
    assert entry.source.pattern == "*Q4_K_M.gguf" and entry.source.revision == "v1"


def test_endpoint_and_train_weights_fields_load(tmp_path: Path):
    text = ENDPOINT + 'api_key_env = "MY_KEY"\nheaders = { X-Team = "lab" }\nparameters = { top_k = 20 }\ntimeout = 5\n'
    text += GOOD_ENTRY + 'train_weights = { hf = "org/name", revision = "v1" }\n'
    catalog = load_catalog(user=write(tmp_path / "models.toml", text))
    remote = catalog.get("remote").endpoint
    assert remote == {"base_url": "http://127.0.0.1:8000/v1", "model": "m", "api_key_env": "MY_KEY",
                      "headers": {"X-Team": "lab"}, "parameters": {"top_k": 20}, "timeout": 5.0}  # fmt: skip
    weights = catalog.get("my-model").train_weights
    assert (weights.repo, weights.revision) == ("org/name", "v1")


# -- limits: input that once crashed the loader with a Python error is a CatalogError naming the file ---------


@pytest.mark.parametrize(
    "text, problem",
    [
        ("x = " + "[" * 100_000 + "]" * 100_000, "nested deeper than 100 levels"),  # RecursionError
        ("x = " + "{ a = " * 101 + "1" + " }" * 101, "x is nested deeper than 100 levels"),
        ("x" + ".a" * 3000 + " = 1", "line 1: a dotted key nested deeper than 100 levels"),  # tomllib: quadratic
        (GOOD_ENTRY + "size = " + "1" * 5000, "a number with more than 4,300 digits"),  # ValueError
        (GOOD_ENTRY + "size = 18446744073709551616", "the integer at model[0].size does not fit in 64 bits"),
    ],
    ids=["100000-deep", "101-deep", "dotted-3000", "5000-digits", "2^64"],
)
def test_toml_past_its_limits_is_a_catalog_error(tmp_path: Path, text: str, problem: str):
    path = write(tmp_path / "models.toml", text)
    with pytest.raises(CatalogError, match=rf"models\.toml: {re.escape(problem)}"):
        parse_catalog_file(path)


@pytest.mark.parametrize(
    "field, problem",
    [
        (
            'source = { path = "~nosuchuser-tuitune/m.gguf" }',
            "source path '~nosuchuser-tuitune/m.gguf' starts with an unknown ~user",
        ),
        ('source = { path = "m\\u0000.gguf" }', "source path contains a NUL character"),
    ],
)
def test_unusable_paths_are_catalog_errors(tmp_path: Path, field: str, problem: str):
    """Path.expanduser raised RuntimeError for an unknown ~user; a NUL byte failed later, far from the catalog."""
    path = write(tmp_path / "models.toml", GOOD_ENTRY.replace('source = { path = "my-model.gguf" }', field))
    with pytest.raises(CatalogError, match=rf"line 2: model entry #1 \(id 'my-model'\): {problem}"):
        parse_catalog_file(path)


@pytest.mark.parametrize("timeout", ["nan", "inf"])
def test_an_endpoint_timeout_must_be_finite(tmp_path: Path, timeout: str):
    path = write(tmp_path / "models.toml", ENDPOINT + f"timeout = {timeout}\n")
    with pytest.raises(CatalogError, match="timeout must be a positive number of seconds"):
        parse_catalog_file(path)
