"""Chat templates from GGUF metadata are untrusted code: rendered within a time and size budget, every failure a
one-line TuituneError, and the same text as llama-cpp-python's formatter on real templates.

The hostile templates are written into copies of the real SmolLM2 GGUF, so the engine and the training formatter
meet them exactly as they would in a downloaded file.
"""

from __future__ import annotations

import signal
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tuitune.engines.base import Message, Request, Sampling
from tuitune.engines.llama import LlamaCppEngine
from tuitune.errors import TuituneError

NESTED_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
HUGE_STRING = "{{ 'a' * 10**11 }}"
SYNTAX_ERROR = "{% for message in messages %}{{ message['content'] }}{% endfor %}\n{% if %}"
REFUSES_SYSTEM = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{{ m['content'] }}{% endfor %}"
)
RENDERS_NOTHING = "{% if false %}never{% endif %}"
QUICK = Sampling(temperature=0.0, max_tokens=4)
DOG = [Message("user", "Tell me how to train my dog to sit")]
CONVERSATIONS = [
    DOG,
    [Message("system", "You are terse."), *DOG],
    [Message("system", "You are terse."), *DOG, Message("assistant", "Say sit, reward."), Message("user", "Then?")],
]


def gguf_with_template(source: Path, target: Path, template: str) -> Path:
    """Copy a GGUF with its ``tokenizer.chat_template`` replaced (or added): the key/value section is rewritten,
    the tensor table and the data are kept, re-aligned."""
    data = source.read_bytes()
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(pos: int, kind: int) -> int:
        if kind == 8:
            return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
        if kind == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item in fixed:
                return pos + count * fixed[item]
            for _ in range(count):
                pos = skip(pos, item)
            return pos
        return pos + fixed[kind]

    def string(text: str) -> bytes:
        raw = text.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw

    entries, pos, alignment = [], 24, 32
    for _ in range(n_kv):
        size = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8 : pos + 8 + size].decode()
        kind = struct.unpack_from("<I", data, pos + 8 + size)[0]
        end = skip(pos + 12 + size, kind)
        if key == "general.alignment":
            alignment = struct.unpack_from("<I", data, pos + 12 + size)[0]
        if key != "tokenizer.chat_template":
            entries.append(data[pos:end])
        pos = end
    entries.append(string("tokenizer.chat_template") + struct.pack("<I", 8) + string(template))
    tensors_start = pos
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        pos += 4 + 8 * struct.unpack_from("<I", data, pos)[0] + 4 + 8
    data_start = -(-pos // alignment) * alignment
    header = data[:8] + struct.pack("<QQ", n_tensors, len(entries)) + b"".join(entries) + data[tensors_start:pos]
    target.write_bytes(header + b"\0" * (-len(header) % alignment) + data[data_start:])
    return target


@pytest.fixture(scope="session")
def with_template(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """SmolLM2's GGUF with another chat template, one file per template."""
    made: dict[str, Path] = {}

    def make(template: str) -> Path:
        if template not in made:
            target = tmp_path_factory.mktemp("template") / "smollm-template.gguf"
            made[template] = gguf_with_template(smollm_path, target, template)
        return made[template]

    return make


def chat(engine: LlamaCppEngine, messages: list[Message] = DOG) -> str:
    return engine.generate(Request.chat(messages, QUICK)).run()


def test_the_copy_keeps_the_model_and_carries_the_new_template(with_template, smollm):
    engine = LlamaCppEngine(with_template("{{ 'Q: ' + messages[-1]['content'] + '\\nA:' }}"), model_id="copy")
    try:
        assert engine.render_chat(DOG)[0] == "Q: Tell me how to train my dog to sit\nA:"
        prompt = Request.raw("The capital of France is", QUICK)
        assert engine.generate(prompt).run() == smollm.generate(prompt).run()
    finally:
        engine.close()


@pytest.mark.timeout(20)
def test_a_nested_loop_template_is_stopped_within_the_time_budget(with_template):
    engine = LlamaCppEngine(with_template(NESTED_LOOP), model_id="loopy")
    try:
        started = time.monotonic()
        with pytest.raises(TuituneError, match=r"loopy's chat template ran past its 2 s budget \(line 1\)"):
            chat(engine)
        assert time.monotonic() - started < 3
    finally:
        engine.close()


def test_a_huge_string_is_refused_before_it_is_built_and_says_why(with_template):
    engine = LlamaCppEngine(with_template(HUGE_STRING), model_id="greedy")
    try:
        with pytest.raises(TuituneError) as caught:
            chat(engine)
        message = str(caught.value)
        assert "greedy's chat template would build a value with * of about 100,000,000,000 characters" in message
        assert "\n" not in message and "--mode raw" in message
    finally:
        engine.close()


def test_a_syntax_error_is_reported_at_load_with_its_line(with_template, smollm_path):
    """llama-cpp-python compiles the GGUF's template while loading, so the load is where it is reported."""
    from tuitune.training.formatting import Formatter

    expected = (
        r"^broken's chat template does not compile: Expected an expression.* on line 2; fix it .*gguf-new-metadata"
    )
    with pytest.raises(TuituneError, match=expected):
        LlamaCppEngine(with_template(SYNTAX_ERROR), model_id="broken")
    with pytest.raises(TuituneError, match=r"chat template does not compile: .* on line 2;"):
        Formatter(with_template(SYNTAX_ERROR))
    with pytest.raises(TuituneError, match=r"^broken's chat template does not compile: .* on line 2;"):
        LlamaCppEngine(smollm_path, model_id="broken", chat_template=SYNTAX_ERROR)


def test_raise_exception_becomes_the_error_message_in_chat_and_in_training(with_template):
    from tuitune.training.formatting import Formatter

    path = with_template(REFUSES_SYSTEM)
    conversation = [Message("system", "Be brief."), *DOG]
    formatter = Formatter(path)
    try:
        with pytest.raises(TuituneError, match="chat template refused the conversation: System role not supported;"):
            formatter.render_prompt(conversation)
        assert formatter.render_prompt(DOG)[0] == DOG[0].content
    finally:
        formatter.close()
    engine = LlamaCppEngine(path, model_id="strict")
    try:
        with pytest.raises(TuituneError, match=r"^strict's chat template refused the conversation: System role not"):
            chat(engine, conversation)
    finally:
        engine.close()


@pytest.mark.timeout(20)
def test_cancelling_a_generation_stops_a_slow_render_at_once(with_template):
    engine = LlamaCppEngine(with_template(NESTED_LOOP), model_id="loopy")
    try:
        generation = engine.generate(Request.chat(DOG, QUICK))
        worker = threading.Thread(target=generation.run, daemon=True)
        worker.start()
        time.sleep(0.3)
        cancelled_at = time.monotonic()
        generation.cancel()
        worker.join(5)
        assert not worker.is_alive()
        assert time.monotonic() - cancelled_at <= 0.1
        assert (generation.stats.finish_reason, generation.stats.stopped_during) == ("cancelled", "reading")
    finally:
        engine.close()


def test_an_empty_raw_prompt_is_a_clear_error(smollm):
    with pytest.raises(TuituneError, match=r"^the prompt is empty: raw mode needs at least one token$"):
        smollm.generate(Request.raw("", QUICK)).run()


def test_a_chat_prompt_that_renders_to_nothing_is_a_clear_error(with_template):
    engine = LlamaCppEngine(with_template(RENDERS_NOTHING), model_id="mute")
    try:
        with pytest.raises(TuituneError, match=r"^the chat prompt for mute is empty"):
            chat(engine)
    finally:
        engine.close()


def test_an_engine_takes_a_template_that_replaces_the_ggufs(smollm_path):
    engine = LlamaCppEngine(smollm_path, model_id="custom", chat_template="{{ bos_token }}[{{ messages[0].content }}]")
    try:
        assert engine.render_chat(DOG) == (f"<|im_start|>[{DOG[0].content}]", (), False)
        with pytest.raises(TuituneError, match="custom's chat template"):
            LlamaCppEngine(smollm_path, model_id="custom", chat_template=NESTED_LOOP).render_chat(DOG)
    finally:
        engine.close()


# -- the renderer itself -----------------------------------------------------------------------------------
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_the_same_text_as_llama_cpp_pythons_formatter_on_real_templates(model, add_generation_prompt, catalog):
    """SmolLM2's own GGUF template; the Gemma base GGUF has none, so it gets llama-cpp-python's shipped
    templates (Mistral's raises on a system message: both must refuse the same conversations)."""
    import llama_cpp
    from llama_cpp import llama_chat_format as lcf

    from tuitune.engines.templates import TemplateError, model_chat_template
    from tuitune.sources import model_path

    llm = llama_cpp.Llama(model_path=str(model_path(catalog.get(model))), vocab_only=True, verbose=False)
    try:
        own = llm.metadata.get("tokenizer.chat_template")
        sources = [own] if own else [lcf.CHATML_CHAT_TEMPLATE, lcf.LLAMA3_INSTRUCT_CHAT_TEMPLATE]
        sources.append(lcf.MISTRAL_INSTRUCT_CHAT_TEMPLATE)
        for source in sources:
            ours = model_chat_template(llm, model, source)
            eos, bos = (llm._model.token_get_text(t) for t in (llm.token_eos(), llm.token_bos()))
            theirs = lcf.Jinja2ChatFormatter(source, eos, bos, add_generation_prompt=add_generation_prompt)
            for messages in CONVERSATIONS:
                dicts = [{"role": m.role, "content": m.content} for m in messages]
                try:
                    expected = theirs(messages=dicts)
                except ValueError:
                    with pytest.raises(TemplateError, match="refused the conversation"):
                        ours.render(messages, add_generation_prompt=add_generation_prompt)
                    continue
                rendered = ours.render(messages, add_generation_prompt=add_generation_prompt)
                assert rendered.prompt == expected.prompt
                assert list(rendered.stop) == expected.stop
    finally:
        llm.close()


def test_the_engine_and_the_trainer_render_smollm_as_llama_cpp_python_does(smollm, smollm_path):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from tuitune.training.formatting import Formatter

    formatter = Formatter(smollm_path)
    try:
        theirs = Jinja2ChatFormatter(smollm._llm.metadata["tokenizer.chat_template"], "<|im_end|>", "<|im_start|>")
        for messages in CONVERSATIONS:
            expected = theirs(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
            assert smollm.render_chat(messages) == (expected, (), False)
            assert formatter.render_prompt(messages) == (expected, False)
    finally:
        formatter.close()


@pytest.mark.parametrize(
    "source",
    [
        "{% set s = 'a' * 900000 %}{{ s ~ s }}",
        "{% set s = 'a' * 900000 %}{{ ([s] * 100) | join }}",
        "{{ ', '.join(['x' * 1000] * 1000) }}",
        "{{ 'a' | center(10**11) }}",
        "{{ 'a'.ljust(10**11) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ ('a' * 1000) | replace('a', 'b' * 100000) }}",
        "{{ ('\\n' * 100000) | indent(1000) }}",
        "{{ 2 ** (10**7) }}",
        "{% for i in range(100000) %}{{ 'a' * 20 }}{% endfor %}",
    ],
)
def test_every_way_to_grow_a_string_is_bounded(source):
    from tuitune.engines.templates import ChatTemplate, TemplateError

    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"^evil's chat template (would build|produced more than)"):
        ChatTemplate(source, "evil").render(DOG)
    assert time.monotonic() - started < 1.5


@pytest.mark.timeout(20)
def test_ctrl_c_interrupts_a_render_on_the_main_thread():
    from tuitune.engines.templates import ChatTemplate

    template = ChatTemplate(NESTED_LOOP, "loopy")
    timer = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            template.render(DOG)
        assert time.monotonic() - started < 1.0  # the interrupt, not the 2 s budget
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


def test_the_threads_own_trace_function_is_put_back():
    import sys

    from tuitune.engines.templates import ChatTemplate, TemplateError

    def tracer(frame, event, arg):
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        ChatTemplate("{{ messages[0].content }}", "m").render(DOG)
        with pytest.raises(TemplateError):
            ChatTemplate(HUGE_STRING, "m").render(DOG)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(previous)
