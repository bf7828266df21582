#!/usr/bin/env bash
# ensemble_color/weights/experts/{scenes,people,birds,animals}: resnet18-deconv specialists on both data packs (EXT = the extension
# pack), each from a distilled grayscale ResNet-18 trunk, its checkpoint chosen on the canonical held-out train
# photos (data.roots.hold_out, 40 per category), never on val; on the same photos the trainer then picks each
# expert's output gain (train.expert.choose_gain, recorded in expert.json).
# Warm-starts from: inits/resnet18-gray (scripts/train_distill.sh); the decoders start random.
# The shipped experts, each expert.json repeating its exact command:
#   scenes, animals:  ONLY="scenes animals" EXT=/work/ext scripts/train_experts.sh
#   birds (wide decoder 256/128/64):
#     DECODER="256 128 64" ONLY=birds OUT=runs/export_wide RUNS=runs/experts_wide EXT=/work/ext scripts/train_experts.sh
#   people (from the feature-matched trunk, scripts/train_distill.sh VERSION=2):
#     INIT=inits/resnet18-gray-v2 ONLY=people OUT=runs/export_trunk2 RUNS=runs/experts_trunk2 EXT=/work/ext scripts/train_experts.sh
# The init comparison (docs/experts_init.md) runs the same recipe from scratch:
#   INIT=scratch OUT=runs/export_scratch RUNS=runs/scratch scripts/train_experts.sh
# Switches of measured, not shipped variants (docs/experiments.md): VERSION=2 (4,000 steps, per-root hold-out),
# WEIGHTS="0.6 0.4" (main-pack share of batches).
# Context specialists (resnet18-deconv-ctx, train.expert_context: a frozen ImageNet Lite1 branch on the gray crop
# fused into the decoder, a 313-bin head beside the regression head, 30 % of the crops degraded into old prints),
# each warm-started from the shipped expert of its name with its ResNet trunk frozen (on a CPU without bf16 a
# step of 32 crops through the whole network takes 4 s), decoding chosen by its written rule; 400 steps of 24
# crops (birds, whose wide decoder costs 4x per crop: 500 steps of 16):
#   for n in animals people scenes; do CTX=1 ONLY=$n OUT=runs/export_ctx RUNS=runs/experts_ctx EXT=/work/ext \
#     scripts/train_experts.sh; done
#   CTX=1 CTX_STEPS=500 CTX_BATCH=16 ONLY=birds OUT=runs/export_ctx RUNS=runs/experts_ctx EXT=/work/ext \
#     scripts/train_experts.sh
# The long run (trunk trained too: CTX_FREEZE=, 1,500 steps of 16 crops), paused with STOP_AT and continued with RESUME=1
# (its fp16 resume point, runs/experts_ctx_full/birds/resume.safetensors, is committed while it is unfinished):
#   CTX=1 CTX_FREEZE= CTX_STEPS=1500 CTX_BATCH=16 ONLY=birds OUT=runs/export_ctx_full RUNS=runs/experts_ctx_full \
#     EXT=/work/ext scripts/train_experts.sh
# The adversarial phase (train.adversarial: a conditional patch critic pre-trained for 200 steps against the warm
# start, then 400 joint steps at lr 1e-4, the critic's pull ADV x the reconstruction's), from the context specialist
# above (CTX_INIT = the folder holding it), the last weights exported:
#   ADV=0.25 CTX=1 CTX_FREEZE= CTX_STEPS=400 CTX_BATCH=16 CTX_INIT=runs/export_ctx_full ONLY=birds \
#     OUT=runs/export_adv RUNS=runs/experts_adv EXT=/work/ext scripts/train_experts.sh
# The colourfulness term (train.losses.colourfulness_gap, weight CF; 400 steps at lr 3e-4, trunk frozen, the last
# weights exported), from the context specialists above:
#   for n in people scenes animals; do CF=0.1 CTX=1 CTX_INIT=runs/export_ctx ONLY=$n OUT=runs/export_cf \
#     RUNS=runs/experts_cf EXT=/work/ext scripts/train_experts.sh; done
# The colourfulness term beside the pooled-embedding term (train.losses.EmbeddingGap on a frozen Lite2, its pull EMB x
# the reconstruction's), the same run otherwise:
#   for n in animals people scenes; do EMB=1 CF=0.1 CTX=1 CTX_INIT=runs/export_ctx ONLY=$n OUT=runs/export_emb \
#     RUNS=runs/experts_emb EXT=/work/ext scripts/train_experts.sh; done
# The same with the colourfulness term's weight doubled (animals; runs/export_ctx/animals from the context line above):
#   EMB=1 CF=0.2 CTX=1 CTX_INIT=runs/export_ctx ONLY=animals OUT=runs/export_emb_cf2 RUNS=runs/experts_emb_cf2 \
#     EXT=/work/ext scripts/train_experts.sh
# The palette term (train.losses.palette_gap, its gradient pull PAL x the reconstruction's) beside both (animals):
#   PAL=1 EMB=1 CF=0.2 CTX=1 CTX_INIT=runs/export_ctx ONLY=animals OUT=runs/export_pal RUNS=runs/experts_pal \
#     EXT=/work/ext scripts/train_experts.sh
# ONLY="birds animals" trains a subset; resumable (RESUME=1 continues each run from its checkpoint).
# Background run:  EXT=/path/to/ext nohup nice -n -10 scripts/train_experts.sh > runs/experts.log 2>&1 &
# --dry-run prints the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_recipe.sh
DATA=${DATA:-../shared/data}
EXT=${EXT:?set EXT to the extension pack}
INIT=${INIT:-imagenet-gray}
RUNS=${RUNS:-runs/experts}
COMMON=(--data "$DATA" "$EXT" --val "$DATA" "$EXT" --holdout-per-category 40 --steps 2000 --batch-size 32
        --crop 160 --max-side 256 --val-size 256 --val-limit 256 --lr 2e-3 --ema 0.995 --val-every 250 --seed 0
        --threads "${THREADS:-2}" --out "${OUT:-experts}" --recipe scripts/train_experts.sh)
[[ "$INIT" != scratch && -z "${CTX:-}" ]] && COMMON+=(--init "$INIT")
# shellcheck disable=SC2206  # three widths
[[ -n "${DECODER:-}" ]] && COMMON+=(--decoder-widths $DECODER --compact --version 3.0)
[[ "${VERSION:-1}" == 2 ]] && COMMON+=(--holdout-per-root --steps 4000 --compact --version 2.0)
[[ -n "${WEIGHTS:-}" ]] && COMMON+=(--compact --version 4.0)
CTX_FREEZE=${CTX_FREEZE-1}
if [[ -n "${CTX:-}" ]]; then
  COMMON+=(--arch resnet18-deconv-ctx --context lite1 --context-size 160 --ce-weight 0.1 --degrade 0.3
           ${CTX_FREEZE:+--freeze-encoder} --steps "${CTX_STEPS:-400}" --batch-size "${CTX_BATCH:-24}"
           --val-every 200 --compact)
  if [[ -n "${ADV:-}" ]]; then COMMON+=(--lr 1e-4 --version 6.0 --adversarial "$ADV" --critic-pretrain 200)
  elif [[ -n "${CF:-}" ]]; then COMMON+=(--lr 3e-4 --colourfulness "$CF")
    if [[ -n "${PAL:-}" ]]; then COMMON+=(--version 9.0 --palette "$PAL" --embedding "$EMB" --embedding-net lite2)
    elif [[ -n "${EMB:-}" ]]; then COMMON+=(--version 8.0 --embedding "$EMB" --embedding-net lite2)
    else COMMON+=(--version 7.0); fi
  else COMMON+=(--lr 1e-3 --version 5.0); fi
fi
# name | categories | route | share of batches per training folder (main pack first, then EXT): the main
# pack's small scenes and animals sets keep a fixed share of the batches, so that the extension pack does not drown them
SPECS=("birds|birds|bird|0.55 0.45"
       "animals|animals|animal|0.25 0.75"
       "people|faces people|person|0.35 0.4 0.25"
       "scenes|scenes|background|0.3 0.7")
for spec in "${SPECS[@]}"; do
  IFS='|' read -r name cats route weights <<< "$spec"
  [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]] && continue
  weights=${WEIGHTS:-$weights}
  extra=()
  # a context specialist starts from the shipped expert of its name, with that expert's decoder widths
  [[ -n "${CTX:-}" ]] && extra=(--init "${CTX_INIT:-ensemble_color/weights/experts}/$name" --decoder-widths $(python -c \
    "import json; print(*json.load(open('ensemble_color/weights/experts/$name/expert.json'))['config'].get('decoder_widths', [128, 64, 32]))"))
  # shellcheck disable=SC2086  # categories and weights are word lists
  step python -m ensemble_color train expert "${COMMON[@]}" --categories $cats --name "$name" --routes "$route" \
    --folder-weights $weights --run-dir "$RUNS/$name" ${RESUME:+--resume} ${STOP_AT:+--stop-at $STOP_AT} "${extra[@]}"
done
