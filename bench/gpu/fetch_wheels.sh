#!/usr/bin/env bash
# Download the wheels the GPU machine lacks (Python 3.12, x86-64 manylinux, no network there) into .whl/gpu/,
# a folder git ignores; carry it with the checkout and bench/gpu/run.sh installs them there. Versions are the
# ones pinned in requirements.lock; the set is the one gpu-machine.md found enough (typer, rich, pyyaml, numpy and
# torch are on that machine already).
#   bash bench/gpu/fetch_wheels.sh [PYTHON_VERSION]      # default 3.12
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PYV="${1:-3.12}"
DEST="$ROOT/.whl/gpu"
mkdir -p "$DEST"
pin() { grep -E "^$1==" "$ROOT/requirements.lock" | head -1 | cut -d' ' -f1; }
PKGS="$(pin tinygrad) $(pin pydantic) $(pin pydantic-core) $(pin annotated-types) $(pin typing-inspection) \
$(pin typing-extensions) $(pin license-expression) $(pin boolean-py)"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any -d "$DEST" $PKGS
ls -la "$DEST"
du -sh "$DEST"
