#!/usr/bin/env bash
# Acceptance bench for the offline appliance (issue 22; docs/appliance.md):
#   1. pack a bundle without the test extras (`zpctl appliance pack`; needs the network);
#   2. a fresh Debian 12 root made from Debian packages (debootstrap minbase + openssl, the trusted verifier);
#   3. with no network (`unshare -n`), in that root: install.sh verifies the bundle, installs its Debian packages
#      with dpkg, the venv with pip --no-index, the weights and the data packs; a second run shows it idempotent;
#   4. `zpctl health` green, a governed slice of the State of the Union (add, PII scan, approve) and
#      `zpctl train configs/llm/tiny_lora.yaml` on it; the installed SBOM lists tinygrad's wheel hash.
# Writes $WORK/result.json (times, sizes, health, the run). Root only (chroot, dpkg, unshare).
# usage: bench/appliance_offline.sh [WORK]
#   env: PACK_ARGS (e.g. "--without browser"), ZP_PACK_CACHE (keeps downloads), REUSE_BUNDLE=1 (install WORK/bundle.tar
#   again without packing; the pack figures then come from the earlier WORK/pack.json)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${1:-/tmp/zp-appliance-bench}
CACHE=${ZP_PACK_CACHE:-$WORK/cache}
read -ra PACK_ARGS <<< "${PACK_ARGS:-}"
[ "$(id -u)" = 0 ] || { echo "bench/appliance_offline.sh needs root (chroot, dpkg, unshare)" >&2; exit 2; }
mkdir -p "$WORK"
say() { printf '\033[1m[bench]\033[0m %s\n' "$*"; }
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 1))"; }

# 1. pack (the packer's own workspace holds its signing key)
export ZP_HOME=$WORK/packer
[ -f "$ZP_HOME/keys/appliance.key" ] || zpctl keys init >/dev/null
rm -f "$WORK/appliance.pub"; zpctl keys export-public --out "$WORK/appliance.pub" >/dev/null
if [ "${REUSE_BUNDLE:-0}" = 1 ] && [ -f "$WORK/bundle.tar" ] && [ -s "$WORK/pack.json" ]; then
  say "pack: reusing $WORK/bundle.tar (REUSE_BUNDLE=1)"; pack_s=0
else
  rm -rf "$WORK/bundle" "$WORK/bundle.tar"
  say "pack: zpctl appliance pack --out $WORK/bundle --cache $CACHE ${PACK_ARGS[*]}"
  t=$(now); zpctl appliance pack --out "$WORK/bundle" --cache "$CACHE" "${PACK_ARGS[@]}" --json > "$WORK/pack.json"
  pack_s=$(secs "$t" "$(now)")
fi

# 2. a fresh Debian root (the base is made once, then copied fresh for every run)
if [ ! -x "$WORK/base/usr/bin/openssl" ]; then
  say "base: debootstrap --variant=minbase --include=openssl bookworm (network, once)"
  rm -rf "$WORK/base"; debootstrap --variant=minbase --include=openssl bookworm "$WORK/base" http://deb.debian.org/debian >/dev/null
fi
ROOT=$WORK/root
rm -rf "$ROOT"; cp -a "$WORK/base" "$ROOT"
# move: only the .tar and the public key travel
cp "$WORK/bundle.tar" "$WORK/appliance.pub" "$ROOT/tmp/"
cp "$REPO/bench/appliance_offline_inside.sh" "$ROOT/tmp/inside.sh"

# 3 + 4. no network: a new network namespace (only a downed loopback), its own mounts for /proc and /dev
say "offline: unshare -n, chroot $ROOT, install and train"
t=$(now)
unshare --net --mount --fork --pid bash -c "
  mount -t proc proc '$ROOT/proc' && mount --rbind /dev '$ROOT/dev' && mount -t tmpfs tmpfs '$ROOT/dev/shm'
  exec chroot '$ROOT' /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb bash /tmp/inside.sh
" 2>&1 | tee "$WORK/inside.log"
offline_s=$(secs "$t" "$(now)")
cp "$ROOT/tmp/inside.json" "$WORK/inside.json"
python3 - "$WORK" "$pack_s" "$offline_s" <<'EOF'
import json, os, sys
work, pack_s, offline_s = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
pack = json.load(open(f"{work}/pack.json")); inside = json.load(open(f"{work}/inside.json"))
res = {"pack_s": pack_s or pack["seconds"]["total"], "pack_reused": pack_s == 0, "pack": {k: pack[k] for k in ("tar_bytes", "dir_bytes", "bytes_by_part", "files", "wheels",
       "weights", "data_packs", "debs", "with", "without", "seconds")},
       "offline_total_s": offline_s, "inside": inside, "load_before": os.getloadavg()}
json.dump(res, open(f"{work}/result.json", "w"), indent=2)
print(json.dumps(res, indent=2))
EOF
