#!/usr/bin/env bash
# GPU check of tuitune's trainer on one NVIDIA GPU (issue 14), as ONE prepared run of under 10 minutes.
#
# How to run it on the device machine (H200, no network, tuitune not installed, its own python3 + torch):
#   1. here, in the repo root, whenever the wheels or skeletons are missing or stale:
#          bash bench/device_wheels.sh                      # fills the git-ignored .whl/ (≈ 12 MiB)
#   2. the device call (the script itself installs .whl/*.whl with `pip install --no-index --no-deps --target`
#      into a temporary directory and runs from source with PYTHONPATH=that:$PWD; never pip-install the project
#      there, its extras pin another torch):
#          run(command="BUDGET=540 bash bench/device_check.sh", carry=[".whl"], timeout_s=600)
#      Results come back from $OUT: summary.md, results.jsonl, bench_train.md, device_check.log.
#
# Here, without a GPU, the same steps at toy size prove the plumbing (a few minutes on 2 cores):
#          DEVICE=cpu STEPS=2 bash bench/device_check.sh        # results in ./device-out (git-ignored)
# (with the demo models installed it trains the real ones; WEIGHTS=synthetic takes the device's path).
#
# Parts, each under `timeout` and a shared time budget (BUDGET seconds; a part that no longer fits is skipped
# and named in the summary), none stopping the others:
#   1. environment: nvidia-smi, torch/CUDA/bf16, bitsandbytes, llama-cpp-python, `tuitune doctor`;
#   2. `tuitune train --device cuda` on both demo models, bf16 and `--quantize 4bit`: exit, loss, tokens/s,
#      peak_device_mb, nvidia-smi's peak, and the memory planner's estimate for the same config;
#   3. bench/bench_train.py --device cuda: tokens/s against HF Trainer + peft in bf16 (goal ≥ 1.5×);
#   4. llama.cpp decode tokens/s with n_gpu_layers 0 and -1, if llama-cpp-python offloads there.
# The demo GGUFs (94 + 241 MiB) cannot travel: where they are not installed, each is synthesized from its
# skeleton in .whl/models (real tokenizer and shapes, random matrices; see bench/device_check.py).
#
# Settings (environment): DEVICE=cuda|cpu, STEPS, BATCH, BENCH_STEPS, ROUNDS, MODELS, QUANT_MODELS,
# BENCH_MODELS (comma lists of catalog ids), WEIGHTS=auto|synthetic|real, BUDGET, OUT, PYTHON,
# INSTALL_WHEELS=0|1, DECODE_FORCE=1 (decode without GPU offload too), KEEP_WORK=1.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$PWD
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$REPO/device-out}
mkdir -p "$OUT"
LOG=$OUT/device_check.log
RESULTS=$OUT/results.jsonl
BENCH_MD=$OUT/bench_train.md
SUMMARY=$OUT/summary.md
: >"$LOG"
: >"$RESULTS"
: >"$BENCH_MD"

MODELS=${MODELS:-smollm2-135m-instruct,gemma-3-270m}
if [ "$DEVICE" = cuda ]; then
    STEPS=${STEPS:-20}
    BATCH=${BATCH:-8}
    BENCH_STEPS=${BENCH_STEPS:-30}
    ROUNDS=${ROUNDS:-1}
    BUDGET=${BUDGET:-540}
    QUANT_MODELS=${QUANT_MODELS:-$MODELS}
    BENCH_MODELS=${BENCH_MODELS:-$MODELS}
    MAIN_MODE=bf16
    INSTALL_WHEELS=${INSTALL_WHEELS:-1}
else # toy sizes: this proves the plumbing, not the speed
    STEPS=${STEPS:-2}
    BATCH=${BATCH:-2}
    BENCH_STEPS=${BENCH_STEPS:-3}
    ROUNDS=${ROUNDS:-1}
    BUDGET=${BUDGET:-1500}
    QUANT_MODELS=${QUANT_MODELS:-smollm2-135m-instruct}
    BENCH_MODELS=${BENCH_MODELS:-smollm2-135m-instruct}
    MAIN_MODE=fp32
    INSTALL_WHEELS=${INSTALL_WHEELS:-0}
fi
WEIGHTS=${WEIGHTS:-auto}
DATA=$REPO/data/tuitune-identity.jsonl
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then
    PY=$REPO/.venv/bin/python
else
    PY=python3
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tuitune-device-check.XXXXXX")
SITE=${SITE:-$WORK/site}
MODELS_SITE=$WORK/models-site
mkdir -p "$SITE" "$MODELS_SITE"
export TUITUNE_DATA_DIR=$WORK/data TUITUNE_CONFIG_DIR=$WORK/config TUITUNE_CACHE_DIR=$WORK/cache
export TUITUNE_LOG_DIR=$WORK/logs
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME=$WORK/hf PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=$MODELS_SITE:$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}
SMI_PID=""

# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    [ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

banner() { printf '\n==== [%4ss] %s\n' "$SECONDS" "$*"; }

part_timeout() { # WANTED: the seconds a part may take, capped by what is left of BUDGET; fails if too little
    local left=$((BUDGET - SECONDS - 20))
    [ "$left" -ge 30 ] || return 1
    echo $(($1 < left ? $1 : left))
}

skip() { # WHAT WHY
    echo "skipped: $1: $2"
    "$PY" bench/device_check.py skip --results "$RESULTS" --what "$1" --why "$2"
}

smi_start() {
    SMI_FILE=$WORK/smi.$1
    SMI_PID=""
    if [ "$DEVICE" = cuda ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$SMI_FILE" 2>/dev/null &
        SMI_PID=$!
    fi
}

smi_stop() { # prints the highest memory.used (MiB) seen since smi_start
    if [ -n "$SMI_PID" ]; then
        kill "$SMI_PID" 2>/dev/null
        wait "$SMI_PID" 2>/dev/null
        SMI_PID=""
        sort -n "$SMI_FILE" 2>/dev/null | tail -1 | tr -dc '0-9'
    fi
}

# -- setup ---------------------------------------------------------------------------------------------------
setup() {
    banner "setup: DEVICE=$DEVICE STEPS=$STEPS BATCH=$BATCH BENCH_STEPS=$BENCH_STEPS ROUNDS=$ROUNDS BUDGET=${BUDGET}s"
    echo "python: $PY; work dir: $WORK; results: $OUT"
    if [ "$INSTALL_WHEELS" = 1 ]; then
        if compgen -G ".whl/*.whl" >/dev/null; then
            timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" .whl/*.whl || echo "warning: installing .whl/*.whl failed (exit $?)"
            echo "installed into $SITE:" "$SITE"/*.dist-info
        else
            echo "warning: no .whl/*.whl (run bench/device_wheels.sh here first); using what $PY has"
        fi
    fi
    declare -gA WEIGHTS_OF=()
    local model t
    for model in ${MODELS//,/ }; do
        if [ "$WEIGHTS" != synthetic ] && "$PY" -c "
import sys
from tuitune.catalog import load_catalog
from tuitune.sources import is_installed
sys.exit(0 if is_installed(load_catalog().get('$model')) else 1)" 2>/dev/null; then
            WEIGHTS_OF[$model]=real
            echo "$model: installed, real weights"
        elif [ "$WEIGHTS" != real ] && [ -f ".whl/models/$model.skeleton.gguf.gz" ]; then
            t=$(part_timeout 180) || {
                skip "$model" "no time left to synthesize it"
                continue
            }
            if timeout "$t" "$PY" bench/device_check.py synth --model "$model" \
                --skeleton ".whl/models/$model.skeleton.gguf.gz" --site "$MODELS_SITE"; then
                WEIGHTS_OF[$model]=synthetic
            else
                skip "$model" "synthesizing it from its skeleton failed"
            fi
        else
            skip "$model" "not installed and no .whl/models/$model.skeleton.gguf.gz (run bench/device_wheels.sh)"
        fi
    done
}

# -- 1. environment --------------------------------------------------------------------------------------------
part_environment() {
    banner "1. environment"
    if command -v nvidia-smi >/dev/null; then
        timeout 30 nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
    timeout 90 "$PY" bench/device_check.py env --results "$RESULTS" || echo "env report failed (exit $?)"
    banner "1b. tuitune doctor"
    timeout 90 "$PY" -m tuitune doctor
    local rc=$?
    [ "$rc" = 0 ] || echo "tuitune doctor: exit $rc (absent in this checkout, or it failed: see above)"
}

# -- 2. training runs ------------------------------------------------------------------------------------------
train_run() { # MODEL MODE
    local model=$1 mode=$2 name="dc-$1-$2" t rc start peak extra=()
    [ "$mode" = 4bit ] && extra=(--quantize 4bit)
    if [ -z "${WEIGHTS_OF[$model]:-}" ]; then
        skip "train $model $mode" "no weights for $model"
        return
    fi
    t=$(part_timeout 240) || {
        skip "train $model $mode" "time budget spent"
        return
    }
    banner "2. tuitune train $model $mode (${WEIGHTS_OF[$model]} weights, timeout ${t}s)"
    smi_start "$name"
    start=$SECONDS
    timeout -k 15 "$t" "$PY" -m tuitune train --name "$name" --base "$model" --data "$DATA" \
        --max-steps "$STEPS" --save-every "$STEPS" --batch-size "$BATCH" --device "$DEVICE" \
        ${extra[@]+"${extra[@]}"}
    rc=$?
    peak=$(smi_stop)
    [ "$rc" = 124 ] && echo "timed out after ${t}s"
    timeout 120 "$PY" bench/device_check.py record-run --results "$RESULTS" --name "$name" --model "$model" \
        --mode "$mode" --device "$DEVICE" --weights "${WEIGHTS_OF[$model]}" --rc "$rc" \
        --wall "$((SECONDS - start))" ${peak:+--smi-peak "$peak"} || echo "record-run failed (exit $?)"
}

part_training() {
    local model
    for model in ${MODELS//,/ }; do
        train_run "$model" "$MAIN_MODE"
    done
    for model in ${QUANT_MODELS//,/ }; do
        train_run "$model" 4bit
    done
}

# -- 3. tuitune vs HF Trainer ----------------------------------------------------------------------------------
part_bench() {
    local models="" model t
    for model in ${BENCH_MODELS//,/ }; do
        [ -n "${WEIGHTS_OF[$model]:-}" ] && models+="${models:+,}$model"
    done
    if [ -z "$models" ]; then
        skip "bench_train" "no models"
        return
    fi
    t=$(part_timeout 300) || {
        skip "bench_train (tuitune vs HF Trainer)" "time budget spent"
        return
    }
    banner "3. bench/bench_train.py --device $DEVICE --steps $BENCH_STEPS --rounds $ROUNDS --models $models"
    timeout -k 15 "$t" "$PY" bench/bench_train.py --device "$DEVICE" --steps "$BENCH_STEPS" --rounds "$ROUNDS" \
        --models "$models" | tee "$BENCH_MD"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" != 0 ]; then
        echo "bench_train: exit $rc$([ "$rc" = 124 ] && echo " (timed out after ${t}s)")"
        echo "bench_train.py failed (exit $rc); see device_check.log" >>"$BENCH_MD"
    fi
}

# -- 4. llama.cpp decode -----------------------------------------------------------------------------------------
part_decode() {
    local models="" model t
    for model in ${MODELS//,/ }; do
        [ -n "${WEIGHTS_OF[$model]:-}" ] && models+="${models:+,}$model"
    done
    t=$(part_timeout 150) || {
        skip "decode" "time budget spent"
        return
    }
    banner "4. llama.cpp decode, n_gpu_layers 0 vs -1"
    [ -n "$models" ] || {
        skip "decode" "no models"
        return
    }
    timeout -k 10 "$t" "$PY" bench/device_check.py decode --results "$RESULTS" --models "$models" \
        ${DECODE_FORCE:+--force} || echo "decode: exit $?"
}

main() {
    setup
    part_environment
    part_training
    part_bench
    part_decode
    banner "summary"
    "$PY" bench/device_check.py summary --results "$RESULTS" --device "$DEVICE" --bench-md "$BENCH_MD" \
        >"$SUMMARY" || echo "summary failed (exit $?)"
    cat "$SUMMARY"
    banner "done in ${SECONDS}s; files in $OUT"
}

main 2>&1 | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
