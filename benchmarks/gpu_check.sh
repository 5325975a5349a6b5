#!/usr/bin/env bash
# The GPU check in one command: set up, run the GPU tests, run benchmarks/bench_gpu.py, print one table.
#
#   benchmarks/gpu_check.sh                 on a CUDA machine: search at 1M x 1408, 60-s clips (< 8 min on an H100/H200)
#   benchmarks/gpu_check.sh --cpu           the same on the CPU at small sizes (a few minutes)
#   benchmarks/gpu_check.sh --cpu --quick   tiny sizes, to know the script works (tests/test_gpu_check.py runs it)
#   benchmarks/gpu_check.sh --fetch-wheels  on a machine with PyPI: download the cp312 wheels it carries
#
# Set-up: when `$PYTHON` (default python3) cannot import tagstore, a virtual environment is made in a temp
# folder with the system's packages visible (the machine's own CUDA torch), the missing packages are
# installed from benchmarks/wheels/ without network (duckdb, faiss-cpu, soundfile, soxr, safetensors,
# mutagen, threadpoolctl, pytest: ~47 MB of cp312 wheels), and the sources are put on PYTHONPATH under the
# name `tagstore`. What cannot be installed is skipped, each with its reason, in the tests and the table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/benchmarks/wheels}"
PY="${PYTHON:-python3}"
DEVICE=cuda
QUICK=0
for arg in "$@"; do
  case "$arg" in
    --cpu) DEVICE=cpu ;;
    --quick) QUICK=1 ;;
    --fetch-wheels)
      mkdir -p "$WHEELS"
      "$PY" -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" duckdb==2.0.1 faiss-cpu==1.15.1 soundfile soxr safetensors mutagen threadpoolctl \
        pytest cffi pycparser packaging --no-deps
      du -sh "$WHEELS"
      exit 0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $arg; use --cpu, --quick or --fetch-wheels" >&2; exit 2 ;;
  esac
done

WORK="$(mktemp -d -t tagstore-gpu-check-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
START=$(date +%s)
log() { echo "gpu_check: $*" >&2; }

# --- set-up ---------------------------------------------------------------------------------------
if ! "$PY" -c "import tagstore, duckdb, faiss, soundfile, soxr, safetensors, pytest" 2>/dev/null; then
  log "setting up in $WORK (no network: wheels from $WHEELS)"
  "$PY" -m venv --system-site-packages "$WORK/venv"
  VPY="$WORK/venv/bin/python"
  missing=()
  for pair in numpy:numpy duckdb:duckdb faiss:faiss-cpu soundfile:soundfile soxr:soxr safetensors:safetensors \
              mutagen:mutagen threadpoolctl:threadpoolctl pytest:pytest; do
    "$VPY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    for dist in "${missing[@]}"; do  # one at a time: a wheel that is missing skips its part, not everything
      "$VPY" -m pip install --quiet --no-index --find-links "$WHEELS" "$dist" \
        || log "cannot install $dist from $WHEELS: what needs it is skipped"
    done
  fi
  if ! "$VPY" -c "import tagstore" 2>/dev/null; then
    mkdir -p "$WORK/src"
    cp -r "$ROOT/tagstore" "$WORK/src/tagstore"
    cp -r "$ROOT/cli" "$WORK/src/tagstore/cli"
    cp -r "$ROOT/indexes" "$WORK/src/tagstore/indexes"
    export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  PY="$VPY"
fi
"$PY" -c "import torch" 2>/dev/null || { log "torch is not importable by $PY; install torch (the torch extra) first"; exit 1; }

# --- the GPU tests (they skip with a reason where there is no GPU) ----------------------------------
log "running the GPU tests"
set +e
TESTS="$(cd "$ROOT" && "$PY" -m pytest -q -p no:cacheprovider -rs tests/test_torch_exact.py tests/test_gpu_paths.py \
  tests/test_indexes.py 2>&1)"
STATUS=$?
set -e
echo "$TESTS" | grep -E "^(SKIPPED|FAILED|ERROR)" >&2 || true
SUMMARY="$(echo "$TESTS" | grep -E "passed|failed|error" | tail -1 | sed 's/=//g; s/^ *//; s/ *$//')"

# --- the benchmark ----------------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
  SIZES=(--n 5000 --dim 1408 --queries 20 --seconds 4 --files 2 --models musicnn)
elif [ "$DEVICE" = cpu ]; then
  SIZES=(--n 100000 --dim 1408 --queries 100 --seconds 20 --files 4 --models musicnn,vggish+openl3+passt)
else
  SIZES=(--n 1000000 --dim 1408 --queries 1000 --seconds 60 --files 8 --models musicnn,vggish+openl3+passt)
fi
log "benchmark on $DEVICE: ${SIZES[*]}"
TABLE="$(cd "$ROOT" && "$PY" benchmarks/bench_gpu.py --device "$DEVICE" "${SIZES[@]}")"

echo "$TABLE"
echo "| GPU tests (test_torch_exact, test_gpu_paths, test_indexes) | $DEVICE | 3 test files | ${SUMMARY:-no summary} (exit $STATUS) |"
echo
echo "gpu_check: done in $(( $(date +%s) - START )) s"
exit $STATUS
