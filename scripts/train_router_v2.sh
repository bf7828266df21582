#!/usr/bin/env bash
# Exact command that produced the shipped router v2 (router/model.safetensors + router/config.json):
# a warm start from the v1 router (scripts/train_router.sh), fine-tuned with more and better composites:
# real foregrounds cut from the train masks of all three subject categories, each class pasted equally
# often, a wider paste-size range, larger crops, and the inference input size 256 px (measured better
# than 320 on seed-1 val composites for v1). One torch thread (it shares the cores with an expert run).
# INIT must be the v1 router: run this right after scripts/train_router.sh, or extract v1 as committed with
#   mkdir -p runs/router_v1 && for f in model.safetensors config.json; do git show 1deaef3:router/$f > runs/router_v1/$f; done
# and pass INIT=runs/router_v1. The export goes to runs/export/router_v2 and was copied into router/ after evaluation.
# Resumable: re-run with RESUME=--resume after an interruption (same arguments).
set -euo pipefail
python -m ensemble_color train router --data "${DATA:-../shared/data}" --init "${INIT:-router}" \
  --out "${OUT:-runs/export/router_v2}" --run-dir runs/router_v2 \
  --steps 3000 --batch-size 16 --crop 224 --scale 0.25 1.0 --composite-frac 0.6 \
  --mask-cutouts faces birds animals --balanced-cutouts --paste-range 0.2 0.75 --lr 1e-3 \
  --input-size 256 --val-every 500 --val-limit 40 --seed 1 --threads "${THREADS:-1}" ${RESUME:-}
