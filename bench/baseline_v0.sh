#!/usr/bin/env bash
# The v0 baseline: the router and experts as shipped before the ImageNet-initialised rebuild (restored
# from git by bench/v0_models.py, commit v0_models.V0_COMMIT), run by today's code, measured with every metric
# (L2ab, AuC, colourfulness gap, semantic agree@1, Fréchet distance) on every val split of both data packs, up to
# LIMIT (default 100) evenly spaced images per split. Writes docs/v0_baseline.{md,json}.
# EXT = the extension pack (../shared/data/EXTEND.md). Needs the train extra (ImageNet Lite0 weights).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
EXT=${EXT:?set EXT to the extension pack}
V0=$(mktemp -d)
trap 'rm -rf "$V0"' EXIT
python bench/v0_models.py "$V0"
folders=()
for c in scenes faces birds animals; do folders+=("$DATA/colorize/$c/val"); done
for c in scenes faces people birds animals; do folders+=("$EXT/colorize/$c/val"); done
python -m ensemble_color evaluate --data "${folders[@]}" --methods gray pipeline experts --limit "${LIMIT:-100}" \
  --no-shipped --experts "$V0/pipeline/experts" --router "$V0/pipeline/router" \
  --threads "${THREADS:-2}" --out "${OUT:-docs/v0_baseline}"
