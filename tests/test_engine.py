"""The llama.cpp engine on the real demo models: the "why finetune" experiment, stats, seeds, cancel."""

from __future__ import annotations

import re
import threading

import pytest

from tests.conftest import DOG_PROMPT
from tuitune.compare import Prompt, run_comparisons
from tuitune.engines.base import Message, Request, Sampling
from tuitune.engines.llama import LlamaCppEngine, split_at_stop
from tuitune.engines.threads import DEFAULT_BUDGET
from tuitune.errors import ContextOverflowError

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
