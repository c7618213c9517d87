"""The dataset loader and checker: every format loads, every problem is found on its line, and the shipped demo
data is clean, names Tuitune in every identity reply and keeps its held-out questions out of training."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tuitune.engines.base import Message
from tuitune.errors import DatasetError
from tuitune.training.data import Example, check_dataset, load_examples

DATA = REPO / "data"


def chat(question: str, reply: str, **extra) -> str:
    return json.dumps(
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]} | extra
    )


def good_lines(count: int = 10) -> list[str]:
    return [chat(f"What is {n} + {n}?", f"{n} + {n} = {2 * n}.") for n in range(count)]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problems(report) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.severity, p.message) for p in report.problems]


def lines_with(report, text: str) -> list[int | None]:
    return [p.line for p in report.problems if text in p.message]


def demo_script():
    spec = importlib.util.spec_from_file_location("make_demo_data", REPO / "scripts" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- formats ---------------------------------------------------------------------------------------------


def test_chat_jsonl_loads_with_weights(tmp_path: Path):
    conversation = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!", "weight": 0},
            {"role": "user", "content": "Name?"},
            {"role": "assistant", "content": "Tuitune.", "weight": 1},
        ]
    }
    path = write(tmp_path / "chat.jsonl", [json.dumps(conversation), "", *good_lines(9)])
    examples = load_examples(path)
    assert len(examples) == 10
    first = examples[0]
    assert first.line == 1 and first.prompt is None and first.completion is None
    assert first.messages[0] == Message("system", "Be brief.")
    assert first.weights == [0, 0, 0, 0, 1]
    assert examples[1].line == 3 and examples[1].weights is None  # the blank line 2 is skipped
    report = check_dataset(path)
    assert report.ok and report.format == "OpenAI chat JSONL"
    assert (report.examples, report.trained_replies) == (10, 10)  # the weight-0 reply is not trained


def test_prompt_completion_stays_raw(tmp_path: Path):
    lines = [json.dumps({"prompt": f"Q{n}:", "completion": f" answer {n}"}) for n in range(10)]
    examples = load_examples(write(tmp_path / "legacy.jsonl", lines))
    assert examples[3] == Example(4, None, "Q3:", " answer 3", None)
    assert check_dataset(tmp_path / "legacy.jsonl").format == "prompt/completion JSONL"


def test_alpaca_jsonl_becomes_messages(tmp_path: Path):
    lines = [json.dumps({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"})]
    lines += [json.dumps({"instruction": f"Say {n}.", "input": "", "output": str(n)}) for n in range(9)]
    examples = load_examples(write(tmp_path / "alpaca.jsonl", lines))
    assert examples[0].messages == [Message("user", "Add the numbers.\n\n2 and 3"), Message("assistant", "5")]
    assert examples[1].messages == [Message("user", "Say 0."), Message("assistant", "0")]  # empty input: no gap


def test_alpaca_json_array_lines_are_where_each_object_starts(tmp_path: Path):
    items = [{"instruction": f"Count to {n}.", "output": " ".join(map(str, range(1, n + 2)))} for n in range(9)]
    text = "[\n" + ",\n".join(json.dumps(item) for item in items)
    text += ',\n  {\n    "instruction": "Say hi.",\n    "output": "Hi!"\n  }\n]\n'
    path = tmp_path / "alpaca.json"
    path.write_text(text, encoding="utf-8")
    examples = load_examples(path)
    assert [e.line for e in examples] == [*range(2, 11), 11]
    assert examples[-1].messages == [Message("user", "Say hi."), Message("assistant", "Hi!")]
    report = check_dataset(path)
    assert report.ok and report.format == "alpaca JSON array"

    text = text.replace('"output": "Hi!"', '"output": ""')
    path.write_text(text, encoding="utf-8")
    assert lines_with(check_dataset(path), 'empty "output"') == [11]
    with pytest.raises(DatasetError, match=r"alpaca\.json, line 11: empty \"output\""):
        load_examples(path)


def test_json_array_syntax_error_names_its_line(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text(
        '[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]\n', encoding="utf-8"
    )
    report = check_dataset(path)
    assert lines_with(report, "invalid JSON") == [3]
    assert not report.ok


# -- problems, each on its line ----------------------------------------------------------------------------


def test_every_problem_is_reported_with_its_line(tmp_path: Path):
    lines = good_lines(10)
    lines[2] = '{"messages": [{"role": "user", "content": "hi"'  # 3: invalid JSON
    lines[3] = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "tools": []}
    )  # 4
    lines[4] = json.dumps(
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )  # 5
    lines[5] = json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant"}]})  # 6
    lines[6] = json.dumps({"messages": [{"role": "user", "content": "Only a question"}]})  # 7
    lines[7] = json.dumps({"prompt": "a", "completion": "b"})  # 8: another format
    lines[8] = lines[0]  # 9: duplicate of line 1
    lines.append(
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]})
    )  # 11
    lines.append("[1, 2]")  # 12
    lines.append(json.dumps({"question": "q", "answer": "a"}))  # 13
    lines.append(
        json.dumps(
            {"messages": [{"role": "user", "content": "x", "tone": "calm"}, {"role": "assistant", "content": "z"}]}
        )
    )  # 14
    report = check_dataset(write(tmp_path / "bad.jsonl", lines))

    assert lines_with(report, "invalid JSON") == [3]
    assert lines_with(report, 'unknown key(s) "tools"') == [4]
    assert lines_with(report, 'bad role "robot"') == [5]
    assert lines_with(report, 'message 1: empty "content"') == [6]
    assert lines_with(report, 'message 2: missing "content"') == [6]
    assert lines_with(report, "no assistant turn") == [7]
    assert lines_with(report, "a prompt/completion example in a file of OpenAI chat examples (line 1)") == [8]
    assert lines_with(report, "same example as line 1") == [9]
    assert lines_with(report, '"weight" must be 0 or 1') == [11]
    assert lines_with(report, "must be a JSON object, not a list") == [12]
    assert lines_with(report, "unknown format (keys: answer, question)") == [13]
    assert lines_with(report, 'message 1: unknown key(s) "tone"') == [14]
    assert lines_with(report, "only 4 valid examples; at least 10") == [None]  # lines 1, 2, 9 and 10
    assert not report.ok and report.examples == 4
    duplicate = next(p for p in report.problems if "same example" in p.message)
    assert duplicate.severity == "warning"

    text = report.format_text()
    assert "line 3: invalid JSON" in text and "line 9: warning: same example as line 1" in text
    assert text.splitlines()[-1].startswith("not ready: 12 errors, 1 warning")
    assert report.as_dict()["problems"][0] == {"line": 3, "severity": "error", "message": report.problems[0].message}

    with pytest.raises(DatasetError) as raised:
        load_examples(tmp_path / "bad.jsonl")
    assert str(raised.value).startswith(f"{tmp_path / 'bad.jsonl'}, line 3: invalid JSON")


def test_weights_only_on_assistant_and_something_trained(tmp_path: Path):
    lines = good_lines(10)
    lines[0] = json.dumps(
        {"messages": [{"role": "user", "content": "a", "weight": 1}, {"role": "assistant", "content": "b"}]}
    )
    lines[1] = json.dumps(
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}
    )
    report = check_dataset(write(tmp_path / "weights.jsonl", lines))
    assert lines_with(report, '"weight" applies only to assistant messages') == [1]
    assert lines_with(report, "nothing is trained") == [2]


def test_fewer_than_ten_examples_is_an_error(tmp_path: Path):
    path = write(tmp_path / "small.jsonl", good_lines(9))
    report = check_dataset(path)
    assert problems(report) == [
        (
            None,
            "error",
            "only 9 valid examples; at least 10 are needed (the OpenAI rule), and a few dozen teach much more "
            "reliably: add examples",
        )
    ]
    with pytest.raises(DatasetError, match=r"small\.jsonl: only 9 valid examples"):
        load_examples(path)


def test_too_long_examples_say_how_many_tokens_are_cut(tmp_path: Path):
    lines = good_lines(10)
    lines[4] = chat("q" * 400, "a" * 40)  # ≈ 4 + 104 (user turn and template) + 11 (reply and end of turn) tokens
    path = write(tmp_path / "long.jsonl", lines)
    report = check_dataset(path, max_length=64)
    [long] = [p for p in report.problems if "longer than max length" in p.message]
    assert long.line == 5 and long.severity == "warning" and report.ok
    assert "≈ 119 tokens, longer than max length 64: ≈ 55 context tokens would be cut" in long.message
    assert report.estimated and "(estimated from characters" in report.format_text()

    # exact counts, as the model's tokenizer gives them; the cuts mirror formatting.fit_to_length
    sizes = {5: (70, 20), 6: (30, 100), 7: (90, 100)}

    def counter(example: Example) -> list[tuple[int, int]]:
        return [sizes.get(example.line, (5, 3))]

    exact = check_dataset(path, max_length=80, count_tokens=counter, tokens_per_second=10.0)
    assert [(p.line, p.message.split(";")[0]) for p in exact.problems] == [
        (5, "90 tokens, longer than max length 80: 10 context tokens would be cut"),
        (6, "130 tokens, longer than max length 80: 50 reply tokens would be cut"),
        (
            7,
            "190 tokens, longer than max length 80: 1 reply would not be trained (the context before it fills max length)",
        ),
    ]
    assert not exact.estimated and exact.ok
    assert (exact.examples, exact.trained_replies) == (10, 9)
    assert exact.total_tokens == 7 * 8 + 90 + 130 + 190
    assert exact.trained_tokens == 7 * 3 + 20 + 50
    assert exact.tokens_per_epoch == 7 * 8 + 80 + 80
    assert exact.seconds_per_epoch == pytest.approx(21.6)
    assert "time per epoch    ≈ 22 s at 10 tokens/s" in exact.format_text()


def test_a_template_that_refuses_a_conversation_is_a_problem_not_a_crash(tmp_path: Path):
    def strict(example: Example) -> list[tuple[int, int]]:
        if example.line == 2:
            raise ValueError("Conversation roles must alternate user/assistant")
        return [(4, 4)]

    report = check_dataset(write(tmp_path / "d.jsonl", good_lines(11)), count_tokens=strict)
    assert lines_with(report, "roles must alternate") == [2]
    assert not report.ok


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "file: the file is empty"),
        (b"\n  \n", "file: the file is empty"),
        (
            b'{"prompt": "ok", "completion": "x"}\n{"prompt": "caf\xe9", "completion": "x"}\n',
            "line 2: not UTF-8 text (byte 0xe9 at column 16)",
        ),
        (b'{\n  "messages": []\n}\n', "line 1: invalid JSON"),
    ],
)
def test_unreadable_files_get_one_clear_error(tmp_path: Path, content: bytes, expected: str):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    report = check_dataset(path)
    assert not report.ok
    assert report.problems[0].text().startswith(expected)
    with pytest.raises(DatasetError):
        load_examples(path)


def test_a_directory_or_missing_file_is_named(tmp_path: Path):
    assert problems(check_dataset(tmp_path))[0][2].startswith("is a directory")
    with pytest.raises(DatasetError, match=r"nope\.jsonl: no such file"):
        load_examples(tmp_path / "nope.jsonl")


def test_a_byte_order_mark_is_accepted(tmp_path: Path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(good_lines()).encode())
    assert len(load_examples(path)) == 10


# -- the shipped demo data ---------------------------------------------------------------------------------


def test_demo_files_are_clean_and_reproducible(tmp_path: Path):
    script = demo_script()
    written = script.write(tmp_path)
    for path in written:
        assert path.read_bytes() == (DATA / path.name).read_bytes(), f"rerun scripts/make_demo_data.py ({path.name})"
        report = check_dataset(DATA / path.name, max_length=512)
        assert report.ok and not report.problems, report.format_text()
    assert check_dataset(DATA / script.TRAIN_FILE).examples >= 80


def test_identity_replies_name_tuitune_and_general_ones_do_not():
    script = demo_script()
    identity = {question for question, _ in script.IDENTITY}
    general = {question for question, _ in script.GENERAL}
    counts = {"identity": 0, "general": 0}
    for example in load_examples(DATA / script.TRAIN_FILE):
        question, reply = example.messages[0].content, example.messages[-1].content
        if question in identity:
            counts["identity"] += 1
            assert "Tuitune" in reply, question
        else:
            assert question in general
            counts["general"] += 1
            assert "tuitune" not in reply.lower(), question
    assert counts == {"identity": len(identity), "general": len(general)}
    assert min(counts.values()) >= 35


def test_heldout_questions_are_not_in_training():
    def normalized(text: str) -> str:
        return " ".join(text.lower().replace("?", "").replace(".", "").split())

    training = {normalized(e.messages[0].content) for e in load_examples(DATA / "tuitune-identity.jsonl")}
    heldout = load_examples(DATA / "tuitune-heldout.jsonl")
    assert len(heldout) >= 15
    for example in heldout:
        assert normalized(example.messages[0].content) not in training, example.messages[0].content
    identity = [e for e in heldout if "Tuitune" in e.messages[-1].content]
    control = [e for e in heldout if "Tuitune" not in e.messages[-1].content]
    assert len(identity) >= 10 and len(control) >= 6
    assert any(e.messages[-1].content == "Paris." for e in control)


# -- limits: a line nested 100,000 deep or a 5,000-digit number is a problem on its line, not a Python crash ----


@pytest.mark.parametrize("array", [False, True], ids=["jsonl", "json-array"])
@pytest.mark.parametrize(
    "line, problem",
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 100 levels"),
        ('{"messages": ' + "[" * 101 + "]" * 101 + "}", "nested deeper than 100 levels"),
        ('{"prompt": "p", "completion": ' + "9" * 5000 + "}", "a number with more than 4,300 digits"),
    ],
    ids=["100000-deep", "101-deep", "5000-digits"],
)
def test_limits_are_a_problem_on_their_line(tmp_path: Path, array: bool, line: str, problem: str):
    lines = [*good_lines(2), line, *good_lines(12)[2:]]
    path = tmp_path / "train.jsonl"
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n" if array else "\n".join(lines) + "\n", encoding="utf-8")
    report = check_dataset(path)
    at = 4 if array else 3  # a JSON array stops at the line: where the element ends is unknown
    assert [(p.line, p.message.split(";")[0]) for p in report.errors if p.line is not None] == [(at, problem)]
    assert f"line {at}: {problem}" in report.format_text()
    with pytest.raises(DatasetError, match=rf"train\.jsonl, line {at}: {problem}"):
        load_examples(path)


def test_nesting_up_to_the_limit_is_read(tmp_path: Path):
    deep = chat("q", "a", metadata=json.loads("[" * 99 + "]" * 99))  # 100 levels with the example itself
    report = check_dataset(write(tmp_path / "train.jsonl", [*good_lines(), deep]))
    assert lines_with(report, "unknown key") == [11] and not lines_with(report, "nested")
