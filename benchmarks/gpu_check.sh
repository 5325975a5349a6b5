#!/usr/bin/env bash
# The GPU check in one command: set up, run the GPU tests, run benchmarks/bench_gpu.py, print one table.
#
#   benchmarks/gpu_check.sh                 on a CUDA machine: search at 1M x 1408, 60-s clips (< 8 min on an H100/H200)
#   benchmarks/gpu_check.sh --cpu           the same on the CPU at small sizes (a few minutes)
#   benchmarks/gpu_check.sh --cpu --quick   tiny sizes, to know the script works (tests/test_gpu_check.py runs it)
#   benchmarks/gpu_check.sh --fetch-wheels  on a machine with PyPI: download the cp312 wheels it carries
#
# Set-up, for `$PYTHON` (default python3) with its own torch (e.g. 2.11+cu130): when it cannot import
# tagstore, the sources are put on PYTHONPATH under the name `tagstore`; each package it lacks is installed
# into a temp folder from benchmarks/wheels/ without network (duckdb, faiss-cpu, soundfile, soxr,
# safetensors, mutagen, threadpoolctl, pytest, ...: ~49 MB of cp312 wheels, `--fetch-wheels` gets them).
# What cannot be installed is skipped, each with its reason, in the tests and the table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/benchmarks/wheels}"
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; *) PY="$(command -v "$PY")" ;; esac
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
        -d "$WHEELS" --no-deps duckdb==2.0.1 faiss-cpu==1.15.1 soundfile cffi pycparser soxr safetensors mutagen \
        threadpoolctl typing-extensions pytest pluggy iniconfig pygments packaging
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
# Each missing package goes into a folder on PYTHONPATH (pip --target, no network, no dependencies
# resolved: the list names them), so the interpreter's own CUDA torch and numpy are used as they are.
NEEDED="numpy:numpy duckdb:duckdb faiss:faiss-cpu packaging:packaging soundfile:soundfile cffi:cffi
pycparser:pycparser soxr:soxr safetensors:safetensors mutagen:mutagen threadpoolctl:threadpoolctl
typing_extensions:typing-extensions pytest:pytest pluggy:pluggy iniconfig:iniconfig pygments:pygments"
importable() { (cd / && "$PY" -c "import $1") 2>/dev/null; }  # from /: the repo's own folders would mislead
if ! importable tagstore.indexes; then
  mkdir -p "$WORK/src"
  cp -r "$ROOT/tagstore" "$WORK/src/tagstore"
  cp -r "$ROOT/cli" "$WORK/src/tagstore/cli"
  cp -r "$ROOT/indexes" "$WORK/src/tagstore/indexes"
  export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
fi
for pair in $NEEDED; do
  if ! importable "${pair%%:*}"; then
    log "installing ${pair##*:} from $WHEELS"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --upgrade --target "$WORK/deps" \
      --find-links "$WHEELS" "${pair##*:}" || log "cannot install ${pair##*:} from $WHEELS: what needs it is skipped"
    case ":${PYTHONPATH:-}:" in *":$WORK/deps:"*) ;; *) export PYTHONPATH="$WORK/deps${PYTHONPATH:+:$PYTHONPATH}" ;; esac
  fi
done
importable torch || { log "torch is not importable by $PY; install torch (the torch extra) first"; exit 1; }

# --- the GPU tests (they skip with a reason where there is no GPU) ----------------------------------
log "running the GPU tests"
set +e
# From the temp folder: `python -m pytest` puts the working folder first on sys.path, and in the repo its
# tagstore/ (without cli/ and indexes/ mapped in) would hide the installed or copied package.
TESTS="$(cd "$WORK" && "$PY" -m pytest -q -p no:cacheprovider -rs "$ROOT/tests/test_torch_exact.py" \
  "$ROOT/tests/test_gpu_paths.py" "$ROOT/tests/test_indexes.py" 2>&1)"
STATUS=$?
set -e
echo "$TESTS" | grep -E "^(SKIPPED|FAILED|ERROR|E  )" >&2 || true
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
