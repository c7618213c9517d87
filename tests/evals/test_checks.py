"""Prompt-suite checks: each kind on hand-made answers, scoring, and checks in suite TOML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO
from tuitune.errors import SuiteError
from tuitune.evals.checks import CHECK_KINDS, Check, CheckResult, parse_check, repetition, run_checks, score
from tuitune.suites import load_suite

DOG_ANSWER = (
    "Training your dog to sit takes patience. Hold a treat close to its nose, then move your hand up so its "
    'head follows and its bottom lowers. Once it sits, say "sit", give the treat and praise it. Repeat a '
    "few short sessions every day."
)
RAMBLE = (
    "Tell me how to train my dog to sit. I want to know how to train my dog to sit because he never listens. "
) * 3


def one(check: Check, text: str = DOG_ANSWER, tokens: int = 50, finish: str = "stop") -> CheckResult:
    [result] = run_checks([check], text, tokens, finish)
    return result


# --- each kind -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "text", "passed", "detail"),
    [
        (Check("contains", "sit"), DOG_ANSWER, True, 'has "sit"'),
        (Check("contains", "SIT"), DOG_ANSWER, True, 'has "SIT"'),
        (Check("contains", "SIT", case_sensitive=True), DOG_ANSWER, False, 'missing "SIT"'),
        (Check("contains", "leash"), DOG_ANSWER, False, 'missing "leash"'),
        (Check("not_contains", "Customer:"), "Agent: Thanks, I'll check it.", True, 'no "Customer:"'),
        (Check("not_contains", "customer:"), "Agent: ok\nCustomer: thanks", False, 'has "customer:"'),
        (Check("not_contains", "customer:", case_sensitive=True), "Customer: thanks", True, 'no "customer:"'),
        (Check("equals", "5"), "  5\n", True, 'equals "5"'),
        (Check("equals", "Paris."), "paris.", True, 'equals "Paris."'),
        (Check("equals", "Paris.", case_sensitive=True), "paris.", False, 'is not "Paris."'),
        (Check("equals", "5"), "The answer is 5.", False, 'is not "5"'),
        (Check("regex", r"\b(7|seven)\b"), "There are Seven days.", True, r"matches /\b(7|seven)\b/"),
        (Check("regex", r"\b(7|seven)\b", case_sensitive=True), "Seven days.", False, r"no match for /\b(7|seven)\b/"),
        (Check("regex", r"\b5\b"), "2 + 3 = 15", False, r"no match for /\b5\b/"),
    ],
)
def test_text_checks(check: Check, text: str, passed: bool, detail: str) -> None:
    result = one(check, text)
    assert (result.passed, result.detail) == (passed, detail)
    assert result.check is check


def test_max_repetition_passes_an_answer_and_fails_a_ramble() -> None:
    check = Check("max_repetition", 0.3)
    assert one(check, DOG_ANSWER).passed
    failed = one(check, RAMBLE)
    assert not failed.passed
    assert failed.detail.startswith("repetition 0.") and failed.detail.endswith("> 0.30")


@pytest.mark.parametrize(
    ("check", "tokens", "passed", "detail"),
    [
        (Check("min_tokens", 20), 20, True, "20 tokens ≥ 20"),
        (Check("min_tokens", 20), 19, False, "19 tokens < 20"),
        (Check("max_tokens", 200), 200, True, "200 tokens ≤ 200"),
        (Check("max_tokens", 200), 256, False, "256 tokens > 200"),
    ],
)
def test_token_checks_are_inclusive(check: Check, tokens: int, passed: bool, detail: str) -> None:
    result = one(check, tokens=tokens)
    assert (result.passed, result.detail) == (passed, detail)


@pytest.mark.parametrize(("finish", "passed"), [("stop", True), ("length", False), ("cancelled", False)])
def test_stops_cleanly(finish: str, passed: bool) -> None:
    result = one(Check("stops_cleanly"), finish=finish)
    assert (result.passed, result.detail) == (passed, f"finish: {finish}")


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ('{"name": "Tuitune"}', True),
        ("  [1, 2, 3]\n", True),
        ('Here it is:\n```json\n{"name": "Tuitune"}\n```\nAnything else?', True),
        ('```\n{"a": 1}\n```', True),
        ('{"name": "Tuitune",}', False),
        ("Sure! The name is Tuitune.", False),
        ('```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```', False),  # two blocks: which one is the answer?
        ('```json\n{"a": \n```', False),
    ],
)
def test_json_valid(text: str, passed: bool) -> None:
    result = one(Check("json_valid"), text)
    assert result.passed is passed
    if passed:
        assert result.detail == "valid JSON"
    else:
        assert result.detail.startswith("not JSON"), result.detail


# --- repetition and score ----------------------------------------------------------------------------------------


def test_repetition_of_a_paragraph_said_three_times_is_high() -> None:
    paragraph = "The quick brown fox jumps over the lazy dog while the farmer watches from the porch. "
    assert repetition(paragraph * 3) > 0.6
    assert repetition(RAMBLE) > 0.6


def test_repetition_of_an_ordinary_answer_is_low() -> None:
    assert repetition(DOG_ANSWER) < 0.1
    assert repetition("Paris.") == 0.0
    assert repetition("") == 0.0


def test_repetition_counts_repeated_short_lines() -> None:
    dialogue = "Customer: ok\nAgent: thanks\nCustomer: ok\nAgent: thanks\nCustomer: ok\nAgent: thanks"
    assert repetition(dialogue) == pytest.approx(4 / 6)


def test_repetition_ignores_case_and_punctuation_and_uses_n() -> None:
    assert repetition("Sit, sit! SIT. sit?", n=1) == pytest.approx(3 / 4)
    assert repetition("Sit, sit! SIT. sit?", n=3) == pytest.approx(1 / 2)


def test_score_is_the_weighted_share_of_passed_checks() -> None:
    results = run_checks(
        [Check("contains", "sit", weight=3), Check("contains", "leash"), Check("stops_cleanly")], DOG_ANSWER, 40, "stop"
    )
    assert [r.passed for r in results] == [True, False, True]
    assert score(results) == pytest.approx(4 / 5)
    assert score([]) == 1.0
    assert score(run_checks([Check("contains", "leash")], DOG_ANSWER, 40, "stop")) == 0.0


@pytest.mark.parametrize(
    ("check", "label"),
    [
        (Check("contains", "sit"), 'contains "sit"'),
        (Check("not_contains", "Customer:"), 'without "Customer:"'),
        (Check("equals", "5", case_sensitive=True), 'equals "5" (exact case)'),
        (Check("regex", "^Tui"), "matches /^Tui/"),
        (Check("max_repetition", 0.3), "repetition ≤ 0.30"),
        (Check("max_repetition", 0.25, n=4), "repetition ≤ 0.25 (4-grams)"),
        (Check("min_tokens", 20), "min 20 tokens"),
        (Check("max_tokens", 200), "max 200 tokens"),
        (Check("stops_cleanly"), "stops cleanly"),
        (Check("json_valid"), "valid JSON"),
        (Check("contains", "x" * 50), 'contains "' + "x" * 31 + '…"'),
    ],
)
def test_labels_are_short(check: Check, label: str) -> None:
    assert check.label() == label


# --- parse_check ---------------------------------------------------------------------------------------------------


def test_parse_check_reads_every_kind() -> None:
    raws = {
        "contains": {"type": "contains", "value": "sit", "case_sensitive": True, "weight": 2},
        "not_contains": {"type": "not_contains", "value": "Customer:"},
        "regex": {"type": "regex", "value": r"\bsit\b"},
        "equals": {"type": "equals", "value": "5"},
        "max_repetition": {"type": "max_repetition", "value": 0.3, "n": 4},
        "min_tokens": {"type": "min_tokens", "value": 20},
        "max_tokens": {"type": "max_tokens", "value": 200},
        "stops_cleanly": {"type": "stops_cleanly"},
        "json_valid": {"type": "json_valid", "weight": 0.5},
        "judge_rubric": {"type": "judge_rubric", "rubric": "on topic"},  # graded by tests/evals/test_judge.py
    }
    assert set(raws) == set(CHECK_KINDS)
    checks = {kind: parse_check(raw, "here") for kind, raw in raws.items()}
    assert checks["contains"] == Check("contains", "sit", case_sensitive=True, weight=2.0)
    assert checks["max_repetition"] == Check("max_repetition", 0.3, n=4)
    assert isinstance(checks["max_repetition"].value, float)
    assert checks["min_tokens"] == Check("min_tokens", 20)
    assert checks["stops_cleanly"] == Check("stops_cleanly")
    assert checks["json_valid"].weight == 0.5
    assert parse_check({"type": "max_repetition", "value": 0}, "here").value == 0.0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("contains", "must be a table"),
        ({"value": "sit"}, "has no type; add type = one of contains, not_contains, regex"),
        ({"type": "includes", "value": "sit"}, 'unknown check type "includes"; use one of contains, not_contains'),
        ({"type": "contains"}, "contains check needs a value"),
        ({"type": "contains", "value": 5}, "contains check value must be a non-empty string"),
        ({"type": "equals", "value": "  "}, "equals check value must be a non-empty string"),
        ({"type": "regex", "value": "(sit"}, 'regex "(sit" is invalid (missing ), unterminated subpattern'),
        ({"type": "max_repetition"}, "max_repetition check needs a value: a number from 0 to 1"),
        ({"type": "max_repetition", "value": 30}, "max_repetition check value must be a number from 0 to 1"),
        ({"type": "max_repetition", "value": "0.3"}, "max_repetition check value must be a number from 0 to 1"),
        ({"type": "max_repetition", "value": 0.3, "n": 0}, "n (the word n-gram size) must be a whole number"),
        ({"type": "min_tokens", "value": 0}, "min_tokens check value must be a whole number of tokens of at least 1"),
        ({"type": "max_tokens", "value": 2.5}, "max_tokens check value must be a whole number"),
        ({"type": "max_tokens", "value": True}, "max_tokens check value must be a whole number"),
        (
            {"type": "stops_cleanly", "value": "yes"},
            "stops_cleanly check does not take value; its keys are type, weight",
        ),
        ({"type": "contains", "value": "sit", "n": 2}, "contains check does not take n"),
        ({"type": "contains", "value": "sit", "case": True}, "contains check does not take case"),
        ({"type": "contains", "value": "sit", "case_sensitive": "yes"}, "case_sensitive must be true or false"),
        ({"type": "contains", "value": "sit", "weight": 0}, "weight must be a positive number"),
        ({"type": "contains", "value": "sit", "weight": "heavy"}, "weight must be a positive number"),
    ],
)
def test_parse_check_rejects_malformed_checks(raw: object, message: str) -> None:
    with pytest.raises(SuiteError) as error:
        parse_check(raw, "suite.toml, line 7: check #1")
    text = str(error.value)
    assert text.startswith("suite.toml, line 7: check #1: ")
    assert message in text
    assert "\n" not in text


# --- suites ----------------------------------------------------------------------------------------------------------


SUITE = """\
name = "mini"

[[check]]
type = "stops_cleanly"

[[check]]  # rambling is the base model's tell
type = "max_repetition"
value = 0.3

[[prompt]]
id = "dog"
group = "control"
text = "Tell me how to train my dog to sit"

[[prompt.check]]
type = "contains"
value = "sit"
weight = 2

[[prompt]]
id = "mars"
text = "What do you think of Mars?"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_suite_and_prompt_checks_are_merged(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, SUITE))
    base = (Check("stops_cleanly"), Check("max_repetition", 0.3))
    assert suite.checks == base
    dog, mars = suite.prompts
    assert dog.checks == (*base, Check("contains", "sit", weight=2.0))
    assert mars.checks == base
    assert (dog.group, mars.group) == ("control", "")
    assert (dog.id, dog.text, dog.mode, dog.messages) == ("dog", "Tell me how to train my dog to sit", None, ())


def test_a_suite_without_checks_still_loads(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, '[[prompt]]\ntext = "hi"\n'))
    assert suite.checks == () and suite.prompts[0].checks == () and suite.prompts[0].group == ""


def test_inline_prompt_checks_fall_back_to_the_prompt_line(tmp_path: Path) -> None:
    text = '[[prompt]]\ntext = "hi"\n\n[[prompt]]\ntext = "2 + 3?"\ncheck = [{ type = "contains" }]\n'
    with pytest.raises(SuiteError, match=r"suite\.toml, line 4: prompt #2, check #1: contains check needs a value"):
        load_suite(write(tmp_path, text))
    ok = load_suite(write(tmp_path, text.replace('"contains" }', '"contains", value = "5" }')))
    assert ok.prompts[1].checks == (Check("contains", "5"),)


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ('type = "stops_cleanly"', 'type = "stop"', "line 3: check #1", 'unknown check type "stop"'),
        ("value = 0.3", "value = 3", "line 6: check #2", "max_repetition check value must be a number from 0 to 1"),
        ("weight = 2", "weight = -1", "line 15: prompt #1, check #1", "contains check weight must be a positive"),
        ('value = "sit"', "value = 5", "line 15: prompt #1, check #1", "contains check value must be a non-empty"),
        ('value = "sit"', 'value = "sit"\nn = 2', "line 15: prompt #1, check #1", "contains check does not take n"),
        ('group = "control"', "group = 1", "line 10: prompt #1", "group must be a string"),
        ("[[prompt.check]]", "[[prompt.checks]]", "line 10: prompt #1", "unknown field(s) checks"),
    ],
)
def test_malformed_suite_checks_name_file_and_line(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    assert old in SUITE
    path = write(tmp_path, SUITE.replace(old, new, 1))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    text = str(error.value)
    assert text.startswith(f"{path}, {where}: "), text
    assert message in text
    assert "\n" not in text


def test_a_misspelt_top_level_check_table_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, SUITE.replace("[[check]]", "[[checks]]"))
    with pytest.raises(SuiteError, match=r"unknown top-level key\(s\) checks; allowed: check, description, judge"):
        load_suite(path)


def test_the_shipped_suites_load_with_checks() -> None:
    why = load_suite(REPO / "suites" / "why-finetune.toml")
    assert [p.id for p in why.prompts] == ["dog", "mars", "taylor-swift", "amazon-agent", "dog-inst"]
    assert all(p.checks for p in why.prompts)
    assert Check("contains", "sit") in why.prompts[0].checks
    assert Check("not_contains", "Customer:") in why.prompts[3].checks

    identity = load_suite(REPO / "suites" / "identity.toml")
    assert all(p.group in ("identity", "control") for p in identity.prompts)
    groups = [p.group for p in identity.prompts]
    assert groups.count("identity") == 10 and groups.count("control") >= 3
    for prompt in identity.prompts:
        assert prompt.checks, prompt.id
        if prompt.group == "identity":
            assert Check("contains", "Tuitune") in prompt.checks
