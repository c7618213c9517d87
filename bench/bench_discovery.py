"""Discovery speed: `discover()` over a Hugging Face cache of 200 repos / 1,000 GGUF files (headers only).

The cache has huggingface_hub's real layout (blobs named by sha256, relative snapshot links, refs/main), each
file a tiny but valid GGUF written with the gguf package, so the time is the scan and the header reads, not the
disk. Also timed: `tuitune models` (the whole process) when nothing is found. Targets: discovery < 0.5 s,
`tuitune models` < 0.3 s.

    python bench/bench_discovery.py [--rounds 5] [--repos 200] [--files-per-repo 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, table

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def tiny_gguf(path: Path, index: int) -> bytes:
    """A valid GGUF of a few hundred bytes (one small tensor, a chat template, a quantization type)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"model {index}")
    writer.add_file_type(15)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.full((4, 8), index, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def build_cache(root: Path, repos: int, per_repo: int) -> int:
    """``repos`` model repos of ``per_repo`` GGUF files each, laid out as hf_hub_download leaves them."""
    scratch = root.parent / "scratch.gguf"
    count = 0
    for repo in range(repos):
        folder = root / f"models--org{repo % 17}--model-{repo}-GGUF"
        snapshot = folder / "snapshots" / COMMIT
        (folder / "blobs").mkdir(parents=True)
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(COMMIT)
        for file in range(per_repo):
            data = tiny_gguf(scratch, count)
            sha = hashlib.sha256(data).hexdigest()
            (folder / "blobs" / sha).write_bytes(data)
            (snapshot / f"model-{file}.Q4_K_M.gguf").symlink_to(f"../../blobs/{sha}")
            count += 1
    (root / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    scratch.unlink()
    return count


def time_discover(env: dict[str, str], rounds: int) -> tuple[float, int]:
    """Each round in a fresh process, so huggingface_hub's import is counted every time (the CLI pays it)."""
    code = (
        "import time; t = time.perf_counter(); from tuitune.discovery import discover; found = discover(); "
        "print(time.perf_counter() - t, len(found), sum(m.problem is not None for m in found))"
    )
    times, count = [], 0
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
        )
        seconds, count, problems = out.stdout.split()
        assert int(problems) == 0, out.stdout
        times.append(float(seconds))
    return median(times), int(count)


def time_models(env: dict[str, str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tuitune", "models"], env=env, cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--files-per-repo", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tuitune-bench-discovery-") as tmp:
        base = Path(tmp)
        cache = base / "hub"
        count = build_cache(cache, args.repos, args.files_per_repo)
        empty_home = base / "home"
        empty_home.mkdir()
        env = {**os.environ, "HOME": str(empty_home), "OLLAMA_MODELS": str(base / "no-ollama"),
               "TUITUNE_CONFIG_DIR": str(base / "config"), "TUITUNE_DATA_DIR": str(base / "data")}  # fmt: skip
        env.pop("HF_HOME", None)
        found_s, found = time_discover({**env, "HF_HUB_CACHE": str(cache)}, args.rounds)
        assert found == count, (found, count)
        nothing_env = {**env, "HF_HUB_CACHE": str(base / "no-hf-cache")}
        nothing_s, _ = time_discover(nothing_env, args.rounds)
        models_s = time_models(nothing_env, args.rounds)
    rows = [
        (f"discover(): {args.repos} repos / {count} GGUF files", f"{found_s:.3f} s", "< 0.5 s"),
        ("discover(): no stores", f"{nothing_s * 1000:.1f} ms", "-"),
        ("`tuitune models`, nothing found (whole process)", f"{models_s:.3f} s", "< 0.3 s"),
    ]
    print(table(("what", f"median of {args.rounds}", "target"), rows))


if __name__ == "__main__":
    main()
