#!/usr/bin/env bash
# A vision run on real data: register, scan and approve sklearn's digits, train the digits ViT (30 epochs, under a
# minute on a 2-core CPU; ~98% held-out top-1, docs/vision.md), then print its size (`zpctl model info`).
set -euo pipefail
cd "$(dirname "$0")/.."
export ZP_HOME=${ZP_HOME:-$PWD/.zp-demo}
Z=.venv/bin/zpctl
D=$(.venv/bin/python -c "from zeropoint.data.images import digits_csv_path; print(digits_csv_path())")
$Z data ls --json | grep -q '"digits"' || $Z data add "$D" --name digits --license BSD-3-Clause --source-type public
$Z data scan digits
$Z data approve digits --approver demo-approver
$Z train configs/vision/vit-micro_digits.yaml
$Z model info configs/vision/vit-micro_digits.yaml
