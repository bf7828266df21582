#!/usr/bin/env bash
# Stage 2 of the shipped scenes expert (experts/scenes); stage 1 is in scripts/train_experts.sh.
# Stage 1 trained on 128 px crops of photos capped at 256 px and stopped still improving at its last step;
# the experts are judged (and used) on whole photos, where objects are ~1.5x larger than in those crops
# (measured on the animals expert: it won on 176 px crops and lost on whole photos). Stage 2 continues
# at 192 px crops of photos capped at 320 px, and picks its checkpoint on 40 held-out *train* photos at
# 256 px, never on scenes/val (what we report). One torch thread. Resumable: RESUME=--resume.
set -euo pipefail
D=${DATA:-../shared/data}/colorize
python -m ensemble_color train expert --data $D/scenes/train --holdout 40 --val $D/scenes/val \
  --name scenes --routes background --init "${INIT:-experts/scenes}" --lr 5e-4 --steps 1000 --crop 192 \
  --max-side 320 --val-size 256 --val-every 100 --seed 0 --threads "${THREADS:-1}" \
  --run-dir runs/scenes_v2 --out "${OUT:-runs/export_v4}" ${RESUME:-}
