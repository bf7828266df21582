#!/usr/bin/env bash
# Router v4 attempt: warm start from the shipped router v3 (router/), aimed at pasted-bird recall (issue 4).
# Measured before: v3 routes >0.5 of the pasted bird in only 36 of 59 *train* composites (33/57 val), and its
# training loss was flat from step 1,500: it underfits birds, so this run weights bird and animal pixels 2x in
# the cross-entropy, pastes smaller cut-outs too (0.15-0.75 of the crop), and restarts at a higher peak lr.
# Exported to runs/export/router_v4; shipped into router/ only if the rule in router/README.md ("v4") holds.
# Threads: THREADS (default 1). Resumable: RESUME=--resume.
set -euo pipefail
python -m ensemble_color train router --data "${DATA:-../shared/data}" --init "${INIT:-router}" \
  --out "${OUT:-runs/export/router_v4}" --run-dir runs/router_v4 \
  --steps 3000 --batch-size 16 --crop 224 --scale 0.25 1.0 --composite-frac 0.7 \
  --mask-cutouts faces birds animals --balanced-cutouts --paste-range 0.15 0.75 --lr 8e-4 \
  --class-weights 1 1 2 2 --input-size 256 --val-every 500 --val-limit 40 --ema 0.995 --seed 3 \
  --threads "${THREADS:-1}" ${RESUME:-}
