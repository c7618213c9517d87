"""`tuitune export --format merged-gguf`: how long merging + quantizing the SmolLM2 demo finetune takes, and
whether the merged files still score as base + adapter on the held-out set.

Trains the identity finetune the way the docs do (`tuitune train --name tuitune-identity --base
smollm2-135m-instruct --data data/tuitune-identity.jsonl --max-steps 30`) in an isolated data folder, or reuses
it when ``--data-dir`` already holds it, then times `tuitune export NAME --format merged-gguf --quant Q` for f16,
q8_0 and q4_k_m: the wall time of the whole command, and the merge and quantize phases it reports on stderr.
Held-out loss (data/tuitune-heldout.jsonl, llama.cpp) of each file is compared with base + adapter.
Target: merge + quantize ≤ 30 s. Keep the machine otherwise quiet.

    python bench/bench_export.py [--data-dir DIR] [--quants f16,q8_0,q4_k_m]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import table

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "tuitune-identity.jsonl"
HELDOUT = REPO / "data" / "tuitune-heldout.jsonl"
NAME = "tuitune-identity"
BASE = "smollm2-135m-instruct"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuitune", *args], cwd=REPO, capture_output=True, text=True,
                          env=os.environ.copy(), check=False)  # fmt: skip


def ensure_finetune(data_dir: Path) -> None:
    """Train the demo finetune once; a data dir that already has it is reused."""
    if (data_dir / "runs" / NAME / f"{NAME}.gguf").is_file():
        print(f"reusing {NAME} in {data_dir}", file=sys.stderr)
        return
    print(f"training {NAME} (30 steps, a few minutes)…", file=sys.stderr)
    result = cli("train", "--name", NAME, "--base", BASE, "--data", str(DATA), "--max-steps", "30")
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stderr[-2000:]}")


def export(quant: str, out: Path) -> tuple[float, float, float]:
    """(wall s of the CLI command, merge s, quantize s) of one merged export."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = cli("export", NAME, "--format", "merged-gguf", "--quant", quant, "--out", str(out))
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"export {quant} failed: {result.stderr.strip()}")
    merge = re.search(r"into f16 in ([\d.]+) s", result.stderr)
    quantize = re.search(r"quantized to \S+ in ([\d.]+) s", result.stderr)
    return wall, float(merge.group(1)) if merge else 0.0, float(quantize.group(1)) if quantize else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", help="tuitune data folder to train in or reuse (default: a temporary one)")
    parser.add_argument("--quants", default="f16,q8_0,q4_k_m")
    args = parser.parse_args()
    temporary = None if args.data_dir else tempfile.mkdtemp(prefix="tuitune-bench-export-")
    data_dir = Path(args.data_dir or temporary).absolute()
    os.environ["TUITUNE_DATA_DIR"] = str(data_dir)
    os.environ["TUITUNE_CONFIG_DIR"] = str(data_dir / "config")
    try:
        ensure_finetune(data_dir)
        rows, files = [], {}
        for quant in args.quants.split(","):
            out = data_dir / "exports" / f"merged-{quant}"
            wall, merge, quantize = export(quant, out)
            files[quant] = out / f"{NAME}-{quant}.gguf"
            rows.append([quant, f"{wall:.1f}", f"{merge:.1f}", f"{quantize:.1f}" if quantize else "—",
                         f"{files[quant].stat().st_size / 1e6:.0f} MB"])  # fmt: skip
        from tuitune.evals.loss import heldout_loss

        reference, *merged = heldout_loss(HELDOUT, [NAME, *(str(path) for path in files.values())])
        for row, result in zip(rows, merged, strict=True):
            change = (result.mean_loss - reference.mean_loss) / reference.mean_loss * 100
            row += [f"{result.mean_loss:.4f}", f"{change:+.2f} %"]
        header = ("quant", "CLI wall s", "merge → f16 s", "quantize s", "file", "held-out loss", "vs base + adapter")
        print(table(header, [tuple(row) for row in rows]))
        print(f"\nbase + adapter (llama.cpp LoRA at scale 1): held-out loss {reference.mean_loss:.4f}, "
              f"{reference.tokens} reply tokens")  # fmt: skip
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
