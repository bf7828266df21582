#!/usr/bin/env bash
# experts/{scenes,people,birds,animals} (issue 16): resnet18-deconv specialists on both data packs
# (EXT = the extension pack), each from the distilled grayscale ResNet-18 trunk, its checkpoint chosen on the
# canonical held-out train photos (train.roots.hold_out, 40 per category), never on val; on the same photos the
# trainer then picks each expert's output gain (train.expert.choose_gain, recorded in expert.json).
# Warm-starts from: inits/resnet18-gray (scripts/train_distill.sh); the decoders start random.
# The init comparison (docs/experts_init.md) runs the same recipe from scratch:
#   INIT=scratch OUT=runs/export_scratch RUNS=runs/scratch scripts/train_experts.sh
# ONLY="birds animals" trains a subset; resumable (RESUME=1 continues each run from its checkpoint).
# Background run:  EXT=/path/to/ext nohup nice -n -10 scripts/train_experts.sh > runs/experts.log 2>&1 &
# v2 (issues 16 and 18; VERSION=2; birds trained and not shipped, see experts/README.md): 40 held-out train photos per category from *each* root
# (--holdout-per-root: v1's 40 were spread over both roots together, so only 1 main-pack scene was held out and
# defaults could not be tuned on the main pack's photos) and 4,000 steps instead of 2,000 (v1's birds held-out
# L2ab was still falling at 2,000); a committable fp16 resume point after each run (--compact; a run the session
# ends in the middle of: python -m ensemble_color train compact RUNS/<name>). bench/experts_select.py decides
# whether each v2 replaces v1 (rule written before v2 was trained):
#   VERSION=2 OUT=runs/export_v2 RUNS=runs/experts_v2 EXT=/work/ext scripts/train_experts.sh
# Wide decoder v3 (issue 16's decoder lever; the recipe of the shipped experts/birds, which bench/experts_select.py's
# unchanged rule chose over v1 by 0.1 %, a tie; experts/README.md "v3"): v1's recipe with DECODER="256 128 64" (decoder stages 256/128/64 channels
# instead of 128/64/32; 2.7 MB fp16 instead of 1.8; a committable fp16 resume point after each run, --compact):
#   DECODER="256 128 64" ONLY=birds OUT=runs/export_wide RUNS=runs/experts_wide EXT=/work/ext scripts/train_experts.sh
# Main-pack share v4 (issue 16's data-mix lever, trained for measurement; experts/README.md "v4"): v1's recipe with
# WEIGHTS overriding the share of batches per training folder (main pack first) for the experts trained:
#   WEIGHTS="0.6 0.4" ONLY=scenes OUT=runs/export_mix RUNS=runs/experts_mix EXT=/work/ext scripts/train_experts.sh
# Trunk v2 (issue 16's trunk levers, session 13; experts/README.md "Trunk v2"): v1's recipe from the distilled trunk
# with feature matching (scripts/train_distill.sh VERSION=2). The shipped experts/people is this run; birds and
# animals were trained the same way and kept their shipped versions by bench/experts_select.py's rule:
#   INIT=inits/resnet18-gray-v2 ONLY=people OUT=runs/export_trunk2 RUNS=runs/experts_trunk2 EXT=/work/ext scripts/train_experts.sh
# Trunk v3 (session 14; experts/README.md "Trunk v3"): the same from the 224 px trunk; people did not replace
# trunk v2's by the same rule, so the others were not retrained from it:
#   INIT=inits/resnet18-gray-v3 ONLY=people OUT=runs/export_trunk3 RUNS=runs/experts_trunk3 EXT=/work/ext scripts/train_experts.sh
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
[[ "$INIT" != scratch ]] && COMMON+=(--init "$INIT")
# shellcheck disable=SC2206  # three widths
[[ -n "${DECODER:-}" ]] && COMMON+=(--decoder-widths $DECODER --compact --version 3.0)
[[ "${VERSION:-1}" == 2 ]] && COMMON+=(--holdout-per-root --steps 4000 --compact --version 2.0)
[[ -n "${WEIGHTS:-}" ]] && COMMON+=(--compact --version 4.0)
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
  # shellcheck disable=SC2086  # categories and weights are word lists
  step python -m ensemble_color train expert "${COMMON[@]}" --categories $cats --name "$name" --routes "$route" \
    --folder-weights $weights --run-dir "$RUNS/$name" ${RESUME:+--resume}
done
