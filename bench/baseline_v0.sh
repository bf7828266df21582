#!/usr/bin/env bash
# The v0 baseline (issue 14): the pipeline and models as shipped before the ImageNet-initialised rebuild, measured
# with every metric (L2ab, AuC, colourfulness gap, semantic agree@1, Fréchet distance) on every val split of both
# data packs, up to LIMIT (default 100) evenly spaced images per split. Writes docs/v0_baseline.{md,json}.
# EXT = the extension pack (../shared/data/EXTEND.md). Needs the train extra (ImageNet Lite0 weights).
set -euo pipefail
DATA=${DATA:-../shared/data}
EXT=${EXT:?set EXT to the extension pack}
folders=()
for c in scenes faces birds animals; do folders+=("$DATA/colorize/$c/val"); done
for c in scenes faces people birds animals; do folders+=("$EXT/colorize/$c/val"); done
python -m ensemble_color evaluate --data "${folders[@]}" --methods gray pipeline experts --limit "${LIMIT:-100}" \
  --threads "${THREADS:-2}" --out "${OUT:-docs/v0_baseline}"
