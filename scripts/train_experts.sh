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
for spec in "faces person 1000" "birds bird 700" "scenes background 500"; do
  set -- $spec
  python -m ensemble_color train expert --data $D/$1/train --val $D/$1/val --name $1 --routes $2 \
    --init runs/export/base --lr 1e-3 --steps $3 --seed 0 $T $R
done
# animals: fine-tuned from the birds expert (the 356 animal photos overfit from the base: the base-initialised
# run lost to gray on animals/val), short and with a low learning rate.
python -m ensemble_color train expert --data $D/animals/train --val $D/animals/val --name animals --routes animal \
  --init experts/birds --lr 3e-4 --steps 300 --val-every 50 --seed 0 $T $R --run-dir runs/animals_v2
