#!/usr/bin/env bash
# The GPU checks in one run (`make gpu-check`), on a machine with a CUDA GPU, from a copy of this tree:
#   1. install                 `make install` when .venv is missing or stale (after a first look for a GPU); offline (below),
#                              the wheels of .whl/ into /tmp/sat_site for the machine's own python3
#   2. nbdev_test --flags gpu  the notebooks that have `#| gpu` cells
#   3. pytest -m gpu           with SAT_REQUIRE_GPU=1: a gpu test that finds no GPU fails instead of skipping (among them: AMP
#                              training, the LSTM state kept float32 under bf16/fp16 autocast, sat_prepare's cache on the GPU)
#   4. bench/run.py --device cuda   the GPU suite at the coco_modern preset, with --budget-s so the run stays within its minutes:
#                              the training step in fp32 vs AMP (and vs the reference decoder) with one COCO epoch's projected
#                              time, beam search, memory and captions/s per batch size, the data feed (float32/float16,
#                              pinned or not, workers) vs the step, hard attention, FLOP/s, feature extraction
#
# A GPU machine with network: clone the repository there and run `make gpu-check` (or `bash tools/gpu_check.sh`) in it.
# A GPU machine without network, whose python3 already has torch (and numpy, matplotlib, pandas, scipy, ...):
#   1. on a machine with network, in this tree: `make gpu-wheels` (tools/gpu_wheels.sh), the wheels of every other package
#      the checks import, into .whl/;
#   2. copy the tree with .whl/ but without .venv to the GPU machine, e.g. `rsync -a --exclude .venv ./ gpu-host:sat/`;
#   3. there, in the tree: `make gpu-check` or `bash tools/gpu_check.sh`. With no .venv and wheels in .whl/ (or in
#      GPU_CHECK_WHEELS=DIR), step 1 is `python3 -m pip install --no-index --no-deps --target /tmp/sat_site .whl/*.whl`,
#      PYTHONPATH is /tmp/sat_site:<this tree> (show_attend_tell is imported from the tree, not installed), and every later
#      step runs with that python3 (`python3 /tmp/sat_site/bin/nbdev_test`, `python3 -m pytest`, `python3 bench/run.py`);
#   4. copy the results back (below).
# Where the results land: without OUT, the bench's summary in bench/results/latest.md and latest.json (the GPU suite's part
# beside the CPU suite's) and each GPU topic's .json/.md in bench/results/gpu/, where pytest's junit XML (pytest_gpu.xml)
# and this run's log (gpu_check.log) go too; with OUT=DIR, all of it under DIR (latest.*, gpu/, pytest_gpu.xml, gpu_check.log).
# Every step's time is printed; the whole run aims at GPU_CHECK_TARGET_S seconds (default 285), install included. A failing
# step does not stop the later ones (one session on a GPU should bring back everything it can); the exit status is 1 when any
# step failed, and 1 at once, before anything is run, when there is no CUDA device.
# Knobs: GPU_CHECK_TARGET_S, GPU_CHECK_BENCH_ARGS (more bench/run.py arguments); offline: GPU_CHECK_WHEELS (the wheels'
# folder), GPU_CHECK_PYTHON (default python3), GPU_CHECK_SITE (default /tmp/sat_site).
# GPU_CHECK_REHEARSE=1 rehearses the script on a CPU machine: every step runs its CPU stand-in (the notebooks without their gpu
# cells, the gpu tests skipping, `bench/run.py --dry-run`), into a temporary folder unless OUT is set, and the run always ends
# with exit status 3, never a pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${GPU_CHECK_VENV:-.venv}         # another venv folder: for testing this script
PY=$VENV/bin/python
NBDEV_TEST=("$VENV/bin/nbdev_test")
WHEELS=${GPU_CHECK_WHEELS:-}           # offline mode: install these wheels for the machine's python3 (see above)
if [ -z "$WHEELS" ] && [ ! -x "$PY" ] && compgen -G '.whl/*.whl' >/dev/null; then WHEELS=.whl; fi
SITE=${GPU_CHECK_SITE:-/tmp/sat_site}
if [ -n "$WHEELS" ]; then
    PY=${GPU_CHECK_PYTHON:-python3}
    NBDEV_TEST=("$PY" "$SITE/bin/nbdev_test")   # the console script pip wrote, run by $PY (its shebang is whatever pip saw)
fi
TARGET_S=${GPU_CHECK_TARGET_S:-285}
REHEARSE=${GPU_CHECK_REHEARSE:-}
if [ -z "${OUT:-}" ] && [ -n "$REHEARSE" ]; then OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_rehearsal.XXXXXX"); fi
RESULTS=${OUT:-bench/results}          # the bench's summary (latest.md, latest.json), its topics in $RESULTS/gpu/
DEST=${OUT:-bench/results/gpu}         # this run's log and pytest's junit XML
NB_FLAGS=gpu; REQUIRE_GPU=1; DEVICE=(--device cuda)
if [ -n "$REHEARSE" ]; then NB_FLAGS=; REQUIRE_GPU=0; DEVICE=(--dry-run); fi
LOG=$(mktemp)                          # moves to $DEST/gpu_check.log once there is a GPU (or at once when $OUT is set)
keep_log() {
    if [ "$LOG" = "$DEST/gpu_check.log" ]; then return; fi
    mkdir -p "$DEST"; cat "$LOG" >> "$DEST/gpu_check.log"; rm -f "$LOG"; LOG=$DEST/gpu_check.log
}
rm -f "$DEST/gpu_check.log"
if [ -n "${OUT:-}" ]; then keep_log; fi
START=$SECONDS
FAILED=()
TIMES=()

say() { echo "$*" | tee -a "$LOG"; }
die() {
    echo "error: $1" | tee -a "$LOG" >&2
    if [ -z "${OUT:-}" ]; then rm -f "$LOG"; fi       # no litter in bench/results/gpu/ from a machine without a GPU
    exit 1
}
no_cuda() { die "no CUDA device ($1): run this on a GPU machine"; }
look_for_gpu() {   # before a venv (with torch) exists: the driver's traces, without which no CUDA device can be there
    if ! command -v nvidia-smi >/dev/null 2>&1 && ! compgen -G '/dev/nvidia[0-9]*' >/dev/null && [ ! -e /proc/driver/nvidia ]; then
        no_cuda "no nvidia-smi, /dev/nvidia* or /proc/driver/nvidia on this machine"
    fi
}
torch_cuda() { "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>>"$LOG" || no_cuda "torch.cuda.is_available() is False"; }

# step NAME TIME-LIMIT COMMAND...: run it, its output into the log too; record its time and whether it failed
step() {
    local name=$1 limit=$2 t=$SECONDS rc
    shift 2
    say "== $name: $* (limit ${limit} s)"
    set +e
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    set -e
    local dt=$((SECONDS - t))
    TIMES+=("$(printf '%-8s %4d s  %s' "$name" "$dt" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out'))")")")
    if [ "$rc" -eq 0 ]; then say "== $name: ok in ${dt} s"; else say "== $name: FAILED (exit $rc) in ${dt} s"; FAILED+=("$name"); fi
}

say "gpu_check: $(date '+%Y-%m-%d %H:%M:%S'), $(pwd), results in $RESULTS"
if [ -n "$WHEELS" ]; then
    # offline: the machine's python3 has torch already; it says whether there is a GPU before anything is installed
    if [ -z "$REHEARSE" ]; then look_for_gpu; fi
    command -v "$PY" >/dev/null 2>&1 || die "offline mode (wheels in $WHEELS/): there is no $PY on this machine (GPU_CHECK_PYTHON)"
    "$PY" -c 'import torch' 2>>"$LOG" || die "offline mode (wheels in $WHEELS/): $PY cannot import torch; it uses the machine's own torch (GPU_CHECK_PYTHON: a python with torch)"
    if [ -z "$REHEARSE" ]; then torch_cuda; fi
    compgen -G "$WHEELS/*.whl" >/dev/null || die "offline mode: no wheels in $WHEELS/: run \`make gpu-wheels\` on a machine with network and copy .whl/ here with the tree"
    keep_log
    say "gpu_check: offline mode: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])')), $(compgen -G "$WHEELS/*.whl" | wc -l) wheels from $WHEELS/ into $SITE, this tree on PYTHONPATH"
    step install 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    [ ${#FAILED[@]} -eq 0 ] || { say "error: the wheels in $WHEELS/ did not install into $SITE (the log above says why)"; exit 1; }
    export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
    [ -f "$SITE/bin/nbdev_test" ] || say "warning: pip wrote no $SITE/bin/nbdev_test: the nbdev step will fail"
elif [ ! -x "$PY" ]; then
    # no venv yet: look for a GPU before spending minutes on the install (torch, which knows for sure, comes with it)
    look_for_gpu
    keep_log
    step install 400 make install VENV="$VENV"
    [ -x "$PY" ] || { say "error: make install did not create $PY"; exit 1; }
fi
if [ -n "$REHEARSE" ]; then
    keep_log
    say "gpu_check: REHEARSAL on the CPU (GPU_CHECK_REHEARSE is set): the steps' CPU stand-ins; nothing is checked on a GPU"
else
    if [ -z "$WHEELS" ]; then torch_cuda; fi        # (the offline mode asked before its install)
    keep_log
    if [ ${#TIMES[@]} -eq 0 ]; then step install 400 make install VENV="$VENV"; fi   # a venv was there: bring it up to date (usually a no-op)
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG" || true
    "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}, bf16: {torch.cuda.is_bf16_supported()}")' 2>&1 | tee -a "$LOG"
fi

# the notebooks with `#| gpu` code cells, run with that flag (their other cells run too)
mapfile -t NBS < <("$PY" - <<'EOF'
import json, pathlib, re
for p in sorted(pathlib.Path('nbs').rglob('*.ipynb')):
    if any(part.startswith(('.', '_')) for part in p.parts): continue
    cells = json.loads(p.read_text()).get('cells', [])
    if any(c['cell_type'] == 'code' and re.search(r'^#\|\s*gpu\b', ''.join(c['source']), re.M) for c in cells): print(p.name)
EOF
)
if [ ${#NBS[@]} -eq 0 ]; then
    say "== nbdev: no notebook has a #| gpu cell"; FAILED+=(nbdev)
else
    RE="^($(IFS='|'; echo "${NBS[*]//./\\.}"))\$"
    say "notebooks with gpu cells: ${NBS[*]}"
    step nbdev 150 "${NBDEV_TEST[@]}" --path nbs --flags "$NB_FLAGS" --file_re "$RE" --n_workers "${#NBS[@]}" --timing
fi

step pytest 180 env SAT_REQUIRE_GPU=$REQUIRE_GPU "$PY" -m pytest -q -m gpu tests --ignore=tests/docs \
    -p no:cacheprovider -rfEs --durations=8 --junitxml "$DEST/pytest_gpu.xml"

# the bench gets what is left of the target (the topics not started by then are skipped; the last one started may run over)
LEFT=$((TARGET_S - (SECONDS - START)))
BUDGET=$((LEFT > 60 ? LEFT - 30 : 30))
# shellcheck disable=SC2086
step bench $((BUDGET + 150)) "$PY" bench/run.py "${DEVICE[@]}" --out "$RESULTS" --budget-s "$BUDGET" ${GPU_CHECK_BENCH_ARGS:-}

say ""
say "gpu_check: $((SECONDS - START)) s in all"
for t in "${TIMES[@]}"; do say "  $t"; done
say "results: $RESULTS/latest.md and latest.json (the summary), $RESULTS/gpu/ (one .json/.md per topic), $DEST/pytest_gpu.xml, $DEST/gpu_check.log"
if [ ${#FAILED[@]} -gt 0 ]; then say "gpu_check: FAILED: ${FAILED[*]}"; exit 1; fi
if [ -n "$REHEARSE" ]; then say "gpu_check: rehearsal done, every step ran its CPU stand-in; NOTHING was checked on a GPU"; exit 3; fi
say "gpu_check: all passed"
