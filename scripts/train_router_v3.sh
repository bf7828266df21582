#!/usr/bin/env bash
# Exact command that produced the shipped router v3 (router/model.safetensors + router/config.json):
# a second warm start, from router v2 (scripts/train_router_v2.sh), whose validation mIoU was still rising
# when it stopped. Same data recipe; more composites (70 %, the weak spot: pasted birds and animals), a
# lower peak learning rate for the restart, a new seed so the crops and pastes differ from v2's.
# INIT must be router v2: run this right after scripts/train_router_v2.sh, or extract v2 as committed with
#   mkdir -p runs/router_v2_init && for f in model.safetensors config.json; do git show 7f3048c:router/$f > runs/router_v2_init/$f; done
# and pass INIT=runs/router_v2_init. The export goes to runs/export/router_v3 and was copied into router/ after
# evaluation. Weight EMA 0.995 (the validated, exported weights are the average). Threads: THREADS (default 1). Resumable: RESUME=--resume.
set -euo pipefail
python -m ensemble_color train router --data "${DATA:-../shared/data}" --init "${INIT:-router}" \
  --out "${OUT:-runs/export/router_v3}" --run-dir runs/router_v3 \
  --steps 3000 --batch-size 16 --crop 224 --scale 0.25 1.0 --composite-frac 0.7 \
  --mask-cutouts faces birds animals --balanced-cutouts --paste-range 0.2 0.75 --lr 5e-4 \
  --input-size 256 --val-every 500 --val-limit 40 --ema 0.995 --seed 2 --threads "${THREADS:-1}" ${RESUME:-}
