"""The llama.cpp engine on the real demo models: the "why finetune" experiment, stats, seeds, cancel."""

from __future__ import annotations

import re
import threading
import time
from itertools import pairwise

import pytest

from tests.conftest import DOG_PROMPT
from tuitune.compare import Prompt, run_comparisons
from tuitune.engines.base import LoadControl, Message, Request, Sampling
from tuitune.engines.llama import LlamaCppEngine, split_at_stop
from tuitune.engines.threads import DEFAULT_BUDGET
from tuitune.errors import ContextOverflowError, StoppedError

GREEDY = Sampling(temperature=0.0, max_tokens=80)


def repeated_lines(text: str) -> int:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) - len(set(lines))


def test_base_model_raw_continues_and_repeats_the_prompt(gemma):
    generation = gemma.generate(Request.raw(DOG_PROMPT, GREEDY))
    text = generation.run()
    # It does not answer: it continues the sentence and loops on the prompt's own words.
    assert "train my dog to sit" in text
    assert repeated_lines(text) >= 2
    assert generation.stats.finish_reason == "length"


def test_chat_model_answers_the_question(smollm):
    generation = smollm.generate(Request.chat([Message("user", DOG_PROMPT)], GREEDY))
    text = generation.run().lower()
    assert "sit" in text
    assert any(word in text for word in ("step", "treat", "command", "reward", "training"))
    assert repeated_lines(text) == 0
    assert generation.notices == []  # SmolLM2's GGUF carries its own chat template


def test_stats_are_filled_and_plausible(smollm):
    generation = smollm.generate(Request.raw("The capital of France is", Sampling(temperature=0, max_tokens=16)))
    generation.run()
    stats = generation.stats
    assert stats.prompt_tokens == len(smollm.tokenize("The capital of France is"))
    assert 1 <= stats.completion_tokens <= 16
    assert 0 < stats.ttft_s < 10
    assert stats.finish_reason in ("stop", "length")
    if stats.completion_tokens > 2:
        assert 2 < stats.decode_tokens_per_s < 2000
    assert stats.total_s >= stats.ttft_s


def test_length_limit_is_exact(gemma):
    generation = gemma.generate(Request.raw(DOG_PROMPT, Sampling(temperature=0, max_tokens=12)))
    generation.run()
    assert (generation.stats.completion_tokens, generation.stats.finish_reason) == (12, "length")


def test_chat_on_a_model_without_template_says_which_format(gemma):
    generation = gemma.generate(Request.chat([Message("user", DOG_PROMPT)], Sampling(temperature=0, max_tokens=24)))
    generation.run()
    assert any("no chat template" in n and "'gemma' format" in n for n in generation.notices)
    assert "<start_of_turn>" not in generation.text


def test_same_seed_same_answer_other_seed_other_answer(smollm):
    def answer(seed: int) -> str:
        sampling = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=24, seed=seed)
        return smollm.generate(Request.raw("Once upon a time", sampling)).run()

    first = answer(7)
    assert answer(7) == first
    assert {answer(seed) for seed in (1, 2, 3)} - {first}


def test_cancel_stops_the_stream(gemma):
    generation = gemma.generate(Request.raw(DOG_PROMPT, Sampling(temperature=0, max_tokens=200)))
    for index, _ in enumerate(generation):
        if index == 3:
            generation.cancel()
    assert generation.stats.finish_reason == "cancelled"
    assert generation.stats.completion_tokens <= 5


def test_cancel_from_another_thread(gemma):
    generation = gemma.generate(Request.raw(DOG_PROMPT, Sampling(temperature=0, max_tokens=400)))
    timer = threading.Timer(0.3, generation.cancel)
    timer.start()
    generation.run()
    assert generation.stats.finish_reason == "cancelled"
    assert generation.stats.completion_tokens < 400


def test_stop_strings_end_the_answer_and_are_not_shown(gemma):
    generation = gemma.generate(Request.raw(DOG_PROMPT, Sampling(temperature=0, max_tokens=80, stop=("chair",))))
    text = generation.run()
    assert "chair" not in text and generation.stats.finish_reason == "stop"


def test_split_at_stop_holds_back_partial_matches():
    assert split_at_stop("hello wor", ("world",)) == ("hello ", "wor", False)
    assert split_at_stop("hello world!", ("world",)) == ("hello ", "", True)
    assert split_at_stop("plain", ()) == ("plain", "", False)


def test_prompt_longer_than_context_is_a_clear_error(smollm_path):
    engine = LlamaCppEngine(smollm_path, model_id="smol", n_ctx=64)
    try:
        with pytest.raises(ContextOverflowError, match=r"prompt is \d+ tokens but smol's context holds 64"):
            engine.generate(Request.raw("word " * 200, GREEDY)).run()
    finally:
        engine.close()


def test_multi_turn_chat_uses_history(smollm):
    messages = [
        Message("user", "My name is Ada. Remember it."),
        Message("assistant", "Nice to meet you, Ada! I'll remember your name."),
        Message("user", "What is my name?"),
    ]
    # A 135M model is too small to be relied on for recall; check that the history reaches the model.
    prompt, _, _ = smollm.render_chat(messages)
    assert prompt.index("My name is Ada") < prompt.index("Nice to meet you, Ada") < prompt.index("What is my name?")
    follow_up = smollm.generate(Request.chat(messages, Sampling(temperature=0, max_tokens=4)))
    alone = smollm.generate(Request.chat(messages[-1:], Sampling(temperature=0, max_tokens=4)))
    follow_up.run(), alone.run()
    assert follow_up.stats.prompt_tokens > alone.stats.prompt_tokens + 15


def test_models_generate_concurrently_with_split_threads(catalog):
    active: list[int] = []

    def on_chunk(prompt_index: int, model_index: int, text: str) -> None:
        active.append(DEFAULT_BUDGET.active)

    [comparison] = run_comparisons(
        [Prompt(DOG_PROMPT)],
        ["gemma-3-270m", "smollm2-135m-instruct"],
        sampling=Sampling(temperature=0, max_tokens=60),
        catalog=catalog,
        n_ctx=1024,
        on_chunk=on_chunk,
    )
    gemma_result, smollm_result = comparison.results
    assert (gemma_result.model, gemma_result.mode) == ("gemma-3-270m", "raw")
    assert (smollm_result.model, smollm_result.mode) == ("smollm2-135m-instruct", "chat")
    assert "train my dog to sit" in gemma_result.text and "sit" in smollm_result.text.lower()
    assert max(active) == 2  # both streams were live at once
    assert DEFAULT_BUDGET.threads() == DEFAULT_BUDGET.cores  # released afterwards


def test_both_modes_run_the_2x2(catalog):
    [comparison] = run_comparisons(
        [Prompt(DOG_PROMPT)], ["gemma-3-270m", "smollm2-135m-instruct"], mode="both",
        sampling=Sampling(temperature=0, max_tokens=8), catalog=catalog, n_ctx=512,
    )  # fmt: skip
    assert [(r.model, r.mode) for r in comparison.results] == [
        ("gemma-3-270m", "raw"), ("gemma-3-270m", "chat"),
        ("smollm2-135m-instruct", "raw"), ("smollm2-135m-instruct", "chat"),
    ]  # fmt: skip
    assert all(r.text and r.error is None for r in comparison.results)


def test_a_failing_model_does_not_stop_the_others(catalog, tmp_path, smollm_path):
    broken = tmp_path / "broken.gguf"
    with smollm_path.open("rb") as source:
        broken.write_bytes(source.read(5_000_000))
    [comparison] = run_comparisons(
        [Prompt("Hello")], [str(broken), "smollm2-135m-instruct"],
        sampling=Sampling(temperature=0, max_tokens=8), catalog=catalog,
    )  # fmt: skip
    failed, ok = comparison.results
    assert failed.error and re.search("truncated", failed.error)
    assert ok.error is None and ok.text


# -- reading a long prompt, stopping, loading ---------------------------------------------------------------
SENTENCES = (
    "The river bends past the old mill where the miller's children once fished for trout.",
    "In 1887 the town council voted to build a stone bridge, but the money ran out twice.",
    "Quantum computers promise to factor large numbers, yet error correction remains hard.",
    "She packed three apples, a wool scarf and a map before climbing toward the northern ridge.",
    "Bakers knead the dough slowly; patience gives the bread its open, airy crumb.",
    "Every spring the swallows return to the barn and rebuild their nests of mud and straw.",
)
LONG_PROMPT = " ".join(f"{SENTENCES[i % len(SENTENCES)]} (note {i})" for i in range(122))  # ~2,950 Gemma tokens
SHORT_PROMPT = SENTENCES[0]  # a prefix of LONG_PROMPT: a stale cache of it would be reused
LONG_GREEDY = Sampling(temperature=0.0, max_tokens=16, seed=7)


def watched(generation) -> list[tuple]:
    """Every progress report and chunk of ``generation``, in order: ("reading", n), ("generating", n), ("chunk", s)."""
    events: list[tuple] = []
    generation.on_progress(lambda g: events.append((g.phase, g.prompt_done)))
    for chunk in generation:
        events.append(("chunk", chunk))
    return events


@pytest.fixture(scope="module")
def gemma_4k(gemma_path):
    engine = LlamaCppEngine(gemma_path, model_id="gemma-3-270m", n_ctx=4096, chat_format="gemma")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def long_read(gemma_4k):
    """One greedy answer to LONG_PROMPT read from scratch, with its events (prints how long the reading took)."""
    gemma_4k.forget_prompt_cache()
    generation = gemma_4k.generate(Request.raw(LONG_PROMPT, LONG_GREEDY))
    events = watched(generation)
    stats = generation.stats
    print(f"read {stats.prompt_tokens} tokens, first token after {stats.ttft_s:.2f} s, all in {stats.total_s:.2f} s")
    return generation, events


def test_reading_a_long_prompt_reports_each_batch(gemma_4k, long_read):
    generation, events = long_read
    prompt_tokens, n_batch = generation.stats.prompt_tokens, gemma_4k._llm.n_batch
    assert 2500 < prompt_tokens < 3500
    phases = [kind for kind, _ in events]
    first_chunk = phases.index("chunk")
    assert phases.count("generating") == 1 and phases.index("generating") == first_chunk - 1
    assert set(phases[: first_chunk - 1]) == {"reading"}
    read = [done for kind, done in events[: first_chunk - 1]]
    assert all(a < b for a, b in pairwise(read)), read
    assert read[-1] == prompt_tokens
    assert len(read) >= prompt_tokens // n_batch
    assert (generation.phase, generation.prompt_done) == ("generating", prompt_tokens)
    assert generation.text and generation.stats.finish_reason == "length"


def test_batched_reading_gives_llama_cpp_pythons_own_answer(gemma_4k, long_read):
    generation, _ = long_read
    sampling = LONG_GREEDY
    gemma_4k._llm.reset()
    reference = gemma_4k._llm.create_completion(
        LONG_PROMPT,
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        min_p=sampling.min_p,
        repeat_penalty=sampling.repeat_penalty,
        seed=sampling.seed,
    )
    gemma_4k.forget_prompt_cache()
    assert reference["usage"]["prompt_tokens"] == generation.stats.prompt_tokens
    assert generation.text and generation.text == reference["choices"][0]["text"]


def short_answer(engine) -> tuple[str, list[tuple]]:
    generation = engine.generate(Request.raw(SHORT_PROMPT, Sampling(temperature=0, max_tokens=12, seed=7)))
    events = watched(generation)
    assert generation.stats.finish_reason in ("stop", "length") and generation.text
    return generation.text, events


def test_cancel_while_reading_stops_within_a_batch_and_the_engine_recovers(gemma_4k):
    gemma_4k.forget_prompt_cache()
    generation = gemma_4k.generate(Request.raw(LONG_PROMPT, LONG_GREEDY))
    batches_read_at: list[float] = []
    generation.on_progress(lambda _: batches_read_at.append(time.perf_counter()))
    cancelled_at: list[float] = []

    def cancel() -> None:
        cancelled_at.append(time.perf_counter())
        generation.cancel()

    timer = threading.Timer(1.0, cancel)
    timer.start()
    try:
        text = generation.run()
    finally:
        timer.cancel()
    stopped_in = time.perf_counter() - cancelled_at[0]
    print(f"cancel 1 s into reading: back {stopped_in * 1000:.0f} ms after it, {generation.prompt_done} tokens read")
    # llama.cpp's abort cut the batch in progress: the engine returned, and no batch finished, in less than half
    # the time a batch takes (measured on this run, so a slow machine makes it no flakier).
    before = [at for at in batches_read_at if at <= cancelled_at[0]]
    # The first report is the start of the reading, then one per batch; with none finished before the cancel,
    # a batch takes at least the time since the start.
    elapsed = before[-1] - before[0] if len(before) > 1 else cancelled_at[0] - before[0]
    batch_s = elapsed / max(1, len(before) - 1)
    assert stopped_in < batch_s / 2, (stopped_in, batch_s)
    assert all(at - cancelled_at[0] < batch_s / 2 for at in batches_read_at if at > cancelled_at[0])
    stats = generation.stats
    assert (stats.finish_reason, stats.stopped_during, generation.phase) == ("cancelled", "reading", "reading")
    assert text == "" and stats.completion_tokens == 0
    assert generation.prompt_done < stats.prompt_tokens
    # The same engine answers next, from scratch, and as it would on a clean cache.
    after_cancel, events = short_answer(gemma_4k)
    assert events[0] == ("reading", 0)
    gemma_4k.forget_prompt_cache()
    assert short_answer(gemma_4k)[0] == after_cancel


def test_cancel_between_batches_leaves_no_prefix_to_reuse(gemma_4k):
    gemma_4k.forget_prompt_cache()
    generation = gemma_4k.generate(Request.raw(LONG_PROMPT, LONG_GREEDY))
    n_batch = gemma_4k._llm.n_batch
    generation.on_progress(lambda g: g.cancel() if g.prompt_done >= n_batch else None)
    assert generation.run() == ""
    assert (generation.stats.stopped_during, generation.prompt_done) == ("reading", n_batch)
    # The first batch was read completely; reusing it for a prompt that starts the same would be stale.
    _, events = short_answer(gemma_4k)
    assert events[0] == ("reading", 0)


def test_cancel_while_generating_keeps_the_partial_text(gemma):
    gemma.forget_prompt_cache()
    full = gemma.generate(Request.raw(DOG_PROMPT, Sampling(temperature=0, max_tokens=40))).run()
    gemma.forget_prompt_cache()
    generation = gemma.generate(Request.raw(DOG_PROMPT, Sampling(temperature=0, max_tokens=40)))
    chunks = []
    for chunk in generation:
        chunks.append(chunk)
        if len(chunks) == 4:
            generation.cancel()
    stats = generation.stats
    assert (stats.finish_reason, stats.stopped_during, generation.phase) == ("cancelled", "generating", "generating")
    assert len(chunks) == 4 and generation.text == "".join(chunks)
    assert full.startswith(generation.text) and len(generation.text) < len(full)
    assert stats.completion_tokens < 40


def test_load_progress_rises_to_one(smollm_path):
    fractions: list[float] = []
    engine = LlamaCppEngine(smollm_path, model_id="smol", n_ctx=256, load=LoadControl(fractions.append))
    engine.close()
    assert len(fractions) >= 2, fractions
    assert all(a <= b for a, b in pairwise(fractions)), fractions
    assert fractions[-1] == 1.0


@pytest.mark.parametrize("model", ["smollm_path", "gemma_path"])
def test_a_load_stopped_from_its_progress_callback_is_abandoned(model, request):
    path = request.getfixturevalue(model)
    fractions: list[float] = []

    def on_progress(fraction: float) -> None:
        fractions.append(fraction)
        if fraction > 0:
            control.cancel()

    control = LoadControl(on_progress)
    with pytest.raises(StoppedError, match="was stopped"):
        LlamaCppEngine(path, model_id="stopped", n_ctx=256, load=control)
    assert fractions and fractions[-1] < 1.0, fractions  # llama.cpp stopped reading at once
    engine = LlamaCppEngine(path, model_id="again", n_ctx=256)  # the file and the loader are fine afterwards
    try:
        assert engine.generate(Request.raw("Hello", Sampling(temperature=0, max_tokens=4))).run()
    finally:
        engine.close()


def test_a_load_stopped_before_it_starts_reads_nothing(smollm_path):
    fractions: list[float] = []
    control = LoadControl(fractions.append)
    control.cancel()
    with pytest.raises(StoppedError):
        LlamaCppEngine(smollm_path, model_id="stopped", n_ctx=256, load=control)
    assert fractions == []


def test_context_overflow_names_the_setting_of_each_front_end(smollm_path):
    engine = LlamaCppEngine(smollm_path, model_id="smol", n_ctx=64)
    try:
        with pytest.raises(ContextOverflowError) as caught:
            engine.generate(Request.raw("word " * 200, GREEDY)).run()
        trained = engine.info.context_length
    finally:
        engine.close()
    error = caught.value
    assert (error.prompt_tokens, error.n_ctx, error.trained) == (201, 64, trained)
    assert trained > 64
    explained = error.explain("raise 'context' in the parameters (Ctrl+O)")
    assert f"or raise 'context' in the parameters (Ctrl+O) (up to {trained})" in explained
    assert "--ctx" not in explained and "prompt is 201 tokens but smol's context holds 64" in explained
    assert f"raise --ctx (up to {trained})" in str(error)
