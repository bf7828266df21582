#!/usr/bin/env bash
# Router v5 attempt: warm start from the v4 attempt (scripts/train_router_v4.sh -> runs/export/router_v4), which
# routed more seed-1 composite birds (0.654 vs 0.596) and single animals than v3 but lost 0.012 val-masks mIoU
# and did not route more single pasted birds (bench/results/router_select.md), so it was not shipped.
# This run anneals v4 without the 2x bird/animal class weights (plain CE + Dice), at a low peak lr, to win back
# the val-masks precision. Exported to runs/export/router_v5; judged by bench/router_select.py against v3.
# Threads: THREADS (default 1). Resumable: RESUME=--resume.
set -euo pipefail
python -m ensemble_color train router --data "${DATA:-../shared/data}" --init "${INIT:-runs/export/router_v4}" \
  --out "${OUT:-runs/export/router_v5}" --run-dir runs/router_v5 \
  --steps 1500 --batch-size 16 --crop 224 --scale 0.25 1.0 --composite-frac 0.7 \
  --mask-cutouts faces birds animals --balanced-cutouts --paste-range 0.15 0.75 --lr 3e-4 \
  --input-size 256 --val-every 500 --val-limit 40 --ema 0.995 --seed 4 \
  --threads "${THREADS:-1}" ${RESUME:-}
