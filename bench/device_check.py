"""Helpers of ``bench/device_check.sh``: the parts of the GPU check that are easier in Python.

skeleton  (here)   the demo model's GGUF without its weight matrices: every metadata key (tokenizer and
                   chat template included), the 1-D tensors (norms) as they are, the matrices' names and
                   shapes. A few MB instead of 98 and 253 MB: the device takes 64 MiB in all.
synth     (there)  a GGUF of the same shapes from a skeleton, matrices random (normal, std 0.02, fp16),
                   installed as the demo package tuitune looks for, so `--base smollm2-135m-instruct` runs
                   the real code path: same tokenizer and token ids, same parameter count, same memory and
                   speed; only the loss is that of an untrained model.
env                torch, CUDA, bf16, bitsandbytes, llama-cpp-python: what this machine has.
record-run         one `tuitune train` run's outcome (metrics.jsonl, status.json) + the memory planner's
                   estimate for its config.json, appended to the results file.
decode             llama.cpp decode tokens/s with n_gpu_layers 0 and -1 (only where llama-cpp-python offloads).
summary            the Markdown report of the results file.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO / "data" / "tuitune-identity.jsonl"
LAYOUT_KEY = "tuitune.synth.tensors"
MIB = 1 << 20


def record(results: Path, row: dict) -> None:
    with open(results, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def entry_of(model_id: str):
    from tuitune.catalog import load_catalog

    return load_catalog().get(model_id)


# -- skeleton and synthetic models ------------------------------------------------------------------------


def _copy_fields(reader, writer, skip_prefixes: tuple[str, ...] = ()) -> None:
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith(("GGUF.", *skip_prefixes)):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def cmd_skeleton(args: argparse.Namespace) -> int:
    import gguf
    import numpy as np

    from tuitune.sources import model_path

    source = model_path(entry_of(args.model))
    reader = gguf.GGUFReader(str(source))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    layout, kept = [], []
    for tensor in reader.tensors:
        shape = [int(n) for n in tensor.shape]  # GGUF order: ne0 (the row length) first
        layout.append([tensor.name, shape, tensor.tensor_type.name])
        if len(shape) == 1:
            kept.append((tensor.name, np.array(tensor.data, dtype=np.float32).reshape(shape[::-1])))
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "skeleton.gguf"
        writer = gguf.GGUFWriter(str(plain), arch=arch)
        _copy_fields(reader, writer)
        writer.add_string(LAYOUT_KEY, json.dumps(layout))
        for name, data in kept:
            writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(plain, "rb") as src, gzip.open(out, "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
    print(f"{args.model}: {source.name} ({source.stat().st_size / MIB:.0f} MiB) -> {out} "
          f"({out.stat().st_size / MIB:.1f} MiB; {len(layout)} tensors, {len(kept)} kept)")  # fmt: skip
    return 0


def synthesize(skeleton: Path, out: Path, seed: int = 0) -> None:
    """A full GGUF from a skeleton: matrices normal(0, 0.02) in fp16, generated and written one at a time."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as scratch:
        plain = Path(scratch) / "skeleton.gguf"
        with gzip.open(skeleton, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        reader = gguf.GGUFReader(str(plain))
        arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
        layout = json.loads(reader.fields[LAYOUT_KEY].contents())
        kept = {tensor.name: np.array(tensor.data, dtype=np.float32) for tensor in reader.tensors}
        temporary = out.with_name(f".{out.name}.tmp")
        writer = gguf.GGUFWriter(str(temporary), arch=arch)
        _copy_fields(reader, writer, skip_prefixes=("tuitune.",))
        for name, shape, _ in layout:
            numpy_shape = tuple(shape[::-1])
            if name in kept:
                writer.add_tensor_info(name, numpy_shape, np.dtype(np.float32), kept[name].nbytes)
            else:
                count = int(np.prod(numpy_shape))
                writer.add_tensor_info(name, numpy_shape, np.dtype(np.float16), count * 2)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, shape, _ in layout:
            numpy_shape = tuple(shape[::-1])
            if name in kept:
                data = kept[name].reshape(numpy_shape)
            else:
                data = rng.standard_normal(numpy_shape, dtype=np.float32)
                data *= 0.02
                data = data.astype(np.float16)
            writer.write_tensor_data(data)
            del data
        writer.close()
        os.replace(temporary, out)


GEMMA_STYLE_PACKAGE = '''"""Stand-in for a chunked demo package (bench/device_check.py synth)."""
import shutil
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / {file!r}


def assemble(output_path, overwrite=True):
    shutil.copyfile(SOURCE, output_path)
    return Path(output_path)
'''


def cmd_synth(args: argparse.Namespace) -> int:
    """Install a synthetic model as the demo package its catalog entry names, under ``--site`` (a PYTHONPATH)."""
    entry = entry_of(args.model)
    source = entry.source
    if source is None or source.kind != "pypi":
        print(f"{args.model}: not a PyPI-packaged demo model; cannot stand in for it", file=sys.stderr)
        return 1
    package = Path(args.site) / source.module
    package.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    synthesize(Path(args.skeleton), package / source.file, args.seed)
    init = package / "__init__.py"
    if source.assemble:
        init.write_text(GEMMA_STYLE_PACKAGE.format(file=source.file), encoding="utf-8")
    else:
        init.write_text('"""Stand-in demo package (bench/device_check.py synth)."""\n', encoding="utf-8")
    size = (package / source.file).stat().st_size
    print(f"{args.model}: synthetic {source.file} ({size / MIB:.0f} MiB, random fp16 matrices, the real tokenizer) "
          f"as package {source.module} in {time.perf_counter() - started:.1f} s")  # fmt: skip
    return 0


# -- environment --------------------------------------------------------------------------------------------


def cmd_env(args: argparse.Namespace) -> int:
    info: dict = {"part": "env", "python": sys.version.split()[0]}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
            info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / (1 << 30), 1)
    except Exception as error:
        info["torch"] = f"unavailable: {error!r}"
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformers", "peft", "accelerate", "bitsandbytes", "gguf", "safetensors", "llama_cpp"):
        try:
            module = __import__(name)
            try:
                info[name] = version("llama_cpp_python" if name == "llama_cpp" else name)
            except PackageNotFoundError:
                info[name] = getattr(module, "__version__", "?")
        except Exception as error:  # a missing or broken package is the finding
            first = str(error).splitlines()[0][:200] if str(error) else ""
            info[name] = f"unavailable: {type(error).__name__}: {first}"
    if not str(info.get("llama_cpp", "")).startswith("unavailable"):
        import llama_cpp

        info["llama_gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    for key, value in info.items():
        print(f"{key:>18}: {value}")
    record(Path(args.results), info)
    return 0


# -- one training run ------------------------------------------------------------------------------------------


def token_counts(model_id: str, max_length: int):
    """The dataset as the trainer builds it: (tokens, reply tokens) per sequence and the shared prefix."""
    from tuitune.sources import model_path
    from tuitune.training.data import load_examples
    from tuitune.training.formatting import Formatter, fit_to_length
    from tuitune.training.loss import shared_prefix_length
    from tuitune.training.planner import TokenCounts

    entry = entry_of(model_id)
    formatter = Formatter(model_path(entry), entry.chat_format)
    try:
        sequences = []
        for example in load_examples(DATA):
            for sequence in formatter.sequences(example):
                fitted = fit_to_length(sequence, max_length)
                if fitted is not None and fitted.reply_tokens > 0:
                    sequences.append(fitted)
    finally:
        formatter.close()
    pairs = tuple((len(seq.input_ids), seq.reply_tokens) for seq in sequences)
    return TokenCounts(sequences=pairs, shared_prefix=shared_prefix_length(sequences) if sequences else 0)


def plan_for(run_dir: Path, model_id: str, device: str) -> dict:
    """The memory planner's estimate for the run's own config.json, or why there is none."""
    try:
        from tuitune.training import planner
        from tuitune.training.runs import TrainConfig
    except Exception as error:
        return {"plan_note": f"no planner: {type(error).__name__}: {error}"}
    try:
        config = TrainConfig.from_json(run_dir / "config.json")
        counts = None
        with contextlib.suppress(Exception):
            counts = token_counts(model_id, config.max_length)
        try:
            plan = planner.estimate(model_id, config, device, counts)
        except TypeError:  # an older signature without counts
            plan = planner.estimate(model_id, config, device)
        parts = dict(getattr(plan, "parts", ()) or ())
        return {"plan_total_mb": plan.total_bytes / MIB, "plan_runtime_mb": parts.get("runtime", 0) / MIB,
                "plan_parts_mb": {label: round(size / MIB, 1) for label, size in parts.items()},
                "plan_summary": plan.summary(), "plan_from_data": counts is not None}  # fmt: skip
    except Exception as error:
        return {"plan_note": f"planner failed: {type(error).__name__}: {error}"}


def cmd_record_run(args: argparse.Namespace) -> int:
    from tuitune.paths import app_dirs

    run_dir = app_dirs().data / "runs" / args.name
    row: dict = {"part": "train", "name": args.name, "model": args.model, "mode": args.mode, "device": args.device,
                 "rc": args.rc, "wall_s": args.wall, "weights": args.weights}  # fmt: skip
    if args.smi_peak:
        row["smi_peak_mb"] = args.smi_peak
    metrics = []
    with contextlib.suppress(OSError):
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    status = {}
    with contextlib.suppress(OSError, ValueError):
        status = json.loads((run_dir / "status.json").read_text())
    row["state"] = status.get("state")
    row["steps"] = len(metrics)
    if metrics:
        row["first_loss"], row["final_loss"] = metrics[0]["loss"], metrics[-1]["loss"]
        later = [m["tokens_per_s"] for m in metrics[1:]] or [metrics[0]["tokens_per_s"]]
        row["tok_s_median"] = statistics.median(later)
    row["peak_device_mb"] = status.get("peak_device_mb")
    row["peak_rss_mb"] = status.get("peak_rss_mb")
    if args.rc != 0:
        row["message"] = status.get("message")
    if (run_dir / "config.json").exists():
        row.update(plan_for(run_dir, args.model, args.device))
    record(Path(args.results), row)
    shown = {key: value for key, value in row.items() if key not in ("plan_parts_mb",)}
    print(json.dumps(shown))
    if args.rc != 0:
        for log in ("train.log", "stderr.log"):
            with contextlib.suppress(OSError):
                lines = (run_dir / log).read_text(errors="replace").splitlines()[-25:]
                if lines:
                    print(f"--- {log} (last {len(lines)} lines) ---\n" + "\n".join(lines))
    return 0


# -- decode ----------------------------------------------------------------------------------------------------


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        import llama_cpp
    except Exception as error:
        print(f"skipped: llama-cpp-python not built with CUDA here (import failed: {error!r})")
        record(Path(args.results), {"part": "decode", "skipped": f"llama_cpp import failed: {error!r}"})
        return 0
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    if not offload and not args.force:
        print("skipped: llama-cpp-python not built with CUDA here")
        record(Path(args.results), {"part": "decode", "skipped": "llama-cpp-python not built with CUDA here"})
        return 0
    from tuitune.sources import model_path

    prompt = "Tell me how to train my dog to sit."
    for model_id in args.models.split(","):
        path = model_path(entry_of(model_id))
        for layers in (0, -1):
            row = {"part": "decode", "model": model_id, "n_gpu_layers": layers, "offload_supported": offload}
            try:
                llm = llama_cpp.Llama(model_path=str(path), n_gpu_layers=layers, n_ctx=1024, seed=0, verbose=False)
                bias = {llm.token_eos(): -1e9}  # random weights would stop anywhere: decode all the tokens
                llm.create_completion(prompt, max_tokens=8, temperature=0.0, top_k=1, logit_bias=bias)  # warm-up
                llm.reset()
                started = time.perf_counter()
                out = llm.create_completion(prompt, max_tokens=args.tokens, temperature=0.0, top_k=1, logit_bias=bias)
                seconds = time.perf_counter() - started
                tokens = out["usage"]["completion_tokens"]
                row.update(tokens=tokens, seconds=round(seconds, 3), tok_s=round(tokens / seconds, 1))
                llm.close()
            except Exception as error:
                row["error"] = f"{type(error).__name__}: {error}"
            print(json.dumps(row))
            record(Path(args.results), row)
    return 0


# -- summary ---------------------------------------------------------------------------------------------------


def _fmt(value, spec: str = ".0f", missing: str = "—") -> str:
    if value is None:
        return missing
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cmd_summary(args: argparse.Namespace) -> int:
    rows = []
    with contextlib.suppress(OSError):
        rows = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    out: list[str] = [f"# tuitune device check ({args.device})\n"]
    env = next((row for row in rows if row.get("part") == "env"), None)
    if env:
        facts = ", ".join(f"{key} {value}" for key, value in env.items() if key != "part")
        out.append(f"**Environment:** {facts}\n")
    trains = [row for row in rows if row.get("part") == "train"]
    if trains:
        cuda = args.device == "cuda"
        header = ["model", "mode", "weights", "exit", "steps", "loss first → final", "tokens/s (median, steps 2+)",
                  "peak_device_mb" if cuda else "peak_rss_mb", "nvidia-smi peak MiB", "planner total MiB",
                  "measured / planner", "wall s"]  # fmt: skip
        table_rows = []
        notes = []
        for row in trains:
            total = row.get("plan_total_mb")
            if cuda:
                measured = row.get("peak_device_mb")
                # max_memory_allocated excludes the CUDA context the planner adds as "runtime"
                basis = total - row.get("plan_runtime_mb", 0) if total is not None else None
                ratio = f"{measured / basis:.2f} (alloc vs planner − runtime)" if measured and basis else "—"
                smi = row.get("smi_peak_mb")
                if smi and total:
                    ratio += f"; smi {smi / total:.2f}"
            else:
                measured = row.get("peak_rss_mb")
                ratio = f"{measured / total:.2f} (RSS)" if measured and total else "—"
            loss = f"{_fmt(row.get('first_loss'), '.3f')} → {_fmt(row.get('final_loss'), '.3f')}"
            table_rows.append([row["model"], row["mode"], row.get("weights", "?"), str(row["rc"]), str(row["steps"]),
                               loss, _fmt(row.get("tok_s_median")), _fmt(measured), _fmt(row.get("smi_peak_mb")),
                               _fmt(total), ratio, _fmt(row.get("wall_s"))])  # fmt: skip
            if row.get("plan_note"):
                notes.append(f"- {row['model']} {row['mode']}: {row['plan_note']}")
            elif row.get("plan_summary"):
                notes.append(f"- {row['model']} {row['mode']}: planner: {row['plan_summary']} "
                             f"(parts MiB: {row.get('plan_parts_mb')})")  # fmt: skip
            if row["rc"] != 0:
                notes.append(f"- {row['model']} {row['mode']} FAILED (exit {row['rc']}): {row.get('message')}")
        out.append("## Training runs (`tuitune train`)\n")
        out.append(_table(header, table_rows))
        if any(row.get("weights") == "synthetic" for row in trains):
            out.append("\nSynthetic weights: the real shapes and tokenizer with random matrices (the GGUFs do not "
                       "fit the 64 MiB transfer), so speed and memory are the real model's and the loss is an "
                       "untrained model's.")  # fmt: skip
        if notes:
            out.append("\n" + "\n".join(notes))
    bench = Path(args.bench_md) if args.bench_md else None
    if bench is not None and bench.exists() and bench.read_text().strip():
        out.append("\n## bench/bench_train.py\n")
        out.append(bench.read_text().strip())
    decodes = [row for row in rows if row.get("part") == "decode"]
    if decodes:
        out.append("\n## llama.cpp decode (greedy, EOS suppressed)\n")
        skipped = [row["skipped"] for row in decodes if row.get("skipped")]
        if skipped:
            out.append(f"skipped: {skipped[0]}")
        measured = [row for row in decodes if not row.get("skipped")]
        if measured:
            out.append(_table(["model", "n_gpu_layers", "tokens", "tokens/s", "error"],
                              [[row["model"], str(row["n_gpu_layers"]), _fmt(row.get("tokens")),
                                _fmt(row.get("tok_s"), ".1f"), row.get("error", "")] for row in measured]))  # fmt: skip
    skips = [row for row in rows if row.get("part") == "skip"]
    if skips:
        out.append("\n## Not run\n")
        out.extend(f"- {row['what']}: {row['why']}" for row in skips)
    print("\n".join(out))
    return 0


def cmd_skip(args: argparse.Namespace) -> int:
    record(Path(args.results), {"part": "skip", "what": args.what, "why": args.why})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    skeleton = commands.add_parser("skeleton")
    skeleton.add_argument("--model", required=True)
    skeleton.add_argument("--out", required=True)
    skeleton.set_defaults(func=cmd_skeleton)
    synth = commands.add_parser("synth")
    synth.add_argument("--model", required=True)
    synth.add_argument("--skeleton", required=True)
    synth.add_argument("--site", required=True, help="a directory on PYTHONPATH for the stand-in package")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth)
    env = commands.add_parser("env")
    env.add_argument("--results", required=True)
    env.set_defaults(func=cmd_env)
    run = commands.add_parser("record-run")
    for flag in ("--results", "--name", "--model", "--mode", "--device", "--weights"):
        run.add_argument(flag, required=True)
    run.add_argument("--rc", type=int, required=True)
    run.add_argument("--wall", type=float, required=True)
    run.add_argument("--smi-peak", type=float)
    run.set_defaults(func=cmd_record_run)
    decode = commands.add_parser("decode")
    decode.add_argument("--results", required=True)
    decode.add_argument("--models", required=True)
    decode.add_argument("--tokens", type=int, default=128)
    decode.add_argument("--force", action="store_true", help="run without GPU offload too (plumbing test)")
    decode.set_defaults(func=cmd_decode)
    summary = commands.add_parser("summary")
    summary.add_argument("--results", required=True)
    summary.add_argument("--device", required=True)
    summary.add_argument("--bench-md")
    summary.set_defaults(func=cmd_summary)
    skip = commands.add_parser("skip")
    skip.add_argument("--results", required=True)
    skip.add_argument("--what", required=True)
    skip.add_argument("--why", required=True)
    skip.set_defaults(func=cmd_skip)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
