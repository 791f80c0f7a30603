#!/usr/bin/env bash
# The prepared GPU check: one script, <= 8 minutes on one H200, one JSON and a table.
#
#   bash bench/gpu/run.sh [--dry-run] [--out DIR]
#
# On the GPU machine (Python 3.12, torch with CUDA, no tinygrad or pydantic, no network) it installs the wheels
# that bench/gpu/fetch_wheels.sh put in .whl/gpu/ (an ignored folder carried with the checkout) into a private
# site folder, finds libnvrtc for tinygrad's CUDA backend, and runs the stages of bench/gpu/stages.py, each in
# its own process under its own `timeout`, writing DIR/<stage>.json as it finishes (a hung stage leaves the
# others' figures) and its stderr to DIR/<stage>.err. The whole check keeps to a budget (ZP_GPU_BUDGET_S, default
# 465 s: 8 minutes less the wheel install): a stage gets at most what is left of it, and is skipped (saying so)
# when less than 20 s is left.
# --dry-run runs the same stages on the CPU with tiny shapes and the interpreter already on PATH (CI checks it).
set -u
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DRY=0
OUTDIR="${OUT:-$ROOT/bench/gpu/out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUTDIR="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUTDIR"
START=$(date +%s)
BUDGET="${ZP_GPU_BUDGET_S:-465}"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
  # NOOPT: tinygrad's kernel optimiser off, so lowering the tiny kernels costs a third (dry-run figures mean nothing)
  export DEV=CPU NOOPT=1 PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  BUDGET="${ZP_GPU_BUDGET_S:-3600}"
  FLAG=--dry-run
else
  FLAG=
  SITE="${ZP_GPU_SITE:-/tmp/zp-site}"
  WHEELS="$ROOT/.whl/gpu"
  if ! "$PY" -c "import tinygrad, pydantic" 2>/dev/null; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
      echo "no wheels in $WHEELS: run bench/gpu/fetch_wheels.sh where there is a network, and carry .whl/gpu" >&2
      exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
      > "$OUTDIR/install.log" 2>&1 || { echo "wheel install failed: see $OUTDIR/install.log" >&2; exit 2; }
  fi
  export PYTHONPATH="$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  # tinygrad finds libcuda itself, but not the toolkit's nvrtc (notes: gpu-machine.md); never CUDA_PATH=<file>
  if [ -z "${NVRTC_PATH:-}" ]; then
    for c in /usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so /usr/local/cuda-*/targets/x86_64-linux/lib/libnvrtc.so \
             /usr/local/cuda*/lib64/libnvrtc.so; do
      [ -e "$c" ] && { NVRTC_PATH="$c"; break; }
    done
    [ -z "${NVRTC_PATH:-}" ] && NVRTC_PATH=$(find / -xdev -name 'libnvrtc.so*' ! -path '*stub*' 2>/dev/null | head -1)
    export NVRTC_PATH
  fi
  export DEV="${DEV:-CUDA}"
fi

"$PY" - "$OUTDIR/run_meta.json" "$DRY" "$BUDGET" <<'EOF'
import json, os, platform, sys, time
json.dump({"dry_run": sys.argv[2] == "1", "budget_s": int(sys.argv[3]), "python": platform.python_version(),
           "host": platform.node(), "cores": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "env": {k: os.environ.get(k) for k in ("DEV", "NVRTC_PATH", "BEAM", "NOOPT", "PYTHONPATH")}},
          open(sys.argv[1], "w"), indent=1)
EOF

FAILED=0
while read -r STAGE LIMIT; do
  LEFT=$(( BUDGET - ($(date +%s) - START) ))
  rm -f "$OUTDIR/$STAGE.json" "$OUTDIR/$STAGE.status"
  if [ "$LEFT" -lt 20 ]; then
    echo "skipped: the budget of ${BUDGET} s was spent before this stage" > "$OUTDIR/$STAGE.status"
    echo "== $STAGE skipped (budget)"; continue
  fi
  [ "$LIMIT" -gt "$LEFT" ] && LIMIT=$LEFT
  echo "== $STAGE (limit ${LIMIT} s)"
  timeout -k 10 "$LIMIT" "$PY" "$HERE/stages.py" "$STAGE" --out "$OUTDIR" $FLAG 2> "$OUTDIR/$STAGE.err" | tail -1
  RC=${PIPESTATUS[0]}
  if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
    echo "timeout: killed after ${LIMIT} s; last stderr: $(tail -1 "$OUTDIR/$STAGE.err" | cut -c1-300)" > "$OUTDIR/$STAGE.status"
    FAILED=1
  elif [ "$RC" != 0 ]; then
    [ -f "$OUTDIR/$STAGE.json" ] || echo "error: exit $RC; last stderr: $(tail -1 "$OUTDIR/$STAGE.err" | cut -c1-300)" > "$OUTDIR/$STAGE.status"
    FAILED=1
  fi
done < <("$PY" "$HERE/stages.py" list $FLAG)

"$PY" "$HERE/stages.py" summarize "$OUTDIR" $FLAG
echo "total $(( $(date +%s) - START )) s"
exit $FAILED
