"""Fuzzing every parser of untrusted input: a result or a TuituneError, never another exception.

models.toml, suites, datasets and GGUF headers come from other people. A crash with a traceback (RecursionError,
MemoryError, KeyError…) tells the user nothing and can take the app down with it, so each parser gets structured
input that reaches deep (valid shapes with wrong types, huge numbers, NaN, deep nesting, odd unicode) as well as
raw and mutated bytes. Derandomized, so CI runs the same examples every time.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tuitune.catalog import load_catalog
from tuitune.engines.offload import footprint_from_gguf
from tuitune.errors import SuiteError, TuituneError
from tuitune.gguf import read_gguf
from tuitune.suites import load_suite
from tuitune.training.data import check_dataset, load_examples

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
DEPTHS = [1, 50, 99, 100, 101, 150, 500, 5000, 100_000]
HUGE_INTS = [2**31, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 2**100]


def outcome(call: Callable[[], Any]) -> Any:
    """The parser's result, or None for a TuituneError; anything else fails the test with the input shrunk."""
    try:
        return call()
    except TuituneError as error:
        assert str(error).strip(), "a TuituneError must say what is wrong"
        return None


# -- shared strategies --------------------------------------------------------------------------------------

# Unicode a UTF-8 file can hold: control characters, RTL marks, emoji, a BOM. Lone surrogates cannot be written
# as UTF-8 (one makes the whole file unreadable), so they come only escaped, inside JSON (SURROGATES below).
ODD_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
    st.sampled_from(["", " ", "\x00", "\u202e", "🦙", "\x1b[31m", "a\r\nb", "\ufeff", "é" * 30, "\u2028"]),
)
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udcff", "\ud83e"])


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few bytes flipped, inserted, deleted, duplicated or cut off."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "cut"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "dup":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


def seed(path: Path, size: int = 3000) -> bytes:
    """The head of a shipped TOML file, cut before a table header so that unmutated it still parses."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n[[", 0, size) + 1]


def nested(depth: int, opener: str, closer: str, inner: str = "") -> str:
    return opener * depth + inner + closer * depth


# -- TOML ---------------------------------------------------------------------------------------------------


class Raw(str):
    """A TOML literal written as is (e.g. an integer too long for str() under Python's digit limit)."""


def toml_value(value: Any) -> str:
    """A TOML inline value for ``value``; strings keep lone surrogates (the file then is not valid UTF-8)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{ " + ", ".join(f"{toml_string(key)} = {toml_value(item)}" for key, item in value.items()) + " }"


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, all other unicode as is."""
    escaped = "".join(
        f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else "\\" + char if char in '"\\' else char
        for char in text
    )
    return f'"{escaped}"'


def sometimes(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int) -> st.SearchStrategy[Any]:
    """``rare`` one time in ``odds``: a file fails as a whole on one bad value, so bad values must stay rare."""
    return st.integers(1, odds).flatmap(lambda draw: rare if draw == 1 else common)


TOML_SCALARS = sometimes(
    st.one_of(ODD_TEXT, st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True)),
    st.one_of(
        st.sampled_from(HUGE_INTS),
        st.sampled_from([Raw("1" * 5000), Raw("0x" + "f" * 5000), Raw("1979-05-27T07:32:00Z"), Raw("07:32:00")]),
        st.sampled_from(DEPTHS).map(lambda depth: Raw(nested(depth, "[", "]"))),
        st.sampled_from(DEPTHS).map(lambda depth: Raw(nested(depth, "{ a = ", " }", "1"))),
    ),
    odds=6,
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)


def toml_table(fields: dict[str, Any]) -> str:
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n" for key, value in fields.items())


def field_values(valid: dict[str, list[Any]], required: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """A table of the known keys (``required`` ones nearly always), each holding a valid-looking value or anything.

    Mostly valid values, so that most cases get past the first check and reach the deeper ones.
    """

    def value(key: str) -> st.SearchStrategy[Any]:
        return sometimes(st.sampled_from(valid[key]), TOML_VALUES, odds=8)

    known = st.fixed_dictionaries(
        {key: value(key) for key in required}, optional={key: value(key) for key in valid if key not in required}
    )
    return st.one_of(known, known, known, st.dictionaries(ODD_TEXT, TOML_VALUES, max_size=3))


def write_bytes(path: Path, text_or_bytes: str | bytes) -> Path:
    data = text_or_bytes if isinstance(text_or_bytes, bytes) else text_or_bytes.encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return path


DEEP_TOML = st.sampled_from(DEPTHS).flatmap(
    lambda depth: st.sampled_from(
        [
            f"a = {nested(depth, '[', ']')}\n",
            f"a = {nested(depth, '{ b = ', ' }', '1')}\n",
            "a" + ".a" * depth + " = 1\n",
            "[" + "a." * depth + "a]\nb = 1\n",
        ]
    )
)

# -- catalog ------------------------------------------------------------------------------------------------

MODEL_FIELDS: dict[str, list[Any]] = {
    "id": ["m", "smollm2-135m", "bad id", ""],
    "name": ["A model"],
    "kind": ["base", "chat", "finetuned", "endpoint", "other"],
    "family": ["llama"],
    "mode": ["raw", "chat"],
    "pair": ["m", "other"],
    "source": [
        {"pypi": "pkg", "file": "m.gguf"},
        {"pypi": "pkg", "assemble": True},
        {"hf": "org/repo", "file": "m.gguf"},
        {"hf": "org/repo", "pattern": "*.gguf", "revision": "main"},
        {"hf": "/bad/"},
        {"path": "~/m.gguf"},
        {"path": "~nosuchuser-tuitune/m.gguf"},
        {"path": "m\x00.gguf"},
    ],
    "size": [1, 0, -1],
    "context_length": [2048],
    "base": ["m"],
    "adapter": ["lora.gguf", "~/lora.gguf", "~nosuchuser-tuitune/lora.gguf"],
    "base_url": ["http://127.0.0.1:8000/v1", "ftp://x"],
    "model": ["gpt"],
    "api_key_env": ["OPENAI_API_KEY", "sk-123"],
    "headers": [{"X-A": "b"}, {"Authorization": "x"}],
    "parameters": [{"temperature": 0.2}],
    "timeout": [1, 0, -1, math.nan, math.inf],
    "train_weights": [{"hf": "org/name"}, {"hf": "org/name", "revision": ""}],
}


MODEL_REQUIRED = ("id", "name", "kind", "family", "source")


def catalog_text(models: list[dict[str, Any]], top: dict[str, Any]) -> str:
    return toml_table(top) + "".join(f"\n[[model]]\n{toml_table(model)}" for model in models)


CATALOG_FILES = st.one_of(
    st.builds(catalog_text, st.lists(field_values(MODEL_FIELDS, MODEL_REQUIRED), max_size=4), st.just({})),
    st.builds(catalog_text, st.lists(field_values(MODEL_FIELDS), max_size=2), field_values({"model": [[], 1]})),
    DEEP_TOML,
    st.text(max_size=200),
    st.binary(max_size=200),
    mutated(seed(REPO / "models.toml")),
)


@FUZZ
@given(content=CATALOG_FILES)
def test_catalog_never_crashes(tmp_path: Path, content: str | bytes):
    path = write_bytes(tmp_path / "models.toml", content)
    catalog = outcome(lambda: load_catalog(shipped=path, user=tmp_path / "absent.toml"))
    if catalog is not None:
        for entry in catalog:
            assert entry.id in catalog


# -- suites -------------------------------------------------------------------------------------------------

CHECK_FIELDS: dict[str, list[Any]] = {
    "type": ["contains", "regex", "max_repetition", "min_tokens", "json_valid", "nope"],
    "value": ["sit", "(", 0.3, 20, -1],
    "weight": [1, 0, math.nan],
    "case_sensitive": [True],
    "n": [3, 0, 21],
}
PROMPT_FIELDS: dict[str, list[Any]] = {
    "id": ["p1"],
    "text": ["Hello", "", " "],
    "messages": [[{"role": "user", "content": "hi"}], [{"role": "bot", "content": 1}], [1], "hi", 5, {"a": 1}],
    "mode": ["raw", "chat", "other"],
    "note": ["n"],
    "group": ["control"],
    "check": [[{"type": "contains", "value": "x"}], [1], {"type": "contains"}],
}


def suite_text(top: dict[str, Any], checks: list[dict[str, Any]], prompts: list[tuple[dict, list[dict]]]) -> str:
    text = toml_table(top)
    text += "".join(f"\n[[check]]\n{toml_table(check)}" for check in checks)
    for prompt, own in prompts:
        text += f"\n[[prompt]]\n{toml_table(prompt)}"
        text += "".join(f"\n[[prompt.check]]\n{toml_table(check)}" for check in own)
    return text


SUITE_FILES = st.one_of(
    st.builds(
        suite_text,
        field_values({"name": ["s"], "description": ["d"]}),
        st.lists(field_values(CHECK_FIELDS, ("type",)), max_size=2),
        st.lists(
            st.tuples(
                field_values(PROMPT_FIELDS, ("text",)), st.lists(field_values(CHECK_FIELDS, ("type",)), max_size=2)
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    DEEP_TOML.map(lambda text: text + '\n[[prompt]]\ntext = "x"\n'),
    st.sampled_from([" ", "\t", "a "]).map(lambda pad: '[[prompt]]\ntext = """\n[[' + pad * 5000 + 'x\n"""\n'),
    st.text(max_size=200),
    st.binary(max_size=200),
    mutated(seed(REPO / "suites" / "why-finetune.toml")),
)


@FUZZ
@given(content=SUITE_FILES)
def test_suite_loader_never_crashes(tmp_path: Path, content: str | bytes):
    path = write_bytes(tmp_path / "suite.toml", content)
    suite = outcome(lambda: load_suite(path))
    if suite is not None:
        assert suite.prompts
        for prompt in suite.prompts:
            assert isinstance(prompt.text, str)
            for check in prompt.checks:
                check.label()


# -- datasets -----------------------------------------------------------------------------------------------

JSON_SCALARS = sometimes(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), ODD_TEXT),
    st.one_of(st.sampled_from(HUGE_INTS), SURROGATES),
    odds=6,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ODD_TEXT, inner, max_size=4),
    max_leaves=12,
)


def likely(*choices: Any) -> st.SearchStrategy[Any]:
    """One of ``choices``, or now and then any JSON value."""
    return sometimes(st.sampled_from(choices), JSON_VALUES, odds=6)


MESSAGE = st.fixed_dictionaries(
    {"role": likely("user", "assistant", "assistant", "system", "tool", ""), "content": likely("hi", "", " ", "é")},
    optional={"weight": likely(0, 1, 2, True, 1.0), "name": JSON_VALUES},
)
EXAMPLES = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4) | JSON_VALUES}),
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)}),
    st.fixed_dictionaries({"prompt": likely("p", ""), "completion": likely("c", " ")}, optional={"x": JSON_VALUES}),
    st.fixed_dictionaries(
        {"instruction": likely("do", ""), "output": likely("done", "")}, optional={"input": likely("", "more")}
    ),
    st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=3),
    JSON_VALUES,
)


def dumps(value: Any) -> str:
    """One JSON line, unicode kept as is where UTF-8 can hold it and escaped where it cannot (lone surrogates)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


GOOD_LINE = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
RAW_LINES = st.one_of(
    st.sampled_from(DEPTHS).flatmap(
        lambda depth: st.sampled_from(
            [
                nested(depth, "[", "]"),
                nested(depth, '{"a": ', "}", "1"),
                '{"messages": ' + nested(depth, "[", "]") + "}",
                '{"messages": [{"role": "assistant", "content": "x", "weight": ' + nested(depth, "[", "]") + "}]}",
                '{"prompt": "p", "completion": ' + nested(depth, '{"a": ', "}", "1") + "}",
            ]
        )
    ),
    st.sampled_from(["1" * 5000, '{"prompt": "p", "completion": ' + "9" * 5000 + "}", "-" + "1" * 4301, "1e99999"]),
    st.sampled_from(["NaN", "[Infinity]", '{"a": -Infinity}', '"\\ud800"', '{"\\udfff": 1}', "{", "]", "\x00", ""]),
    st.text(max_size=60),
)
LINES = st.lists(
    st.one_of(EXAMPLES.map(dumps), EXAMPLES.map(dumps), RAW_LINES, st.just(GOOD_LINE)),
    max_size=14,
)


def jsonl(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


def json_array(lines: list[str]) -> str:
    return "[\n" + ",\n".join(lines) + "\n]\n"


DATASET_FILES = st.one_of(
    LINES.map(jsonl),
    LINES.map(json_array),
    st.binary(max_size=300),
    mutated(("\n".join([GOOD_LINE] * 10) + "\n").encode()),
    mutated(json_array([GOOD_LINE] * 10).encode()),
)


@FUZZ
@given(content=DATASET_FILES)
def test_dataset_checker_never_crashes(tmp_path: Path, content: str | bytes):
    path = write_bytes(tmp_path / "train.jsonl", content)
    report = check_dataset(path, max_length=64)
    report.format_text()
    json.dumps(report.as_dict())
    examples = outcome(lambda: load_examples(path))
    assert (examples is not None) == report.ok


# -- GGUF ---------------------------------------------------------------------------------------------------

UINT64 = st.integers(0, 2**64 - 1)
LIES = st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**40, 2**61, 2**63 - 1, 2**63, 2**64 - 1]) | UINT64
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@st.composite
def counted(draw: st.DrawFn, true: int, fmt: str = "<Q", lie_percent: int = 25) -> bytes:
    """A length or count: usually the true one, sometimes a lie (huge, or just off by a little)."""
    lie = draw(st.integers(0, 99)) < lie_percent
    value = (draw(LIES) if draw(st.booleans()) else max(0, true + draw(st.integers(-3, 3)))) if lie else true
    return struct.pack(fmt, value % (1 << (8 * struct.calcsize(fmt))))


@st.composite
def gguf_string(draw: st.DrawFn, text: bytes | None = None) -> bytes:
    data = text if text is not None else draw(st.binary(max_size=12) | st.text(max_size=8).map(str.encode))
    return draw(counted(len(data))) + data


@st.composite
def gguf_scalar(draw: st.DrawFn, kind: int) -> bytes:
    fmt = SCALAR_FORMATS[kind]
    return draw(st.binary(min_size=struct.calcsize(fmt), max_size=struct.calcsize(fmt)))


@st.composite
def gguf_value(draw: st.DrawFn, kind: int, depth: int = 0) -> bytes:
    if kind in SCALAR_FORMATS:
        return draw(gguf_scalar(kind))
    if kind == 8:
        return draw(gguf_string())
    if kind == 9:
        item = draw(st.sampled_from([*SCALAR_FORMATS, 8, 9] if depth < 1 else [*SCALAR_FORMATS, 8]))
        items = [draw(gguf_value(item, depth + 1)) for _ in range(draw(st.integers(0, 5) | st.just(70)))]
        return struct.pack("<I", item) + draw(counted(len(items))) + b"".join(items)
    return draw(st.binary(max_size=8))  # an unknown type: whatever bytes follow


VALUE_TYPES = st.sampled_from([*SCALAR_FORMATS, 8, 8, 9, 9, 9, 9, 13, 2**31, 2**32 - 1])
KEYS = st.sampled_from(
    [
        b"general.architecture",
        b"general.alignment",
        b"general.file_type",
        b"llama.context_length",
        b"general.name",
        b"llama.block_count",
    ]
)


@st.composite
def gguf_kv(draw: st.DrawFn) -> bytes:
    key = draw(KEYS | st.binary(max_size=10))
    kind = draw(VALUE_TYPES)
    if key == b"general.alignment" and draw(st.booleans()):
        kind = 4
        return draw(gguf_string(key)) + struct.pack("<II", kind, draw(st.sampled_from([0, 1, 3, 32, 2**31])))
    return draw(gguf_string(key)) + draw(counted(kind, "<I", 5)) + draw(gguf_value(kind))


@st.composite
def gguf_tensor(draw: st.DrawFn) -> bytes:
    dims = draw(st.lists(st.sampled_from([0, 1, 32, 256, 4096]) | UINT64, max_size=5))
    kind = draw(st.sampled_from([0, 1, 2, 12, 14, 30, 31, 2**32 - 1]))
    offset = draw(st.sampled_from([0, 32, 2**63]) | UINT64)
    return (
        draw(gguf_string())
        + draw(counted(len(dims), "<I", 10))
        + b"".join(struct.pack("<Q", dim) for dim in dims)
        + struct.pack("<IQ", kind, offset)
    )


@st.composite
def gguf_file(draw: st.DrawFn) -> bytes:
    kvs = draw(st.lists(gguf_kv(), max_size=5))
    tensors = draw(st.lists(gguf_tensor(), max_size=3))
    version = draw(st.sampled_from([3, 3, 3, 3, 3, 2, 2, 1, 2**32 - 1]))
    head = b"GGUF" + struct.pack("<I", version) + draw(counted(len(tensors), lie_percent=10))
    head += draw(counted(len(kvs), lie_percent=10))
    body = head + b"".join(kvs) + b"".join(tensors)
    cut = draw(st.sampled_from([None] * 8 + [0, 1]) | st.just(len(body) // 2))
    return (body if cut is None else body[:cut]) + draw(st.binary(max_size=64))


GGUF_FILES = st.one_of(
    gguf_file(),
    gguf_file(),
    gguf_file(),
    gguf_file().flatmap(lambda data: mutated(data[8:]).map(lambda rest: data[:8] + rest)),
    st.binary(max_size=64).map(lambda data: b"GGUF\x03\x00\x00\x00" + data),
    st.binary(max_size=16),
)


@FUZZ
@given(content=GGUF_FILES)
def test_gguf_reader_never_crashes(tmp_path: Path, content: bytes):
    path = write_bytes(tmp_path / "model.gguf", content)
    info = outcome(lambda: read_gguf(path))
    if info is not None:
        for name in ("architecture", "name", "context_length", "chat_template", "quantization", "vocab_size"):
            getattr(info, name)
        outcome(lambda: footprint_from_gguf(info))  # the offload planner sizes lists from the header's counts


def test_the_toml_writer_emits_what_tomllib_reads():
    """Structured cases only reach the validators if the TOML they are written as parses."""
    fields = {"a": [1, 2.5, "x", {"b": True}], "c": math.nan, "d": Raw("1" * 30), 'é"\\\x00\x7f🦙': '\n\\"\u202e'}
    data = tomllib.loads(toml_table(fields))
    assert data["a"] == [1, 2.5, "x", {"b": True}] and math.isnan(data["c"]) and data["d"] == int("1" * 30)
    assert data['é"\\\x00\x7f🦙'] == '\n\\"\u202e'


# -- suites: the cases the fuzzer (or reading the loader) found, pinned -----------------------------------------


@pytest.mark.parametrize(
    "text, problem",
    [
        (b'name = "\xff"\n', "not UTF-8 text"),  # UnicodeDecodeError
        (b"[[prompt]]\nmessages = 5\n", "prompt #1: messages must be a list"),  # TypeError
        (f"x = {nested(100_000, '[', ']')}\n".encode(), "nested deeper than 100 levels"),  # RecursionError
        (f"x = {'1' * 5000}\n".encode(), "a number with more than 4,300 digits"),  # ValueError
        (f"name = {'1' * 5000}\n[[prompt]]\ntext = 'x'\n".encode(), "a number with more than 4,300 digits"),
    ],
    ids=["not-utf8", "messages-int", "100000-deep", "5000-digits", "5000-digit-name"],
)
def test_suite_errors_that_were_crashes(tmp_path: Path, text: bytes, problem: str):
    with pytest.raises(SuiteError, match=re.escape(problem)):
        load_suite(write_bytes(tmp_path / "suite.toml", text))


def test_suite_header_lines_are_found_in_linear_time(tmp_path: Path):
    """A line opening with [[ inside a multi-line string once made the header regex backtrack cubically
    (5,000 spaces: 80 s); the line is read in well under a second now."""
    text = '[[prompt]]\ntext = """\n[[' + " " * 2000 + 'x\n"""\n\n[[prompt]]\ntext = "y"\n'
    start = time.perf_counter()
    suite = load_suite(write_bytes(tmp_path / "suite.toml", text))
    assert time.perf_counter() - start < 1.0
    assert [prompt.text for prompt in suite.prompts][1] == "y"
