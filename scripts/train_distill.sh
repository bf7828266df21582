#!/usr/bin/env bash
# The grayscale ResNet-18 trunk (inits/resnet18-gray, issue 16): a torchvision-layout ResNet-18 seeing only L,
# distilled from the ImageNet EfficientNet-Lite0 teacher seeing the colour photo (KL at T = 2), on every train
# photo of both data packs (EXT = the extension pack). Spans sessions: each session runs to STOP (default: the
# end) and leaves runs/distill/resume.safetensors (fp16, committed as inits/resnet18-gray/resume.safetensors);
# a fresh machine continues with
#   mkdir -p runs/distill && cp inits/resnet18-gray/resume.safetensors runs/distill/ && RESUME=--resume STOP=N $0
set -euo pipefail
python -m ensemble_color train distill --data "${DATA:-../shared/data}" --data "${EXT:?set EXT to the extension pack}" \
  --run-dir runs/distill --out "${OUT:-inits/resnet18-gray}" \
  --steps 8000 --batch-size 64 --crop 128 --scale 0.25 1.0 --lr 2e-3 --T 2 --ema 0.999 \
  --val-every 500 --val-images 500 --seed 0 --threads "${THREADS:-2}" --compact \
  ${STOP:+--stop-at "$STOP"} ${RESUME:-}
