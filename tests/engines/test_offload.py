"""GPU inference, tested on a machine without a GPU.

The Makefile's backend builds are checked as dry runs (``make -n``), the offload decision as a pure function
with made-up sizes, GPUs through a fake ``nvidia-smi`` first on PATH, and the real engine, CLI and doctor on
the CPU build of llama.cpp this machine has.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import REPO, one_clear_error, run_cli
from tuitune import hardware
from tuitune.catalog import Catalog, ModelEntry, Source, parse_catalog_file
from tuitune.cli.parser import build_parser
from tuitune.engines import offload
from tuitune.engines.offload import (
    GIB,
    MIB,
    Backend,
    Footprint,
    decide_offload,
    footprint_from_gguf,
    gpu_backend_name,
    parse_system_info,
    plan_offload,
)
from tuitune.errors import CatalogError, TuituneError
from tuitune.gguf import GGUFInfo, read_gguf

CPU_INFO = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 0 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
CUDA_INFO = "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | " + CPU_INFO
H200_CSV = "0, NVIDIA H200, 143000, 143771\n1, NVIDIA H200, 1000, 143771\n"
APPLE_SILICON = sys.platform == "darwin" and platform.machine() == "arm64"


# -- the Makefile: `make run GPU=…` builds the matching llama.cpp, `make test` never rebuilds ---------------------
def make_dry_run(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    """``make -n`` against a throwaway, already-installed environment: prints the commands, runs none."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    venv.mkdir(exist_ok=True)
    stamp = venv / ".tuitune-installed"
    stamp.touch()
    later = time.time() + 60
    os.utime(stamp, (later, later))  # newer than pyproject.toml: the base install is up to date
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GPU", "VENV")}
    if path is not None:
        env["PATH"] = path
    return subprocess.run([make, "-n", *args, f"VENV={venv}"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=60)  # fmt: skip


def tool_dir(tmp_path: Path, **scripts: str) -> str:
    """A PATH of one folder: ``uname`` (the Makefile asks it) and the given fake tools."""
    folder = tmp_path / "tools"
    folder.mkdir(exist_ok=True)
    uname = shutil.which("uname")
    assert uname is not None
    (folder / "uname").symlink_to(uname)
    for name, body in scripts.items():
        script = folder / name.replace("_", "-")
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize(
    ("gpu", "flag"), [("cuda", "-DGGML_CUDA=on"), ("metal", "-DGGML_METAL=on"), ("vulkan", "-DGGML_VULKAN=on")]
)
def test_make_run_gpu_rebuilds_llama_cpp_with_its_cmake_flag(tmp_path: Path, gpu: str, flag: str):
    result = make_dry_run(tmp_path, "run", f"GPU={gpu}")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f'CMAKE_ARGS="{flag}"' in out
    assert out.count("-DGGML_") == 1  # no other backend's flag
    for option in ("--force-reinstall", "--no-deps", "--no-binary llama-cpp-python", "--no-cache-dir"):
        assert option in out
    assert "llama-cpp-python==$(" in out  # pinned to the version installed
    assert f"touch {tmp_path / 'venv'}/.llama-{gpu}" in out
    assert out.strip().splitlines()[-1].endswith("/bin/tuitune")  # then the app starts


def test_make_run_cpu_keeps_the_installed_build(tmp_path: Path):
    result = make_dry_run(tmp_path, "run", "GPU=cpu")
    assert result.returncode == 0, result.stderr
    assert "GGML" not in result.stdout and "pip install" not in result.stdout
    assert f"touch {tmp_path / 'venv'}/.llama-cpu" in result.stdout


def test_make_run_cpu_after_a_gpu_build_reinstalls_the_cpu_build(tmp_path: Path):
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / ".llama-cuda").touch()
    result = make_dry_run(tmp_path, "run", "GPU=cpu")
    assert result.returncode == 0, result.stderr
    assert "--force-reinstall" in result.stdout and "llama-cpp-python==" in result.stdout
    assert "GGML" not in result.stdout and "--no-binary" not in result.stdout  # the cached CPU wheel is fine


def test_make_run_same_gpu_again_does_not_rebuild(tmp_path: Path):
    venv = tmp_path / "venv"
    venv.mkdir()
    built = venv / ".llama-cuda"
    built.touch()
    later = time.time() + 120
    os.utime(built, (later, later))
    result = make_dry_run(tmp_path, "run", "GPU=cuda")
    assert result.returncode == 0, result.stderr
    assert "pip" not in result.stdout and "GGML" not in result.stdout


@pytest.mark.parametrize("gpu", ["rocm", "CUDA", "cuda cpu", ""])
def test_make_run_refuses_an_unknown_gpu(tmp_path: Path, gpu: str):
    result = make_dry_run(tmp_path, "run", f"GPU={gpu}")
    assert result.returncode != 0
    assert f"GPU='{gpu}' is not a llama.cpp backend" in result.stderr
    assert "GPU=cuda, GPU=metal, GPU=vulkan or GPU=cpu" in result.stderr
    assert "pip" not in result.stdout


def test_make_test_never_rebuilds_llama_cpp(tmp_path: Path):
    result = make_dry_run(tmp_path, "test", "GPU=cuda")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("-m pytest")
    assert "llama" not in result.stdout and "GGML" not in result.stdout


def test_make_default_gpu_is_cpu_without_nvcc(tmp_path: Path):
    result = make_dry_run(tmp_path, "run", path=tool_dir(tmp_path, nvidia_smi="echo 'GPU 0: NVIDIA H200'"))
    assert result.returncode == 0, result.stderr
    expected = "metal" if APPLE_SILICON else "cpu"
    assert f".llama-{expected}" in result.stdout
    assert "GGML_CUDA" not in result.stdout


def test_make_default_gpu_is_cpu_with_nvcc_but_no_gpu(tmp_path: Path):
    """A machine with the CUDA toolkit and no GPU (like this one): a CUDA build could not even load."""
    result = make_dry_run(tmp_path, "run", path=tool_dir(tmp_path, nvcc="exit 0"))
    assert result.returncode == 0, result.stderr
    assert "GGML_CUDA" not in result.stdout


def test_make_default_gpu_is_cuda_with_nvcc_and_a_gpu(tmp_path: Path):
    tools = tool_dir(tmp_path, nvcc="exit 0", nvidia_smi="echo 'GPU 0: NVIDIA H200'")
    result = make_dry_run(tmp_path, "run", path=tools)
    assert result.returncode == 0, result.stderr
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in result.stdout


# -- plan_offload: how many layers fit -------------------------------------------------------------------------------
def footprint(layers: int = 10, layer: int = 100 * MIB, output: int = 200 * MIB, kv: int = 1024) -> Footprint:
    """``layers`` equal layers of ``layer`` bytes, an output head, ``kv`` KV-cache bytes per token per layer."""
    return Footprint((layer,) * layers, output, (kv,) * layers, vocab=0)


def test_everything_fits_offloads_every_layer_and_the_head():
    plan = plan_offload("m", footprint(), n_ctx=1024, free_bytes=80 * GIB)
    assert (plan.layers, plan.total_layers, plan.n_gpu_layers) == (10, 10, -1)
    assert plan.need_bytes == offload.DEVICE_RESERVE + 10 * (100 * MIB + 1024 * 1024) + 200 * MIB


def test_partial_fit_offloads_the_layers_that_fit():
    per_layer = 100 * MIB + 1024 * 1024  # weights + KV for a 1,024-token context
    free = offload.DEVICE_RESERVE + 4 * per_layer + per_layer // 2
    plan = plan_offload("m", footprint(), n_ctx=1024, free_bytes=free)
    assert (plan.layers, plan.n_gpu_layers) == (4, 4)
    assert plan.need_bytes <= free < plan.need_bytes + per_layer


def test_all_layers_but_not_the_head_keeps_the_head_on_the_cpu():
    free = offload.DEVICE_RESERVE + 10 * (100 * MIB + 1024 * 1024) + 100 * MIB  # the 200 MiB head does not fit
    plan = plan_offload("m", footprint(), n_ctx=1024, free_bytes=free)
    assert (plan.layers, plan.n_gpu_layers) == (10, 10)  # not -1: llama.cpp then keeps the output on the CPU


def test_a_longer_context_leaves_room_for_fewer_layers():
    free = 2 * GIB
    short = plan_offload("m", footprint(kv=64 * 1024), n_ctx=512, free_bytes=free)
    long = plan_offload("m", footprint(kv=64 * 1024), n_ctx=8192, free_bytes=free)
    assert long.layers < short.layers


def test_each_gpu_has_its_own_reserve():
    free = offload.DEVICE_RESERVE + 10 * (100 * MIB + 1024 * 1024) + 200 * MIB
    assert plan_offload("m", footprint(), 1024, free, devices=1).layers == 10
    assert plan_offload("m", footprint(), 1024, free, devices=2).layers < 10


@pytest.mark.parametrize(("limit", "expected"), [(3, (3, 3)), (10, (10, -1)), (99, (10, -1)), (None, (10, -1))])
def test_gpu_layers_caps_the_offload(limit: int | None, expected: tuple[int, int]):
    plan = plan_offload("m", footprint(), n_ctx=1024, free_bytes=80 * GIB, limit=limit)
    assert (plan.layers, plan.n_gpu_layers) == expected


def test_gpu_layers_zero_is_the_cpu_without_any_check():
    plan = plan_offload("m", footprint(), n_ctx=1024, free_bytes=0, limit=0)
    assert (plan.layers, plan.n_gpu_layers) == (0, 0)


def test_unknown_free_memory_offloads_what_was_asked():
    plan = plan_offload("m", footprint(), n_ctx=1024, free_bytes=None, limit=6)
    assert (plan.layers, plan.n_gpu_layers, plan.free_bytes) == (6, 6, None)


def test_refusal_names_the_model_the_sizes_and_the_cpu_way_out():
    with pytest.raises(TuituneError) as caught:
        plan_offload("big-model", footprint(layer=2 * GIB), n_ctx=4096, free_bytes=1 * GIB, where="CUDA device 0: X")
    message = str(caught.value)
    assert "big-model does not fit on CUDA device 0: X" in message
    assert "one layer needs 2.5 GiB" in message  # 2 GiB + 4 MiB of KV + the 512 MiB reserve
    assert "1.0 GiB is free" in message and "4,096-token context" in message
    assert "--gpu-layers 0" in message and "gpu_layers = 0" in message
    assert "\n" not in message


# -- the model's size from its GGUF header -----------------------------------------------------------------------
def test_footprint_of_the_real_smollm_header(smollm_path: Path):
    info = read_gguf(smollm_path)
    fp = footprint_from_gguf(info)
    assert fp.layers == 30
    assert sum(fp.layer_bytes) + fp.output_bytes == sum(info.tensor_bytes.values())  # tied head: token_embd
    assert fp.output_bytes >= info.tensor_bytes["token_embd.weight"]
    assert fp.kv_bytes_per_token == (3 * (64 + 64) * 2,) * 30  # 3 KV heads of 64, K and V, f16
    assert fp.vocab == 49152
    assert info.expected_size is not None and sum(info.tensor_bytes.values()) < info.file_size


def test_footprint_uses_per_layer_kv_heads_and_an_untied_head():
    metadata = {"general.architecture": "x", "x.block_count": 2, "x.embedding_length": 64,
                "x.attention.head_count": 4, "x.attention.head_count_kv": [1, 4]}  # fmt: skip
    tensors = {"blk.0.attn_q.weight": 10, "blk.0.ffn_up.weight": 5, "blk.1.attn_q.weight": 7,
               "output.weight": 30, "output_norm.weight": 2, "token_embd.weight": 1000}  # fmt: skip
    info = GGUFInfo(Path("x.gguf"), 3, metadata, len(tensors), 2000, 2000, tensor_bytes=tensors)
    fp = footprint_from_gguf(info)
    assert fp.layer_bytes == (15, 7)
    assert fp.output_bytes == 32  # token_embd stays on the CPU when the model has its own head
    assert fp.kv_bytes_per_token == (1 * 32 * 2, 4 * 32 * 2)  # head_dim 16: K 16 + V 16, f16


# -- what the llama.cpp build is -----------------------------------------------------------------------------------
def test_system_info_parses_into_backends_and_flags():
    sections = parse_system_info(CUDA_INFO)
    assert sections["CUDA"] == {"ARCHS": "890", "USE_GRAPHS": "1", "PEER_MAX_BATCH_SIZE": "128"}
    assert sections["CPU"]["AVX2"] == "1" and sections["CPU"]["AVX512"] == "0"
    assert gpu_backend_name(sections) == "CUDA"
    assert gpu_backend_name(parse_system_info("Metal : EMBED_LIBRARY = 1 | " + CPU_INFO)) == "Metal"
    assert gpu_backend_name(parse_system_info(CPU_INFO)) is None
    assert gpu_backend_name(parse_system_info("AVX = 1 | CUDA = 0 | VULKAN = 1 | ")) == "Vulkan"  # older builds
    assert gpu_backend_name(parse_system_info(CPU_INFO), ["libggml-cpu.so", "libggml-vulkan.so"]) == "Vulkan"


def fake_llama(offload_supported: bool, info: str = CUDA_INFO) -> SimpleNamespace:
    return SimpleNamespace(
        __file__="/nonexistent/llama_cpp/__init__.py",
        llama_supports_gpu_offload=lambda: offload_supported,
        llama_print_system_info=lambda: info.encode(),
    )


def no_nvidia_smi() -> list[hardware.Gpu]:
    raise AssertionError("nvidia-smi was asked on a path that must not ask it")


def test_cpu_build_decides_without_asking_the_machine(smollm_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(hardware, "nvidia_gpus", no_nvidia_smi)
    info = read_gguf(smollm_path)
    assert decide_offload("m", info, 4096, None, fake_llama(False)) == (0, Backend("CPU", 0, 30))
    assert decide_offload("m", info, 4096, 0, fake_llama(True)) == (0, Backend("CPU", 0, 30))  # --gpu-layers 0


def test_gpu_build_offloads_what_fits_on_the_free_memory(smollm_path: Path, monkeypatch: pytest.MonkeyPatch):
    info = read_gguf(smollm_path)
    big = [hardware.Gpu(0, "NVIDIA H200", 140 * GIB, 141 * GIB)]
    monkeypatch.setattr(hardware, "nvidia_gpus", lambda: big)
    layers, backend = decide_offload("smol", info, 4096, None, fake_llama(True))
    assert layers == -1 and backend.label == "CUDA 30/30 layers" and backend.devices == ("0: NVIDIA H200",)
    layers, backend = decide_offload("smol", info, 4096, 12, fake_llama(True))
    assert layers == 12 and backend.label == "CUDA 12/30 layers"
    monkeypatch.setattr(hardware, "nvidia_gpus", lambda: [hardware.Gpu(0, "Tiny", 300 * MIB, 1 * GIB)])
    with pytest.raises(TuituneError, match=r"smol does not fit on CUDA device 0: Tiny.*300 MiB is free"):
        decide_offload("smol", info, 4096, None, fake_llama(True))


# -- the engine on this machine's CPU build ---------------------------------------------------------------------
def test_engine_on_the_cpu_reports_cpu_and_never_asks_nvidia_smi(smollm_path: Path, monkeypatch: pytest.MonkeyPatch):
    import llama_cpp

    from tuitune.engines.llama import LlamaCppEngine

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("a GPU build of llama.cpp: the default offloads")
    monkeypatch.setattr(hardware, "nvidia_gpus", no_nvidia_smi)
    engine = LlamaCppEngine(smollm_path, model_id="smol", n_ctx=256)
    try:
        assert engine.backend == Backend("CPU", 0, 30)
        assert engine.backend.label == "CPU"
        assert engine.backend.as_json() == {"name": "CPU", "gpu_layers": 0, "layers": 30, "label": "CPU", "devices": []}
    finally:
        engine.close()


def test_engine_with_gpu_layers_zero_runs_on_the_cpu(smollm_path: Path):
    from tuitune.engines.llama import LlamaCppEngine

    engine = LlamaCppEngine(smollm_path, model_id="smol", n_ctx=256, gpu_layers=0)
    try:
        assert (engine.backend.name, engine.backend.layers, engine.backend.total_layers) == ("CPU", 0, 30)
    finally:
        engine.close()


# -- gpu_layers in models.toml, --gpu-layers on the command line -------------------------------------------------
def write_catalog(tmp_path: Path, extra: str, kind: str = "chat") -> Path:
    path = tmp_path / "models.toml"
    source = 'source = { path = "m.gguf" }' if kind != "endpoint" else 'base_url = "http://127.0.0.1:1/v1"\nmodel = "m"'
    path.write_text(f'[[model]]\nid = "m"\nname = "M"\nkind = "{kind}"\nfamily = "llama"\n{source}\n{extra}\n')
    return path


@pytest.mark.parametrize("value", ["-1", '"all"', "true", "2.5"])
def test_catalog_gpu_layers_must_be_a_whole_number(tmp_path: Path, value: str):
    path = write_catalog(tmp_path, f"gpu_layers = {value}")
    with pytest.raises(CatalogError) as caught:
        parse_catalog_file(path)
    message = str(caught.value)
    assert str(path) in message and "line 1" in message and "'gpu_layers'" in message and "≥ 0" in message
    assert "\n" not in message


def test_catalog_gpu_layers_is_read(tmp_path: Path):
    assert parse_catalog_file(write_catalog(tmp_path, "gpu_layers = 0"))[0].gpu_layers == 0
    assert parse_catalog_file(write_catalog(tmp_path, "gpu_layers = 24"))[0].gpu_layers == 24
    assert parse_catalog_file(write_catalog(tmp_path, ""))[0].gpu_layers is None


def test_catalog_gpu_layers_is_refused_on_an_endpoint(tmp_path: Path):
    with pytest.raises(CatalogError, match="'gpu_layers' applies to local models"):
        parse_catalog_file(write_catalog(tmp_path, "gpu_layers = 4", kind="endpoint"))


def test_a_bad_gpu_layers_is_one_line_from_the_cli(tmp_path: Path):
    path = write_catalog(tmp_path, "gpu_layers = -3")
    result = run_cli("models", env={"TUITUNE_CATALOG": str(path)})
    one_clear_error(result, str(path), "gpu_layers", code=1)


@pytest.mark.parametrize("command", [["chat", "m", "hi"], ["compare", "hi", "--models", "a,b"],
                                     ["eval", "--suite", "s.toml", "--models", "a"], ["serve", "m"]])  # fmt: skip
def test_gpu_layers_flag_on_every_command_that_loads_a_local_model(command: list[str]):
    parser = build_parser()
    assert parser.parse_args([*command, "--gpu-layers", "12"]).gpu_layers == 12
    assert parser.parse_args([*command, "--gpu-layers", "0"]).gpu_layers == 0
    assert parser.parse_args(command).gpu_layers is None


@pytest.mark.parametrize("value", ["-1", "all", "1.5"])
def test_gpu_layers_flag_refuses_what_is_no_layer_count(value: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["chat", "m", "hi", "--gpu-layers", value])
    assert caught.value.code == 2
    assert f"'{value}' is not a number of layers" in capsys.readouterr().err


def test_open_engine_gives_the_flag_over_the_entry_over_the_base(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import tuitune.engines.llama as llama
    import tuitune.sources as sources
    from tuitune.engines import ResolvedModel, open_engine

    seen: list[int | None] = []
    monkeypatch.setattr(llama, "LlamaCppEngine", lambda *a, **kw: seen.append(kw["gpu_layers"]))
    monkeypatch.setattr(sources, "model_path", lambda entry: tmp_path / "m.gguf")
    source = Source(kind="path", path=tmp_path / "m.gguf")
    base = ModelEntry("b", "B", "base", "llama", "raw", source, gpu_layers=8)
    tuned = ModelEntry("t", "T", "finetuned", "llama", "chat", None, base="b", adapter=tmp_path / "a.gguf")
    catalog = Catalog([base, tuned], [])
    open_engine(ResolvedModel("b", base, None), catalog=catalog)
    open_engine(ResolvedModel("b", base, None), catalog=catalog, gpu_layers=0)
    open_engine(ResolvedModel("t", tuned, None), catalog=catalog)  # a finetune runs on its base's setting
    open_engine(ResolvedModel("f", None, tmp_path / "m.gguf"), gpu_layers=5)
    assert seen == [8, 0, 8, 5]


def test_chat_and_compare_json_say_where_the_model_ran():
    chat = run_cli("chat", "smollm2-135m-instruct", "Hi", "--max-tokens", "4", "--temperature", "0", "--json",
                   "--gpu-layers", "0")  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert json.loads(chat.stdout)["backend"] == {"name": "CPU", "gpu_layers": 0, "layers": 30, "label": "CPU",
                                                  "devices": []}  # fmt: skip
    compare = run_cli("compare", "Hi", "--models", "smollm2-135m-instruct", "--max-tokens", "4", "--json",
                      "--gpu-layers", "0")  # fmt: skip
    assert compare.returncode == 0, compare.stderr
    assert json.loads(compare.stdout)["results"][0]["backend"]["label"] == "CPU"


# -- GPUs through nvidia-smi, and `tuitune doctor` ------------------------------------------------------------------
def fake_nvidia_smi(tmp_path: Path, csv: str = H200_CSV) -> str:
    """A PATH with a fake ``nvidia-smi`` first, printing ``csv`` for any query."""
    folder = tmp_path / "smi"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{csv}'\n")
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_nvidia_gpus_reads_the_fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert hardware.nvidia_gpus() == [
        hardware.Gpu(0, "NVIDIA H200", 143000 << 20, 143771 << 20),
        hardware.Gpu(1, "NVIDIA H200", 1000 << 20, 143771 << 20),
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [gpu.index for gpu in hardware.nvidia_gpus()] == [1]


def test_doctor_reports_this_machine():
    import llama_cpp

    result = run_cli("doctor")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    out = result.stdout
    build = "CPU" if not llama_cpp.llama_supports_gpu_offload() else "CUDA"
    assert f"backend {build}" in out and f"llama-cpp-python {llama_cpp.__version__}" in out
    assert "GiB available of" in out and "CPU cores" in out and "--device auto:" in out
    report = json.loads(run_cli("doctor", "--json").stdout)
    assert report["llama_cpp"]["backend"] == build and report["llama_cpp"]["error"] is None
    assert report["llama_cpp"]["gpu_offload"] is (build != "CPU")
    assert report["llama_cpp"]["system_info"]["CPU"]  # the CPU features llama.cpp was built with
    assert 0 < report["ram"]["available_bytes"] <= report["ram"]["total_bytes"]
    assert report["cpu_cores"] >= 1 and report["torch"]["device"] in ("cpu", "cuda", "mps")


def test_doctor_lists_gpus_from_nvidia_smi(tmp_path: Path):
    import llama_cpp

    csv = "0, NVIDIA H200, 143000, 143771\n1, \x1b[31mEvil GPU, 100, 200\n"
    env = {"PATH": fake_nvidia_smi(tmp_path, csv), "CUDA_VISIBLE_DEVICES": "0,1"}
    result = run_cli("doctor", env=env)
    assert result.returncode == 0, result.stderr
    assert "0: NVIDIA H200 · 139.6 GiB free of 140.4 GiB" in result.stdout
    assert "\x1b" not in result.stdout and "Evil GPU" in result.stdout  # a GPU name is printed inert
    if not llama_cpp.llama_supports_gpu_offload():
        assert "`make run GPU=cuda` rebuilds it" in result.stdout
    report = json.loads(run_cli("doctor", "--json", env=env).stdout)
    assert [gpu["name"] for gpu in report["gpus"]] == ["NVIDIA H200", "\x1b[31mEvil GPU"]  # JSON escapes it
    assert report["gpus"][0]["free_bytes"] == 143000 << 20


def test_doctor_without_torch_says_so(monkeypatch: pytest.MonkeyPatch):
    from tuitune.cli import doctor

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    report = doctor.torch_report()
    assert report["installed"] is False and "torch" in report["error"]
    lines = doctor.format_report({**doctor.collect(), "torch": report})
    assert any(line.startswith("training") and "torch not installed" in line for line in lines)


def test_doctor_is_registered_with_json():
    args = build_parser().parse_args(["doctor", "--json"])
    assert args.json is True and isinstance(args, argparse.Namespace) and args.func.__name__ == "cmd_doctor"


# -- the pane header ---------------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_pane_header_shows_where_the_model_runs(tmp_path: Path):
    from tests.support.pilot import ScriptedModels, scripted_app

    class OnCuda(ScriptedModels):
        def __call__(self, model_id, n_ctx=None, load=None):
            engine = super().__call__(model_id, n_ctx, load)
            if model_id == "smollm2-135m-instruct":
                engine.backend = Backend("CUDA", 28, 28, ("0: NVIDIA H200",))
            return engine

    app, _ = scripted_app(tmp_path, OnCuda())
    async with app.run_test(size=(160, 40)) as pilot:
        panes = app.screen.panes
        for _ in range(200):
            if all(pane.engine_state == "ready" for pane in panes):
                break
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        base, chat = (str(pane.query_one(".pane-header").render()) for pane in panes)
        assert "smollm2-135m-instruct · chat · CUDA 28/28 layers" in chat
        assert "CPU" not in base and "CUDA" not in base  # an engine that does not say: nothing shown


@pytest.mark.anyio
async def test_pane_header_shows_cpu_for_a_real_model(tmp_path: Path, smollm_path: Path):
    from tuitune.engines.llama import LlamaCppEngine
    from tuitune.tui.app import TuituneApp

    def real(model_id: str, n_ctx: int | None = None, load=None) -> LlamaCppEngine:
        return LlamaCppEngine(smollm_path, model_id=model_id, n_ctx=256, load=load, gpu_layers=0)

    app = TuituneApp(engine_factory=real, history_path=tmp_path / "history.sqlite3")
    async with app.run_test(size=(160, 40)) as pilot:
        for _ in range(400):
            if all(pane.engine_state == "ready" for pane in app.screen.panes):
                break
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        headers = [str(pane.query_one(".pane-header").render()) for pane in app.screen.panes]
        assert all(header.endswith(" · CPU") for header in headers), headers


def test_gpu_loads_take_turns_and_a_waiting_one_can_be_stopped():
    """Compare opens its panes at once: two loads reading the same free memory would both plan to fill it."""
    import threading
    import time

    from tuitune.engines.offload import gpu_load_turn
    from tuitune.errors import StoppedError

    class GpuBuild:
        @staticmethod
        def llama_supports_gpu_offload() -> bool:
            return True

    class CpuBuild:
        @staticmethod
        def llama_supports_gpu_offload() -> bool:
            return False

    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with gpu_load_turn(GpuBuild, None, lambda: False, "first"):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(5)
    with gpu_load_turn(CpuBuild, None, lambda: False, "cpu"), gpu_load_turn(GpuBuild, 0, lambda: False, "zero"):
        order.append("cpu loads never wait")
    cancelled = threading.Event()
    started = time.monotonic()
    cancelled.set()
    with (
        pytest.raises(StoppedError, match="loading waiting was stopped"),
        gpu_load_turn(GpuBuild, None, cancelled.is_set, "waiting"),
    ):
        pass
    assert time.monotonic() - started < 2
    threading.Timer(0.3, release.set).start()
    with gpu_load_turn(GpuBuild, 8, lambda: False, "second"):
        order.append("second in")
    thread.join(5)
    assert order == ["first in", "cpu loads never wait", "first out", "second in"]
