"""`ORG/REPO[:QUANT]` references: parsing, choosing the file, and running one from the Hugging Face cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tuitune.containment import UnsafeNameError
from tuitune.errors import ModelFileError, TuituneError
from tuitune.references import AmbiguousReferenceError, Reference, choose_file, parse_reference, quant_of

REPO_FILES = [
    "README.md",
    "Qwen3-0.6B-Q4_K_M.gguf",
    "Qwen3-0.6B-Q4_K_S.gguf",
    "Qwen3-0.6B-IQ4_XS.gguf",
    "Qwen3-0.6B-Q8_0.gguf",
    "Qwen3-0.6B-F16.gguf",
    "mmproj-Qwen3-F16.gguf",
    "big/Qwen3-0.6B-Q6_K-00001-of-00002.gguf",
    "big/Qwen3-0.6B-Q6_K-00002-of-00002.gguf",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unsloth/Qwen3-0.6B-GGUF", Reference("unsloth/Qwen3-0.6B-GGUF", None)),
        ("unsloth/Qwen3-0.6B-GGUF:q4_k_m", Reference("unsloth/Qwen3-0.6B-GGUF", "q4_k_m")),
        ("unsloth/Qwen3-0.6B-GGUF:", Reference("unsloth/Qwen3-0.6B-GGUF", None)),
        ("smollm2-135m-instruct", None),  # a catalog id
        ("models/x.gguf", None),  # a path
        ("./org/repo", None),
        ("/abs/org", None),
        ("a/b/c", None),
    ],
)
def test_parse_reference(text, expected):
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text", ["org/..:q4", "org/re--po", "org/repo:q4$k", "org/repo:\x1b[31mQ4", "org/repo:" + "q" * 40]
)
def test_hostile_references_are_refused_with_one_line(text):
    with pytest.raises(UnsafeNameError) as caught:
        parse_reference(text)
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


@given(st.text(max_size=60))
def test_parse_reference_never_crashes(text):
    try:
        reference = parse_reference(text)
    except UnsafeNameError:
        return
    if reference is not None:
        assert "/" in reference.repo and ".." not in reference.repo


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("Q4_K_M", "Qwen3-0.6B-Q4_K_M.gguf"),
        ("q4_k_m", "Qwen3-0.6B-Q4_K_M.gguf"),  # case-insensitive
        ("iq4_xs", "Qwen3-0.6B-IQ4_XS.gguf"),
        ("Q8_0", "Qwen3-0.6B-Q8_0.gguf"),
        ("f16", "Qwen3-0.6B-F16.gguf"),  # not the vision projector
        ("q6_k", "big/Qwen3-0.6B-Q6_K-00001-of-00002.gguf"),  # a split model by its first shard
        (None, "Qwen3-0.6B-Q4_K_M.gguf"),  # no tag: Q4_K_M
    ],
)
def test_choose_file(tag, expected):
    assert choose_file(Reference("org/repo", tag), REPO_FILES) == expected


def test_a_partial_tag_matches_nothing_and_lists_the_tags():
    with pytest.raises(ModelFileError) as caught:
        choose_file(Reference("org/repo", "q4_k"), REPO_FILES)
    assert "org/repo:Q4_K_M" in str(caught.value) and "org/repo:Q4_K_S" in str(caught.value)


def test_one_tag_in_two_files_is_ambiguous():
    with pytest.raises(AmbiguousReferenceError, match=r"a/m-Q8_0\.gguf, b/m-Q8_0\.gguf"):
        choose_file(Reference("org/repo", "Q8_0"), ["a/m-Q8_0.gguf", "b/m-Q8_0.gguf"])


def test_no_tag_without_q4_k_m_lists_the_tags():
    files = ["m-Q8_0.gguf", "m-Q5_K_M.gguf"]
    with pytest.raises(AmbiguousReferenceError) as caught:
        choose_file(Reference("org/repo", None), files)
    assert "org/repo:Q8_0" in str(caught.value) and "org/repo:Q5_K_M" in str(caught.value)
    assert choose_file(Reference("org/repo", None), ["only-Q8_0.gguf"]) == "only-Q8_0.gguf"


def test_missing_tag_and_no_gguf_are_clear():
    with pytest.raises(ModelFileError, match=r"matches ':q2_k'.*org/repo:Q4_K_M"):
        choose_file(Reference("org/repo", "q2_k"), REPO_FILES)
    with pytest.raises(TuituneError, match="has no GGUF file"):
        choose_file(Reference("org/repo", None), ["model.safetensors"])


def test_quant_of():
    assert quant_of("a/Model-q4_k_m.gguf") == "Q4_K_M"
    assert quant_of("model-IQ4_XS.gguf") == "IQ4_XS"
    assert quant_of("model.gguf") is None


# --- with the real Hugging Face cache and the local Hub stand-in --------------------------------------------------
MULTI_REPO = "example/Multi-GGUF"


@pytest.fixture
def hub(smollm_path, monkeypatch: pytest.MonkeyPatch, tmp_path):
    from tests.support.hub_server import HubServer, Repo
    from tests.support.model_files import SMOL_FILE, SMOL_REPO

    repos = {
        SMOL_REPO: Repo({SMOL_FILE: smollm_path}),
        MULTI_REPO: Repo({"m-Q8_0.gguf": smollm_path, "m-Q5_K_M.gguf": smollm_path, "mmproj-m-F16.gguf": smollm_path}),
    }
    with HubServer(repos) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH"):
            monkeypatch.delenv(name, raising=False)
        yield server


def test_pull_a_reference_then_chat_and_compare_with_it_offline(hub, tuitune_dirs):
    from huggingface_hub import scan_cache_dir

    from tests.conftest import run_cli
    from tests.support.model_files import SMOL_FILE, SMOL_REPO
    from tuitune import hf_cache

    reference = f"{SMOL_REPO}:q4_1"
    missing = run_cli("chat", reference, "Hi", "--max-tokens", "4")
    assert missing.returncode != 0 and f"tuitune pull {reference}" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    pulled = run_cli("pull", reference, "--quiet")
    assert pulled.returncode == 0, pulled.stderr
    assert f"tuitune chat {reference}" in pulled.stdout
    repos = {repo.repo_id: repo for repo in scan_cache_dir(hf_cache.cache_root()).repos}
    assert [file.file_name for revision in repos[SMOL_REPO].revisions for file in revision.files] == [SMOL_FILE]
    assert not (tuitune_dirs["config"] / "models.toml").exists()  # the catalog was not changed

    offline = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing may be fetched now
    again = run_cli("pull", reference, env=offline)
    assert again.returncode == 0 and "already downloaded" in again.stdout
    answer = run_cli("chat", f"{SMOL_REPO}:Q4_1", "What is 2 + 3?", "--max-tokens", "12", "--temperature", "0", "--json", env=offline)  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    assert "5" in answer.stdout
    compared = run_cli("compare", "Say hi", "--models", f"{SMOL_REPO},smollm2-135m-instruct", "--max-tokens", "6",
                       "--temperature", "0", "--json", env=offline)  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    assert SMOL_REPO in compared.stdout  # the reference is the model's name in the results


def test_a_reference_pull_that_is_ambiguous_lists_the_tags_and_writes_nothing(hub, tuitune_dirs):
    from tests.conftest import run_cli
    from tuitune import hf_cache

    result = run_cli("pull", MULTI_REPO)
    assert result.returncode != 0
    line = result.stderr.strip()
    assert f"{MULTI_REPO}:Q8_0" in line and f"{MULTI_REPO}:Q5_K_M" in line and "mmproj" not in line
    assert "\n" not in line
    assert not hf_cache.repo_folder(MULTI_REPO).exists()
    pulled = run_cli("pull", f"{MULTI_REPO}:Q5_K_M", "--quiet")
    assert pulled.returncode == 0, pulled.stderr
    assert hf_cache.snapshot_files(MULTI_REPO) == ["m-Q5_K_M.gguf"]
    wrong = run_cli("chat", f"{MULTI_REPO}:Q8_0", "Hi", env={"HF_HUB_OFFLINE": "1"})
    assert wrong.returncode != 0 and f"tuitune pull {MULTI_REPO}:Q8_0" in wrong.stderr
    assert f"it holds {MULTI_REPO}:Q5_K_M" in wrong.stderr


def test_a_reference_finds_what_the_library_downloaded(hub, tuitune_dirs):
    from huggingface_hub import hf_hub_download

    from tests.support.model_files import SMOL_FILE, SMOL_REPO
    from tuitune import hf_cache
    from tuitune.engines import resolve_model

    fetched = hf_hub_download(SMOL_REPO, SMOL_FILE, cache_dir=hf_cache.cache_root(), endpoint=hub.endpoint, token=False)
    for text in (SMOL_REPO, f"{SMOL_REPO}:Q4_1", f"{SMOL_REPO}:q4_1"):
        model = resolve_model(text)
        assert model.entry is None and str(model.path) == fetched and model.id == text
    with pytest.raises(ModelFileError, match=f"`tuitune pull {SMOL_REPO}:Q8_0`"):
        resolve_model(f"{SMOL_REPO}:Q8_0")


def test_models_add_takes_a_reference_and_train_points_at_it(hub, tuitune_dirs):
    from tests.conftest import run_cli
    from tests.support.model_files import SMOL_FILE, SMOL_REPO

    unknown = run_cli("train", "--name", "t", "--base", f"{SMOL_REPO}:Q4_1", "--data", "data/tuitune-identity.jsonl")
    assert unknown.returncode != 0 and f"tuitune models add {SMOL_REPO}:Q4_1" in unknown.stderr
    missing = run_cli("models", "add", f"{SMOL_REPO}:Q4_1", "--kind", "chat")
    assert missing.returncode != 0 and f"tuitune pull {SMOL_REPO}:Q4_1" in missing.stderr
    assert run_cli("pull", f"{SMOL_REPO}:Q4_1", "--quiet").returncode == 0
    added = run_cli("models", "add", f"{SMOL_REPO}:Q4_1", "--kind", "chat")
    assert added.returncode == 0, added.stderr
    assert "smollm2-135m-instruct-q4_1" in added.stdout
    listing = run_cli("models", "--json").stdout
    assert '"id": "smollm2-135m-instruct-q4_1"' in listing and SMOL_FILE not in listing.split('"found"')[1]
    written = (tuitune_dirs["config"] / "models.toml").read_text()
    assert f'hf = "{SMOL_REPO}"' in written and f'file = "{SMOL_FILE}"' in written  # the repo file, not a path
    assert "revision" not in written  # main points at the cached commit
    answer = run_cli("chat", "smollm2-135m-instruct-q4_1", "Hi", "--max-tokens", "4", env={"HF_HUB_OFFLINE": "1"})
    assert answer.returncode == 0, answer.stderr
