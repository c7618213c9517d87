"""Download throughput: tuitune's resumable, sha256-verified download vs a plain `curl` of the same file,
from the same local server speaking the Hub's resolve protocol (tests/support/hub_server.py), rounds interleaved.

tuitune's time covers everything a pull does: the HEAD on the resolve URL, the ranged GET into a `.part`
file, the sha256 check and the final rename. curl follows the same redirect and only writes the bytes.
Target: tuitune / curl throughput >= 0.9.

    python bench/bench_download.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.hub_server import HubServer, Repo  # noqa: E402

REPO_ID = "google/gemma-3-270m-GGUF"


def served_file() -> Path:
    """The largest real GGUF at hand: the Gemma demo model (assembled into the cache on first use)."""
    from tuitune.catalog import load_catalog
    from tuitune.sources import model_path

    return model_path(load_catalog().get("gemma-3-270m"))


def time_curl(url: str, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sSfL", "-o", str(dest), url], check=True)
    return time.perf_counter() - start


def time_tuitune(endpoint: str, filename: str, dest: Path) -> float:
    from tuitune.downloads import download
    from tuitune.hub import HubClient

    start = time.perf_counter()
    client = HubClient(endpoint=endpoint, token="")
    download(client, client.file_metadata(REPO_ID, filename), dest)
    return time.perf_counter() - start


def serve(path: Path) -> None:
    with HubServer({REPO_ID: Repo({path.name: path})}) as hub:
        print(hub.endpoint, flush=True)
        while True:
            time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return
    if not shutil.which("curl"):
        sys.exit("curl not found")
    source = served_file()
    size = source.stat().st_size
    work = Path(tempfile.mkdtemp(prefix="tuitune-bench-dl-"))
    curl_times, tuitune_times = [], []
    # The server runs in its own process, so neither client shares an interpreter (or a GIL) with it.
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(source)], stdout=subprocess.PIPE, text=True)
    try:
        endpoint = server.stdout.readline().strip()
        url = f"{endpoint}/{REPO_ID}/resolve/main/{source.name}"
        time_curl(url, work / "warm")  # page cache warm for both
        for round_index in range(args.rounds):
            for name in ("curl", "tuitune"):
                dest = work / f"{name}-{round_index}" / source.name
                dest.parent.mkdir()
                if name == "curl":
                    curl_times.append(time_curl(url, dest))
                else:
                    tuitune_times.append(time_tuitune(endpoint, source.name, dest))
                shutil.rmtree(dest.parent)
    finally:
        server.terminate()
    shutil.rmtree(work)
    curl_s, tuitune_s = statistics.median(curl_times), statistics.median(tuitune_times)
    mb = size / 1e6
    print(f"## Download throughput, {mb:.0f} MB GGUF from a local Hub stand-in (median of {args.rounds})\n")
    print(table(
        ("client", "time", "throughput", "tuitune / curl (target ≥ 0.9)"),
        [("curl -L (bytes only)", f"{curl_s:.2f} s", f"{mb / curl_s:.0f} MB/s", ""),
         ("tuitune (resume file + sha256 + rename)", f"{tuitune_s:.2f} s", f"{mb / tuitune_s:.0f} MB/s",
          f"**{curl_s / tuitune_s:.2f}**")],
    ))  # fmt: skip
    print(f"\nos.cpu_count()={os.cpu_count()}")


if __name__ == "__main__":
    main()
