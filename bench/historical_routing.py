"""Routing overlays of the 40 historical portraits: does the router find the person on real old prints?

    python bench/historical_routing.py [--folder DIR] [--out docs/figures/historical_routing.png]

Each cell pair is the gray portrait | the shipped pipeline's routing overlay (route colours blended over L, as
``--save-masks`` writes them), four pairs per row; the share of pixels routed ``person`` (probability > 0.5) is
printed per photo, and how many portraits reach 10 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ensemble_color.data.images import list_images
from ensemble_color.io import load_image, save_image, to_pil
from ensemble_color.pipeline import Pipeline
from ensemble_color.visualize import contact_sheet, fit_square, routing_overlay

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "historical_routing.png")
    args = ap.parse_args()
    pipe = Pipeline.load(device="cpu")
    pairs, found = [], 0
    for path in list_images(args.folder):
        im = load_image(path)
        with torch.inference_mode():
            res = pipe.colorize(im)
        share = float((res.probs[res.route_classes.index("person")] > 0.5).float().mean())
        found += share >= 0.10
        print(f"{path.stem}: person {share:.3f}")
        overlay = routing_overlay(res.L_work, res.probs, res.route_classes)
        pairs.append([fit_square(im.rgb, args.size), fit_square(overlay, args.size)])
    rows = [[cell for pair in pairs[i:i + 4] for cell in pair] for i in range(0, len(pairs), 4)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_pil(contact_sheet(rows)), args.out)
    print(f"{args.out}: {found} of {len(pairs)} portraits with >= 10 % of pixels routed person")


if __name__ == "__main__":
    main()
