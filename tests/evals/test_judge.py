"""`tuitune eval --judge`: verdict parsing, the swap logic, failures, template safety, and a real judged run.

The scripted judge is a ScriptedEngine whose reply is chosen from the prompt it is sent (the real Generation
machinery, the real runner and judge thread); the endpoint judge is a real local HTTP server; the last test runs
the real demo models with SmolLM2 as the judge.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, one_clear_error, run_cli
from tests.support.openai_stub import OpenAIStub
from tuitune.engines.base import Generation, Request
from tuitune.engines.scripted import ScriptedEngine
from tuitune.errors import SuiteError, TuituneError
from tuitune.evals.judge import JudgeConfig, JudgeParseError, fill, judge_sampling, parse_verdict
from tuitune.suites import load_suite

BASE, CHAT = "gemma-3-270m", "smollm2-135m-instruct"
JUDGE = "judge-model.gguf"  # resolves as a path; the patched open_engine hands out the scripted judge for it
GOOD, BAD = "GOOD answer: sit, then treat.", "bad answer rambles rambles"

SUITE = """\
name = "judged"

[judge]
pairwise = true

[[check]]
type = "judge_rubric"
rubric = "Explains {answer} clearly"
scale = "1-10"
threshold = 7

[[check]]
type = "stops_cleanly"

[[prompt]]
id = "dog"
text = "Train my dog {answer_b} to sit"

[[prompt]]
id = "mars"
text = "What about Mars?"

[[prompt.check]]
type = "judge_rubric"
rubric = "Mentions a planet"
scale = "pass/fail"
"""


# -- parsing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "kind", "value", "reason"),
    [
        ('{"score": 8, "reason": "clear"}', "1-10", 8, "clear"),
        ('Sure.\n```json\n{"score": 3, "reason": "vague"}\n```\nHope that helps.', "1-10", 3, "vague"),
        ('I think {"winner": "B", "reason": "shorter"} is right.', "pairwise", "B", "shorter"),
        ("The second one is better.\nREASON: it answers\nVERDICT: b", "pairwise", "B", "it answers"),
        ("VERDICT: tie", "pairwise", "tie", ""),
        ('{"verdict": "PASS"}', "pass/fail", "pass", ""),
        ("Fine.\nVERDICT: 10", "1-10", 10, ""),
        ('{"score": 9, "reason": "ok\\u001b[2J\\u0007 \\nnext"}', "1-10", 9, "ok␛[2J␇ next"),
    ],
)
def test_verdicts_that_parse(reply: str, kind: str, value: object, reason: str):
    verdict = parse_verdict(reply, kind)
    assert (verdict.value, verdict.reason) == (value, reason)
    assert "\x1b" not in verdict.reason and "\n" not in verdict.reason


@pytest.mark.parametrize(
    ("reply", "kind", "why"),
    [
        ("It is pretty good, 8 out of 10.", "1-10", "no verdict"),
        ('{"score": 11, "reason": "great"}', "1-10", "out of range"),
        ('{"score": 0}', "1-10", "out of range"),
        ('{"score": 7.5}', "1-10", "whole number"),
        ('{"score": "8"}', "1-10", "whole number"),
        ('{"score": true}', "1-10", "whole number"),
        ("VERDICT: 8/10", "1-10", "whole number"),
        ('{"winner": "C"}', "pairwise", "not one of a/b/tie"),
        ('{"winner": "A"} no wait {"winner": "B"}', "pairwise", "differ"),
        ("VERDICT: A\nactually let me think again", "pairwise", "no verdict"),
        ('{"verdict": "maybe"}', "pass/fail", "not one of pass/fail"),
        ('{"score": 5, "reason": 3}', "1-10", "reason"),
        ("", "pairwise", "no verdict"),
    ],
)
def test_verdicts_that_do_not_parse(reply: str, kind: str, why: str):
    with pytest.raises(JudgeParseError) as caught:
        parse_verdict(reply, kind)
    assert why in str(caught.value) and "\n" not in str(caught.value)


def test_placeholders_are_filled_once_and_answers_stay_literal():
    template = 'Q: {question}\nA: {answer_a}\nB: {answer_b}\nReply {"winner": "A"} {unknown_is_kept}'
    hostile = "I say {answer_b} and {question} and {{}} and {0} and {"
    text = fill(template, {"question": "Q?", "answer_a": hostile, "answer_b": "second"})
    assert text == f'Q: Q?\nA: {hostile}\nB: second\nReply {{"winner": "A"}} {{unknown_is_kept}}'


# -- suite validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("addition", "fragments"),
    [
        (
            '[judge]\nrubric_template = """\nGrade {answer}\nfor {anser} please\n"""\n',
            ["line 4", "{anser}", "unknown placeholder"],
        ),
        ('[judge]\npairwise_template = "Which of {answer_a}?"\n', ["line 2", "{answer_b}"]),
        ("[judge]\npairwise = 1\n", ["line 1", "pairwise must be true or false"]),
        ("[judge]\nrubrik_template = 'x'\n", ["does not take rubrik_template"]),
        ('[[check]]\ntype = "judge_rubric"\nrubric = "x"\nscale = "1-5"\n', ["line 1", 'scale must be "1-10"']),
        ('[[check]]\ntype = "judge_rubric"\nrubric = "x"\nscale = "pass/fail"\nthreshold = 7\n', ["threshold"]),
        ('[[check]]\ntype = "judge_rubric"\nrubric = "x"\nthreshold = 11\n', ["from 1 to 10"]),
        ('[[check]]\ntype = "judge_rubric"\n', ["needs rubric"]),
    ],
)
def test_bad_judge_settings_name_the_file_and_line(tmp_path: Path, addition: str, fragments: list[str]):
    path = tmp_path / "bad.toml"
    path.write_text(addition + '\n[[prompt]]\ntext = "hi"\n', encoding="utf-8")
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_cli_judge_usage_errors_are_one_line(tmp_path: Path):
    why = str(REPO / "suites" / "why-finetune.toml")
    one_clear_error(run_cli("eval", "--suite", why, "--models", CHAT, "--judge", CHAT), "no judged checks",
                    "judge_rubric", "why-finetune.toml")  # fmt: skip
    judged = str(REPO / "suites" / "why-finetune-judged.toml")
    one_clear_error(run_cli("eval", "--suite", judged, "--models", CHAT, "--judge", "no-such-judge"), "no-such-judge")
    one_clear_error(run_cli("eval", "--suite", judged, "--models", CHAT, "--judge-pairs", "a,b"), "only with --judge")
    one_clear_error(run_cli("eval", "--suite", judged, "--models", f"{BASE},{CHAT}", "--judge", CHAT,
                            "--judge-pairs", f"{BASE},nope"), "no column 'nope'")  # fmt: skip
    one_clear_error(run_cli("eval", "--suite", judged, "--models", CHAT, "--judge", CHAT), "at least two models")


# -- a scripted judge in the real runner ------------------------------------------------------------------
class RuleJudge(ScriptedEngine):
    """A judge whose reply is ``rule(prompt text)``: verdicts scripted from what the judge is shown."""

    def __init__(self, rule: Callable[[str], str], **kwargs):
        super().__init__("judge", chunk_size=1000, **kwargs)
        self.rule = rule
        self.prompts: list[str] = []

    def generate(self, request: Request) -> Generation:
        text = request.prompt or "\n".join(message.content for message in request.messages)
        self.prompts.append(text)
        self.requests.append(request)
        return Generation(lambda generation: self._produce(request, self.rule(text), generation))


def answers_in(prompt: str) -> list[str]:
    """The answers a default judge template shows, in order (each between <<< and >>>, after the question)."""
    return [block.split(">>>")[0].strip() for block in prompt.split("<<<")[2:]]


def pair_rule(pick: Callable[[list[str]], str]) -> Callable[[str], str]:
    def rule(prompt: str) -> str:
        if "Answer A:" in prompt:
            return json.dumps({"winner": pick(answers_in(prompt)), "reason": "scripted"})
        good = "GOOD" in answers_in(prompt)[0]
        if "pass/fail" in prompt:
            return json.dumps({"verdict": "pass" if good else "fail", "reason": "scripted"})
        return json.dumps({"score": 9 if good else 2, "reason": "scripted"})

    return rule


def the_better(answers: list[str]) -> str:
    return "A" if "GOOD" in answers[0] else "B"


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Install column engines answering GOOD (CHAT) and BAD (BASE) and a judge engine; → a runner."""

    def install(judge, answers: dict[str, str] | None = None, **config):
        answers = answers or {BASE: BAD, CHAT: GOOD}
        opened: list[str] = []

        def open_engine(model, n_ctx=None, adapter_scale=1.0, catalog=None, gpu_layers=None, **_):
            opened.append(model.id)
            if model.id == "judge-model":
                if isinstance(judge, Exception):
                    raise judge
                return judge
            return ScriptedEngine(model.id, [answers[model.id]], chunk_size=1000)

        monkeypatch.setattr("tuitune.engines.open_engine", open_engine)
        path = tmp_path / "judged.toml"
        path.write_text(SUITE, encoding="utf-8")
        from tuitune.evals.runner import run_eval

        config.setdefault("model", JUDGE)

        def run(**kwargs):
            return run_eval(load_suite(path), [BASE, CHAT], judge=JudgeConfig(**config), **kwargs)

        run.path = path
        return run

    return install


@pytest.mark.parametrize(
    ("answers", "pick", "winner", "agree"),
    [
        ({BASE: BAD, CHAT: GOOD}, the_better, "b", True),  # consistent B (the second column)
        ({BASE: GOOD, CHAT: BAD}, the_better, "a", True),  # consistent A
        ({BASE: GOOD, CHAT: BAD}, lambda answers: "A", "tie", False),  # position bias: a tie, and a disagreement
        ({BASE: GOOD, CHAT: BAD}, lambda answers: "tie", "tie", True),
    ],
)
def test_pairwise_is_asked_twice_swapped(scripted, answers, pick, winner: str, agree: bool):
    judge = RuleJudge(pair_rule(pick))
    report = scripted(judge, answers)()
    assert [(v.prompt, v.model_a, v.model_b, v.winner, v.agree, v.failed) for v in report.pairwise] == [
        ("dog", BASE, CHAT, winner, agree, False), ("mars", BASE, CHAT, winner, agree, False),
    ]  # fmt: skip
    pair_prompts = [p for p in judge.prompts if "Answer A:" in p]
    assert len(pair_prompts) == 4 and answers_in(pair_prompts[0]) == answers_in(pair_prompts[1])[::-1]
    payload = json.loads(json.dumps(report.as_json()))
    entry = payload["pairwise"][0]
    assert set(entry) == {"prompt", "model_a", "model_b", "winner", "agree", "reasons", "failed"}
    assert entry["reasons"] == ["scripted", "scripted"]
    summary = payload["pairwise_summary"]
    assert summary["disagreements"] == (0 if agree else 2) and summary["failed"] == 0
    assert summary["wins"] == {BASE: 2 * (winner == "a"), CHAT: 2 * (winner == "b")}
    assert summary["ties"] == 2 * (winner == "tie")
    text = report.format_text()
    assert "pairwise (judge, asked in both orders):" in text
    assert ("the two orders disagreed: dog, mars" in text) == (not agree)


def test_rubric_grades_cells_and_records_the_judge(scripted):
    judge = RuleJudge(pair_rule(the_better))
    report = scripted(judge)()
    good, bad = report.cell("dog", CHAT), report.cell("dog", BASE)
    (g,), (b,) = ([r for r in cell.results if r.check.judged] for cell in (good, bad))
    assert (g.passed, g.grade, g.detail) == (True, 9, "9/10 ≥ 7: scripted")
    assert (b.passed, b.grade, b.detail) == (False, 2, "2/10 < 7: scripted")
    assert good.score == 1.0 and bad.score == 0.5  # stops cleanly passes, the rubric fails
    mars = [r for r in report.cell("mars", CHAT).results if r.check.judged]
    assert [(r.check.scale, r.grade, r.passed) for r in mars] == [("1-10", 9, True), ("pass/fail", "pass", True)]
    rubric_prompts = [p for p in judge.prompts if "Rubric:" in p]
    assert len(rubric_prompts) == 6  # 2 columns × (2 + 1) judged checks
    dog = next(p for p in rubric_prompts if "Explains" in p and GOOD in p)
    assert "Train my dog {answer_b} to sit" in dog and "Explains {answer} clearly" in dog  # literal, filled once
    payload = report.as_json()
    assert payload["judge"]["model"] == "judge-model" and payload["judge"]["sampling"]["temperature"] == 0.0
    assert payload["judge"]["sampling"]["max_tokens"] == 128 and len(payload["judge"]["template_sha256"]) == 2
    checks = next(c for c in payload["cells"] if c["column"] == CHAT)["checks"]
    assert checks[0]["kind"] == "judge_rubric" and checks[0]["grade"] == 9 and checks[0]["judge_failed"] is False
    assert "judge" in report.format_text() and "pass 9/10" in report.to_csv()
    assert (
        judge.requests[0].sampling.temperature == 0.0 and judge.requests[0].messages
    )  # chat: the judge has a template


def test_unparseable_verdicts_are_visible_failures_not_passes(scripted):
    judge = RuleJudge(lambda prompt: "Great answer!\x1b[31m {nope} " + "x" * 200)
    report = scripted(judge)()
    for cell in report.cells.values():
        judged = [r for r in cell.results if r.check.judged]
        assert judged and all(r.judge_failed and not r.passed and r.grade is None for r in judged)
        assert all(r.detail.startswith("judge failed: no verdict") and "said: Great answer!␛[31m" in r.detail
                   for r in judged)  # fmt: skip
        assert all(len(r.detail) < 260 and "\x1b" not in r.detail for r in judged)
    assert [s.judge_failed for s in report.summary()] == [3, 3]
    assert all(v.failed and v.winner == "tie" and not v.agree for v in report.pairwise)
    assert report.as_json()["pairwise_summary"]["failed"] == 2
    text = report.format_text()
    assert "judge failed" in text and "judge failed on 2: dog, mars" in text and "\x1b" not in text
    assert "judge failed" in report.to_csv() and "judge failed" in report.to_markdown()


def test_a_judge_that_raises_or_does_not_load_fails_its_cells_and_the_run_goes_on(scripted):
    for judge, why in [(RuleJudge(str, fail_with=RuntimeError("judge exploded")), "RuntimeError: judge exploded"),
                       (TuituneError("cannot load the judge"), "did not load: cannot load the judge")]:  # fmt: skip
        report = scripted(judge)()
        cell = report.cell("dog", CHAT)
        assert cell.answers == [GOOD] and cell.error is None
        assert [r.passed for r in cell.results if not r.check.judged] == [True]  # the string checks still ran
        assert all(r.judge_failed and why in r.detail for r in cell.results if r.check.judged)
        assert all(v.failed and why in v.reasons[0] for v in report.pairwise)
        assert (report.judge["error"] is not None) == isinstance(judge, Exception)


def test_an_endpoint_judge_that_fails_says_why(scripted):
    from tuitune.engines.openai import Endpoint, OpenAIEngine

    with OpenAIStub("no-model") as stub:
        judge = OpenAIEngine(Endpoint(name="stub", base_url=stub.base_url, model="stub-model"))
        report = scripted(judge)()
    judged = [r for cell in report.cells.values() for r in cell.results if r.check.judged]
    assert len(judged) == 6 and all(r.judge_failed and "not found (404)" in r.detail for r in judged)
    assert len(report.pairwise) == 2 and all(v.failed for v in report.pairwise)


def test_a_judge_past_its_timeout_fails_that_verdict(scripted):
    judge = RuleJudge(pair_rule(the_better), delay_s=5.0)
    started = time.monotonic()
    report = scripted(judge, timeout_s=0.2)()
    assert time.monotonic() - started < 10  # 10 calls × 0.2 s, not × 5 s
    judged = [r for cell in report.cells.values() for r in cell.results if r.check.judged]
    assert all(r.judge_failed and "timed out after 0.2 s" in r.detail for r in judged)


def test_the_judge_never_blocks_the_answers_and_stop_stops_it(scripted):
    judge = RuleJudge(pair_rule(the_better), hold_after=0)  # the judge's first reply hangs until stopped
    cancel = threading.Event()
    progress: list[tuple[int, int]] = []
    run = scripted(judge)
    box: dict = {}
    thread = threading.Thread(
        target=lambda: box.update(report=run(cancel=cancel, on_progress=lambda *p: progress.append(p)))
    )
    thread.start()
    assert judge.holding.wait(10)
    deadline = time.monotonic() + 10
    while not any(done >= 4 for done, _ in progress) and time.monotonic() < deadline:  # 2 prompts × 2 columns
        time.sleep(0.02)
    assert any(done >= 4 for done, _ in progress), progress  # every answer came while the judge was stuck
    assert progress[-1][1] == 4 + 6 + 4  # answers + rubric calls + 2 orders × 2 prompts
    cancel.set()
    thread.join(5)
    assert not thread.is_alive()  # Stop reached the judge's reply in progress
    report = box["report"]
    judged = [r for cell in report.cells.values() for r in cell.results if r.check.judged]
    assert all(r.judge_failed and "stopped" in r.detail for r in judged)
    assert progress[-1][0] == progress[-1][1]


def test_without_judge_the_judged_checks_are_left_out_and_said_so(scripted):
    run = scripted(RuleJudge(str))
    from tuitune.evals.runner import run_eval

    report = run_eval(load_suite(run.path), [BASE, CHAT])
    assert all(not r.check.judged for cell in report.cells.values() for r in cell.results)
    assert report.judge is None and report.pairwise == [] and report.as_json()["pairwise_summary"] is None
    assert "3 judged checks not run: pass --judge MODEL" in report.format_text()


def test_judge_sampling_defaults_and_flags():
    from tuitune.evals.judge import judge_config

    assert judge_config(None) is None
    config = judge_config("m", "a, b", 0.5, 64, 3)
    assert config.pairs == (("a", "b"),) and config.sampling == judge_sampling(0.5, 64) and config.timeout_s == 3
    assert judge_config("m").sampling.temperature == 0.0
    for bad in [dict(pairs="a"), dict(temperature=-1), dict(max_tokens=0), dict(timeout_s=0)]:
        with pytest.raises(TuituneError):
            judge_config("m", **bad)


# -- the real thing ---------------------------------------------------------------------------------------
def test_real_judged_run_on_the_demo_models(tmp_path: Path):
    suite = tmp_path / "small.toml"
    suite.write_text(
        '[judge]\npairwise = true\n\n[[prompt]]\nid = "dog"\ntext = "Tell me how to train my dog to sit"\n\n'
        '[[prompt.check]]\ntype = "judge_rubric"\nrubric = "Gives steps to teach a dog to sit"\n',
        encoding="utf-8",
    )
    result = run_cli("eval", "--suite", str(suite), "--models", f"{BASE},{CHAT}", "--judge", CHAT,
                     "--max-tokens", "40", "--judge-max-tokens", "48", "--json", timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["judge"]["model"] == CHAT and payload["judge"]["error"] is None
    assert payload["judge"]["sampling"]["temperature"] == 0.0 and payload["judge"]["sampling"]["max_tokens"] == 48
    for cell in payload["cells"]:
        (check,) = cell["checks"]
        parsed = isinstance(check["grade"], int) and 1 <= check["grade"] <= 10 and not check["judge_failed"]
        failed = check["judge_failed"] and check["grade"] is None and check["detail"].startswith("judge failed: ")
        assert parsed != failed, check  # a verdict, or a visible failure: never neither
        assert check["passed"] == (parsed and check["grade"] >= 7)
    (entry,) = payload["pairwise"]
    assert (entry["prompt"], entry["model_a"], entry["model_b"]) == ("dog", BASE, CHAT)
    assert entry["winner"] in ("a", "b", "tie") and len(entry["reasons"]) == 2
    assert entry["failed"] or entry["winner"] == "tie" or entry["agree"]
    print(json.dumps(payload["pairwise"], indent=1), [c["checks"][0]["detail"] for c in payload["cells"]])


# -- the verdict grammar ----------------------------------------------------------------------------------
DOG_GOOD = "Hold a treat over its nose, move it back until its bottom goes down, say 'sit', then reward it."
DOG_BAD = " on a chair?\n\nI'm not sure how to train my dog to sit on a chair.\n\nI'm not sure how to train my dog."


def judge_prompt(kind: str) -> str:
    """A default-template judge prompt on the dog question, as the judge thread builds it."""
    from tuitune.evals.judge import DEFAULT_PAIRWISE_TEMPLATE, DEFAULT_RUBRIC_TEMPLATE, FORMATS

    question = "Tell me how to train my dog to sit"
    if kind == "pairwise":
        values = {"question": question, "answer_a": DOG_BAD, "answer_b": DOG_GOOD, "format": FORMATS[kind]}
        return fill(DEFAULT_PAIRWISE_TEMPLATE, values)
    values = {"question": question, "answer": DOG_GOOD, "rubric": "Gives steps to teach a dog to sit",
              "scale": kind, "format": FORMATS[kind]}  # fmt: skip
    return fill(DEFAULT_RUBRIC_TEMPLATE, values)


def ask(engine, kind: str, constrained: bool, max_tokens: int = 128) -> Generation:
    from tuitune.engines.base import Message
    from tuitune.evals.judge import verdict_grammar

    grammar = verdict_grammar(kind) if constrained else None
    generation = engine.generate(Request.chat([Message("user", judge_prompt(kind))], judge_sampling(0.0, max_tokens),
                                              grammar=grammar))  # fmt: skip
    generation.run()
    return generation


@pytest.mark.parametrize("kind", ["1-10", "pass/fail", "pairwise"])
def test_the_grammar_makes_a_135m_judge_reply_a_verdict(smollm, kind: str):
    """Unconstrained, SmolLM2-135M gave 0 parseable verdicts of 15 on the demo eval; under the grammar it must."""
    generation = ask(smollm, kind, constrained=True)
    verdict = parse_verdict(generation.text, kind)  # raises JudgeParseError without the grammar
    assert generation.stats.finish_reason == "stop" and generation.stats.completion_tokens < 128
    payload = json.loads(generation.text)  # the whole reply is the strict verdict JSON, reason first
    assert list(payload) == ["reason", {"1-10": "score", "pass/fail": "verdict", "pairwise": "winner"}[kind]]
    assert len(payload["reason"]) <= 90 and verdict.value in {"1-10": range(1, 11), "pass/fail": ("pass", "fail"),
                                                               "pairwise": ("A", "B", "tie")}[kind]  # fmt: skip


@pytest.mark.parametrize("kind", ["1-10", "pairwise"])
def test_without_the_grammar_the_reply_is_free_text(smollm, kind: str):
    """--judge-free reproduces the unconstrained judge: the same prompt, a reply that is not the verdict JSON
    (the grammar makes "{" the first character; free, SmolLM2 starts with prose and runs out of tokens)."""
    generation = ask(smollm, kind, constrained=False, max_tokens=40)
    assert not generation.text.lstrip().startswith("{") and generation.stats.finish_reason == "length"
    with pytest.raises(JudgeParseError):
        parse_verdict(generation.text, kind)


def test_stop_stops_a_constrained_reply_and_the_engine_answers_again(smollm):
    from tuitune.engines.base import Message
    from tuitune.evals.judge import verdict_grammar

    request = Request.chat([Message("user", judge_prompt("1-10"))], judge_sampling(), grammar=verdict_grammar("1-10"))
    generation = smollm.generate(request)
    for _ in generation:
        generation.cancel()  # Stop after the first piece
    assert generation.stats.finish_reason == "cancelled" and generation.stats.completion_tokens <= 2
    assert parse_verdict(smollm.generate(request).run(), "1-10")  # the grammar state did not leak into the next


def test_a_bad_grammar_is_one_clear_error_not_a_crash(smollm):
    from tuitune.engines.base import Grammar, Message

    request = Request.chat([Message("user", "hi")], judge_sampling(), grammar=Grammar("broken", "root ::= ( \n"))
    with pytest.raises(TuituneError) as caught:
        smollm.generate(request).run()
    assert "rejected the grammar 'broken'" in str(caught.value) and "\n" not in str(caught.value)


def test_the_judge_asks_under_the_grammar_unless_free(scripted):
    for free in (False, True):
        judge = RuleJudge(pair_rule(the_better))
        report = scripted(judge, constrained=not free)()
        grammars = {request.grammar.name if request.grammar else None for request in judge.requests}
        expected = {None} if free else {"tuitune_verdict_score", "tuitune_verdict_verdict", "tuitune_verdict_winner"}
        assert grammars == expected and report.judge["constrained"] is (not free)
    from tuitune.evals.judge import judge_config

    assert judge_config("m").constrained and not judge_config("m", free=True).constrained
    with pytest.raises(TuituneError, match="--judge-free: only with --judge"):
        judge_config(None, free=True)


def test_an_endpoint_judge_gets_the_schema_as_response_format(scripted):
    from tuitune.engines.openai import Endpoint, OpenAIEngine

    for constrained in (True, False):
        with OpenAIStub("ok") as stub:
            judge = OpenAIEngine(Endpoint(name="stub", base_url=stub.base_url, model="stub-model"))
            report = scripted(judge, constrained=constrained)()
        bodies = [r.body for r in stub.requests if r.method == "POST"]
        assert len(bodies) == 10  # 6 rubric calls, 2 pairs × 2 orders
        formats = [body.get("response_format") for body in bodies]
        if not constrained:
            assert formats == [None] * 10
            continue
        assert all(f["type"] == "json_schema" for f in formats)
        schemas = {f["json_schema"]["name"]: f["json_schema"]["schema"] for f in formats}
        assert schemas["tuitune_verdict_winner"]["properties"]["winner"]["enum"] == ["A", "B", "tie"]
        assert schemas["tuitune_verdict_score"]["required"] == ["reason", "score"]
        # the stub ignores the schema and says "Hello from the stub.": still parsed strictly, a visible failure
        judged = [r for cell in report.cells.values() for r in cell.results if r.check.judged]
        assert all(r.judge_failed and "no verdict" in r.detail for r in judged)


def test_an_endpoint_that_rejects_response_format_is_asked_without_it():
    from tests.support.openai_stub import _Handler
    from tuitune.engines.base import Message
    from tuitune.engines.openai import Endpoint, OpenAIEngine
    from tuitune.evals.judge import verdict_grammar

    with OpenAIStub("ok") as stub:

        class RejectsSchema(_Handler):
            server_stub = stub

            def do_POST(self) -> None:
                body = self._record() or {}
                if "response_format" in body:
                    self._json(400, {"error": {"message": "Unrecognized request argument supplied: response_format"}})
                    return
                self._start_stream()
                self._event(body, '{"reason": "fine", "verdict": "pass"}')
                self._event(body, None, "stop")
                self.wfile.write(b"data: [DONE]\n\n")

        stub._server.RequestHandlerClass = RejectsSchema
        engine = OpenAIEngine(Endpoint(name="strict", base_url=stub.base_url, model="stub-model"))
        request = Request.chat([Message("user", "grade")], judge_sampling(), grammar=verdict_grammar("pass/fail"))
        first = engine.generate(request)
        assert parse_verdict(first.run(), "pass/fail").value == "pass"
        assert first.notices == [
            "strict rejects response_format json_schema: sent without it, the reply is unconstrained"
        ]
        engine.generate(request).run()
    posts = [r.body for r in stub.requests if r.method == "POST"]
    assert ["response_format" in body for body in posts] == [True, False, False]  # asked once, then left out
