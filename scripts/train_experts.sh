#!/usr/bin/env bash
# Exact commands that produced the shipped specialist experts (experts/{scenes,faces,birds,animals}).
# A shared base model is trained on the union of the four train splits, then each specialist is
# fine-tuned from it on its own category (the small animals/scenes sets need the shared features).
# Resumable: re-run with RESUME=--resume after an interruption.
set -euo pipefail
D=${DATA:-../shared/data}/colorize
R=${RESUME:-}
# One torch thread: this ran beside the router and generalist trainings on 2 cores.
T="--threads ${THREADS:-1}"
python -m ensemble_color train expert --data $D/scenes/train $D/faces/train $D/birds/train $D/animals/train \
  --val $D/scenes/val $D/faces/val $D/birds/val $D/animals/val --val-limit 512 \
  --name base --routes background --out runs/export --steps 2000 --seed 0 $T $R
for spec in "faces person 1000" "birds bird 700" "scenes background 500"; do  # writes into experts/ (default --out)
  set -- $spec
  python -m ensemble_color train expert --data $D/$1/train --val $D/$1/val --name $1 --routes $2 \
    --init runs/export/base --lr 1e-3 --steps $3 --seed 0 $T $R
done
# scenes: stage 2 continues from the stage-1 weights above at whole-photo scale: scripts/train_scenes_stage2.sh
#   run it after the loop above, which leaves stage 1 in experts/scenes (stage 1 as committed: experts/scenes at 1deaef3).
# animals: scripts/train_animals.sh (animals + birds + scenes mix from the birds expert, held-out selection).
