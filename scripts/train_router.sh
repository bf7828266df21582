#!/usr/bin/env bash
# Exact command that produced the shipped router (router/model.safetensors + router/config.json).
# FPN (64/32 decoder channels) on a randomly initialised timm MobileNetV3-Large, L input only;
# 50% copy-paste composites. One torch thread: it ran beside the expert and generalist trainings
# on 2 cores. Resumable: re-run with RESUME=--resume after an interruption (same arguments).
# Until the CLI wires `train router`, `python -m ensemble_color.train.router` takes the same arguments.
set -euo pipefail
R=${RESUME:-}
if python -m ensemble_color train router --help >/dev/null 2>&1; then
  CMD=(python -m ensemble_color train router)
else
  CMD=(python -m ensemble_color.train.router)
fi
"${CMD[@]}" --data "${DATA:-../shared/data}" --out router --run-dir runs/router \
  --steps 2800 --batch-size 16 --crop 192 --scale 0.25 1.0 --composite-frac 0.5 --lr 2e-3 \
  --val-every 400 --val-limit 40 --seed 0 --threads "${THREADS:-1}" $R
