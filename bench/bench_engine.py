"""Decode tokens/s through tuitune's engine vs a bare llama-cpp-python loop, same model, same threads.

Both run on the *same* ``Llama`` object, greedy, on the same prompt, interleaved round by round so drift
in machine load hits both alike. Baselines: the bare ``Llama.generate`` token loop (no detokenization: the
strictest), and ``create_completion(stream=True)`` (what most code calls). Target: engine/bare >= 0.97.

    python bench/bench_engine.py [--tokens 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

from _common import DOG_PROMPT, demo_model, median, table


def bare_generate(llm, prompt: str, n_tokens: int) -> float:
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.set_seed(42)
    count, first, last = 0, None, None
    stream = llm.generate(tokens, top_k=40, top_p=0.95, min_p=0.05, temp=0.0, repeat_penalty=1.0, reset=True)
    for _ in stream:
        last = time.perf_counter()
        first = first or last
        count += 1
        if count >= n_tokens:
            break
    stream.close()
    return (count - 1) / (last - first)


def bare_completion(llm, prompt: str, n_tokens: int) -> float:
    count, first, last = 0, None, None
    for _ in llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0, seed=42, stream=True):
        last = time.perf_counter()
        first = first or last
        count += 1
    return (count - 1) / (last - first)


def through_engine(engine, prompt: str, n_tokens: int) -> float:
    from tuitune.engines.base import Request, Sampling

    generation = engine.generate(Request.raw(prompt, Sampling(temperature=0.0, max_tokens=n_tokens)))
    generation.run()
    return generation.stats.decode_tokens_per_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from tuitune.engines.llama import LlamaCppEngine

    rows = []
    for model_id, prompt in (("smollm2-135m-instruct", "Once upon a time"), ("gemma-3-270m", DOG_PROMPT)):
        engine = LlamaCppEngine(demo_model(model_id), model_id=model_id, n_ctx=1024)
        llm = engine._llm
        runs = {"engine": [], "generate": [], "completion": []}
        through_engine(engine, prompt, 16)  # warm-up
        for _ in range(args.rounds):
            runs["generate"].append(bare_generate(llm, prompt, args.tokens))
            runs["engine"].append(through_engine(engine, prompt, args.tokens))
            runs["completion"].append(bare_completion(llm, prompt, args.tokens))
        engine.close()
        speeds = {name: median(values) for name, values in runs.items()}
        rows.append(
            (
                model_id,
                engine._threads,
                f"{speeds['generate']:.1f}",
                f"{speeds['completion']:.1f}",
                f"{speeds['engine']:.1f}",
                f"**{speeds['engine'] / speeds['generate']:.3f}**",
                f"{speeds['engine'] / speeds['completion']:.3f}",
            )
        )
    print(f"decode tokens/s, greedy, {args.tokens} tokens, median of {args.rounds} interleaved rounds\n")
    header = ("model", "threads", "bare generate loop", "bare create_completion", "tuitune engine",
              "engine / bare loop", "engine / create_completion")  # fmt: skip
    print(table(header, rows))


if __name__ == "__main__":
    main()
