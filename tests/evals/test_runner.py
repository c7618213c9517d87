"""`tuitune eval`: suites scored by their checks on the real demo models, reports, and held-out loss.

The held-out loss is checked against a direct teacher-forced computation through ``LlamaCppEngine.logits``;
the adapter sweep uses a small random LoRA written straight to GGUF (no torch), so scale 0 must give exactly
the base's answers and loss while scale 1 changes them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests import conftest
from tests.conftest import REPO, run_cli

BASE, CHAT = "gemma-3-270m", "smollm2-135m-instruct"
PAIR = f"{BASE},{CHAT}"
WHY = REPO / "suites" / "why-finetune.toml"
HELDOUT = REPO / "data" / "tuitune-heldout.jsonl"
WHY_IDS = ["dog", "mars", "taylor-swift", "amazon-agent", "dog-inst"]


one_clear_error = functools.partial(conftest.one_clear_error, code=1)  # eval's usage errors exit 1


# -- suites on the demo models -------------------------------------------------------------------------
def test_why_finetune_scoreboard_base_rambles_and_chat_passes_more():
    result = run_cli("eval", "--suite", str(WHY), "--models", PAIR, "--max-tokens", "80", "--json", timeout=900)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress line off a terminal, llama.cpp's log in its file
    payload = json.loads(result.stdout)
    assert payload["suite"] == "why-finetune" and payload["repeat"] == 1
    assert payload["sampling"]["temperature"] == 0.0 and payload["sampling"]["max_tokens"] == 80
    assert [c["label"] for c in payload["columns"]] == [BASE, CHAT]
    assert [p["id"] for p in payload["prompts"]] == WHY_IDS
    cells = {(c["prompt"], c["column"]): c for c in payload["cells"]}
    assert len(cells) == 10
    for cell in cells.values():
        assert len(cell["answers"]) == 1 and cell["error"] is None and cell["checks"]
        assert 0 <= cell["score"] <= 1 and 0 <= cell["repetition"] <= 1
    assert cells[("dog", BASE)]["mode"] == "raw" and cells[("dog", CHAT)]["mode"] == "chat"
    assert cells[("amazon-agent", CHAT)]["mode"] == "raw"  # pinned by the suite
    summary = {row["column"]: row for row in payload["summary"]}
    base, chat = summary[BASE], summary[CHAT]
    print(f"base {base}\nchat {chat}")
    assert base["mean_repetition"] > chat["mean_repetition"]  # the base model continues and repeats itself
    assert chat["pass_rate"] > base["pass_rate"]
    assert base["prompts"] == chat["prompts"] == 5 and base["checks"] == chat["checks"] > 5
    assert base["stability"] == chat["stability"] == 1.0
    assert base["tokens_per_s"] > 0 and chat["tokens_per_s"] > 0


def test_markdown_and_csv_reports_written_with_out(tmp_path: Path):
    common = ("eval", "--suite", str(WHY), "--models", CHAT, "--max-tokens", "16")
    md_file, csv_file = tmp_path / "report.md", tmp_path / "report.csv"
    md = run_cli(*common, "--format", "md", "--out", str(md_file))
    assert md.returncode == 0, md.stderr
    assert md.stdout.strip() == f"wrote {md_file}"
    text = md_file.read_text(encoding="utf-8")
    lines = text.splitlines()
    header = f"| prompt | {CHAT} |"
    assert header in lines
    start = lines.index(header)
    assert lines[start + 1] == "| --- | --- |"
    rows = lines[start + 2 : start + 2 + len(WHY_IDS)]
    assert [row.split("|")[1].strip() for row in rows] == WHY_IDS
    assert all(("✓" in row or "✗" in row) and row.endswith("|") for row in rows)
    assert "pass rate" in text and "distinct answers / runs" in text

    plain = run_cli(*common, "--out", str(tmp_path / "default.md"))  # --out alone: Markdown
    assert plain.returncode == 0, plain.stderr
    assert header in (tmp_path / "default.md").read_text(encoding="utf-8").splitlines()

    out = run_cli(*common, "--format", "csv", "--out", str(csv_file))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert [row["prompt"] for row in rows] == WHY_IDS and {row["column"] for row in rows} == {CHAT}
    for row in rows:
        assert 0 <= float(row["score"]) <= 1 and row["passed"] in ("yes", "no")
        assert int(row["completion_tokens"]) <= 16 and row["distinct"] == "1" and row["runs"] == "1"
    assert rows[0]["stops cleanly"] in ("pass", "fail") and rows[0]['contains "sit"'] in ("pass", "fail")
    assert rows[1]['contains "sit"'] == ""  # a check the prompt does not have: empty, not a fail


def test_repeat_with_temperature_reports_distinct_answers():
    result = run_cli("eval", "--suite", str(WHY), "--models", CHAT, "--repeat", "2", "--temperature", "0.8",
                     "--max-tokens", "12", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["repeat"] == 2
    for cell in payload["cells"]:
        assert len(cell["answers"]) == 2 and 1 <= cell["distinct"] <= 2
    (summary,) = payload["summary"]
    assert 0.5 <= summary["stability"] <= 1.0

    text = run_cli("eval", "--suite", str(WHY), "--models", CHAT, "--repeat", "2", "--max-tokens", "4")
    assert text.returncode == 0, text.stderr
    assert "1.0/2" in text.stdout  # greedy repeats give the same answer: one distinct answer per two runs
    assert "(1/2)" in text.stdout


# -- scale sweeps, with a real (random) LoRA ---------------------------------------------------------
def random_adapter(base_gguf: Path, out: Path, rank: int = 4, std: float = 0.1) -> Path:
    """A LoRA GGUF on SmolLM2's attention Q and V with random A and B: enough to change its answers."""
    from gguf import GGUFReader, GGUFType, GGUFWriter, Keys

    shapes = {t.name: [int(n) for n in t.shape] for t in GGUFReader(base_gguf).tensors}  # ggml order: in, out
    generator = np.random.default_rng(0)
    writer = GGUFWriter(out, "llama")
    writer.add_type(GGUFType.ADAPTER)
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, float(rank))
    for name, shape in shapes.items():
        if name.endswith(("attn_q.weight", "attn_v.weight")):
            n_in, n_out = shape
            writer.add_tensor(f"{name}.lora_a", generator.normal(0, std, (rank, n_in)).astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", generator.normal(0, std, (n_out, rank)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture
def tuned(smollm_path: Path, tuitune_dirs: dict[str, Path], tmp_path: Path) -> str:
    adapter = random_adapter(smollm_path, tmp_path / "random-lora.gguf")
    tuitune_dirs["config"].mkdir(parents=True, exist_ok=True)
    (tuitune_dirs["config"] / "models.toml").write_text(
        f'[[model]]\nid = "smollm-random"\nname = "SmolLM2 + random LoRA"\nkind = "finetuned"\nfamily = "llama"\n'
        f'base = "{CHAT}"\nadapter = "{adapter}"\n',
        encoding="utf-8",
    )
    return "smollm-random"


def test_adapter_scale_sweep_columns_and_scale_zero_is_the_base(tuned: str, tmp_path: Path):
    from tuitune.catalog import load_catalog
    from tuitune.engines import Sampling
    from tuitune.evals.loss import heldout_loss
    from tuitune.evals.runner import Column, run_eval
    from tuitune.suites import load_suite

    suite_file = tmp_path / "two.toml"
    suite_file.write_text(
        'name = "two"\n[[prompt]]\nid = "capital"\ngroup = "control"\ntext = "What is the capital of France?"\n'
        'check = [{ type = "contains", value = "Paris" }]\n'
        '[[prompt]]\nid = "name"\ngroup = "identity"\ntext = "What is your name?"\n'
        'check = [{ type = "contains", value = "Tuitune" }]\n',
        encoding="utf-8",
    )
    catalog = load_catalog()
    progress: list[tuple[int, int]] = []
    report = run_eval(load_suite(suite_file), [CHAT, tuned], adapter_scales=[0, 1], catalog=catalog,
                      sampling=Sampling(temperature=0.0, max_tokens=24),
                      on_progress=lambda done, total: progress.append((done, total)))  # fmt: skip
    assert report.columns == [Column(CHAT, CHAT), Column(f"{tuned}@0", tuned, 0.0), Column(f"{tuned}@1", tuned, 1.0)]
    assert sorted(progress)[-1] == (6, 6) and len(progress) == 6
    for prompt in ("capital", "name"):
        base = report.cell(prompt, CHAT)
        assert base.error is None and base.completion_tokens > 0
        assert report.cell(prompt, f"{tuned}@0").answers == base.answers  # scale 0 is exactly the base
    assert report.cell("capital", f"{tuned}@1").answers != report.cell("capital", CHAT).answers
    rows = {row.column: row for row in report.summary()}
    assert set(rows[CHAT].groups) == {"control", "identity"}
    assert rows[CHAT].groups == rows[f"{tuned}@0"].groups

    ten = tmp_path / "ten.jsonl"  # the fewest examples a dataset may have: three models' logits cost seconds
    ten.write_text("\n".join(HELDOUT.read_text(encoding="utf-8").splitlines()[:10]) + "\n", encoding="utf-8")
    losses = heldout_loss(ten, [CHAT, tuned], adapter_scales=[0, 1], catalog=catalog)
    assert [(r.model, r.adapter_scale) for r in losses] == [(CHAT, None), (tuned, 0.0), (tuned, 1.0)]
    assert losses[1].mean_loss == losses[0].mean_loss and losses[1].tokens == losses[0].tokens
    assert losses[2].mean_loss != losses[0].mean_loss


def test_adapter_scale_without_a_finetuned_model_is_a_usage_error():
    line = one_clear_error(run_cli("eval", "--suite", str(WHY), "--models", PAIR, "--adapter-scale", "0,1"))
    assert "finetuned (LoRA)" in line and "none is being evaluated" in line
    bad = run_cli("eval", "--suite", str(WHY), "--models", CHAT, "--adapter-scale", "0,2")
    assert bad.returncode == 2 and "adapter scale 2 is out of range" in bad.stderr  # argparse's usage error, as compare


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--models", CHAT], ["--suite FILE", "--data FILE"]),
        (["--suite", str(WHY), "--data", str(HELDOUT), "--models", CHAT], ["one of them"]),
        (["--suite", str(WHY), "--models", CHAT, "--repeat", "0"], ["--repeat must be at least 1"]),
        (["--suite", str(WHY), "--models", f"{CHAT},nope"], ["unknown model 'nope'"]),
        (["--suite", str(WHY), "--models", f"{CHAT},{CHAT}"], ["given twice"]),
        (["--data", str(HELDOUT), "--models", CHAT, "--repeat", "2"], ["--repeat", "only with --suite"]),
    ],
    ids=["no-input", "both-inputs", "repeat", "unknown-model", "twice", "data-repeat"],
)
def test_eval_usage_errors_are_one_line(args: list[str], fragments: list[str]):
    one_clear_error(run_cli("eval", *args), *fragments)


def test_a_model_that_cannot_load_gives_error_cells_not_a_crash():
    result = run_cli("eval", "--suite", str(WHY), "--models", "/nowhere/model.gguf", "--json")
    one_clear_error(result, "model:", "/nowhere/model.gguf does not exist")
    payload = json.loads(result.stdout)  # the report is still printed
    assert len(payload["cells"]) == 5 and all("does not exist" in cell["error"] for cell in payload["cells"])
    (summary,) = payload["summary"]
    assert summary["pass_rate"] == 0 and summary["prompts"] == 5 and summary["checks_passed"] == 0


# -- held-out loss ---------------------------------------------------------------------------------------
def test_heldout_loss_matches_a_direct_teacher_forced_computation(smollm_path: Path):
    from tuitune.engines.llama import LlamaCppEngine
    from tuitune.evals.loss import heldout_loss
    from tuitune.training.data import load_examples
    from tuitune.training.formatting import Formatter

    (result,) = heldout_loss(HELDOUT, [CHAT])
    assert result.model == CHAT and result.adapter_scale is None and result.examples == 16
    assert math.isfinite(result.mean_loss) and result.mean_loss > 0
    assert result.perplexity == pytest.approx(math.exp(result.mean_loss), rel=1e-12)

    formatter = Formatter(smollm_path)  # the trainer's formatting: the same token ids and the same mask
    try:
        sequences = [seq for example in load_examples(HELDOUT) for seq in formatter.sequences(example)]
    finally:
        formatter.close()
    engine = LlamaCppEngine(smollm_path, n_ctx=256, logits_all=True)
    total, count = 0.0, 0
    try:
        for seq in sequences:
            logits = engine.logits(seq.input_ids).astype(np.float64)
            for position in range(seq.prompt_tokens, len(seq.input_ids)):
                row = logits[position - 1]  # the logits before a token predict it
                total += float(np.logaddexp.reduce(row) - row[seq.input_ids[position]])
                count += 1
    finally:
        engine.close()
    assert result.tokens == count
    assert result.mean_loss == pytest.approx(total / count, rel=1e-4)


def test_heldout_loss_cli_table_and_json():
    result = run_cli("eval", "--data", str(HELDOUT), "--models", CHAT)
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split() == ["MODEL", "SCALE", "EXAMPLES", "TOKENS", "MEAN", "LOSS", "PERPLEXITY"]
    name, scale, examples, tokens, loss, perplexity = row.split()
    assert (name, scale, examples) == (CHAT, "-", "16") and int(tokens) > 100
    assert float(perplexity) == pytest.approx(math.exp(float(loss)), rel=1e-3)


def test_malformed_data_file_names_the_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    lines = HELDOUT.read_text(encoding="utf-8").splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}'  # cut off: invalid JSON on line 3
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    one_clear_error(run_cli("eval", "--data", str(bad), "--models", CHAT), str(bad), "line 3")


# -- the report itself, without models -----------------------------------------------------------------
def test_summary_groups_differences_and_formats():
    from tuitune.evals.checks import Check, CheckResult
    from tuitune.evals.runner import Cell, Column, EvalReport
    from tuitune.suites import SuitePrompt

    has_name, stops = Check("contains", "Tuitune"), Check("stops_cleanly")
    prompts = [
        SuitePrompt("who", "Who are you?", checks=(has_name, stops), group="identity"),
        SuitePrompt("sum", "2 + 3?", checks=(stops,), group="control"),
    ]
    columns = [Column("a", "a"), Column("b@0.5", "b", 0.5)]

    def cell(prompt: str, column: str, passes: list[bool], answers: list[str], error: str | None = None) -> Cell:
        checks = next(p.checks for p in prompts if p.id == prompt)
        results = [CheckResult(check, ok, "why | not") for check, ok in zip(checks, passes, strict=True)]
        return Cell(prompt, column, answers, results, sum(passes) / len(passes), 10, 20.0 if not error else None,
                    "stop", 0.5, error)  # fmt: skip

    cells = {
        ("who", "a"): cell("who", "a", [True, True], ["I'm Tuitune.", "I'm Tuitune!"]),
        ("who", "b@0.5"): cell("who", "b@0.5", [False, True], ["I'm Smol.", "I'm Smol."]),
        ("sum", "a"): cell("sum", "a", [True], ["5", "5"]),
        ("sum", "b@0.5"): cell("sum", "b@0.5", [False], [], error="boom\x1b[2J"),
    }
    report = EvalReport("t|est", columns, prompts, cells, repeat=2)
    assert report.cell("who", "a").distinct == 2 and report.cell("who", "a").passed
    assert not report.cell("sum", "b@0.5").passed
    assert report.differing_prompts() == {"who", "sum"}
    a, b = report.summary()
    assert (a.column, a.pass_rate, a.prompts_passed, a.prompts, a.checks_passed, a.checks) == ("a", 1.0, 2, 2, 3, 3)
    assert a.stability == pytest.approx((2 / 2 + 1 / 2) / 2) and a.tokens_per_s == 20.0
    assert a.groups == {"identity": 1.0, "control": 1.0}
    assert (b.pass_rate, b.prompts_passed, b.checks_passed, b.checks) == (0.25, 0, 1, 3)  # an error scores 0
    assert b.groups == {"identity": 0.5, "control": 0.0} and b.stability == 0.5  # errors have no answers to count

    md = report.to_markdown()
    assert "| prompt | group | a | b@0.5 |" in md and "| who | identity | ✓ 1.00 (2/2) | ✗ 0.50 (1/2) |" in md
    assert "# Eval: t\\|est" in md and "\x1b" not in md and "I'm Tuitune" not in md  # no answers, no escapes
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [(r["prompt"], r["column"], r["adapter_scale"]) for r in rows] == [
        ("who", "a", ""), ("who", "b@0.5", "0.5"), ("sum", "a", ""), ("sum", "b@0.5", "0.5"),
    ]  # fmt: skip
    assert rows[1]['contains "Tuitune"'] == "fail" and rows[2]['contains "Tuitune"'] == ""
    text = report.format_text()
    assert "\x1b" not in text and "␛" in text and "≠" in text and "1.5/2" in text and "1.0/2" in text
    payload = report.as_json()
    json.dumps(payload)
    assert payload["cells"][0]["answers"] == ["I'm Tuitune.", "I'm Tuitune!"]


def test_cancel_leaves_cells_unanswered_and_uncounted():
    import threading

    from tuitune.evals.runner import run_eval
    from tuitune.suites import load_suite

    cancel = threading.Event()
    cancel.set()  # as if Stop came before the first answer
    progress: list[tuple[int, int]] = []
    report = run_eval(load_suite(WHY), [CHAT], repeat=2, cancel=cancel, on_progress=lambda *p: progress.append(p))
    assert progress[-1] == (10, 10)  # the count still reaches the total, so a progress bar ends
    for prompt in WHY_IDS:
        cell = report.cell(prompt, CHAT)
        assert cell.answers == [] and cell.finish_reason == "cancelled" and cell.error is None and not cell.passed
    (summary,) = report.summary()
    assert summary.prompts == 0 and summary.checks == 0  # nothing was answered: nothing is scored
    assert "stopped" in report.format_text()
