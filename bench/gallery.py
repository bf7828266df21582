"""The README's gallery: real old photographs colourised by the shipped pipeline, next to their input.

    python bench/gallery.py [--folder ../shared/examples/historical] [--n 12] [--out PNG]

The photos are ``../shared/examples/historical`` (CC0 portraits, c. 1880–1930; no colour ground truth
exists, so this is for looking, not scoring). Evenly spaced over the sorted folder so men and women both
appear; each pair is input | shipped pipeline at full resolution, shrunk to the sheet's cell size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ensemble_color.data.images import list_images
from ensemble_color.io import load_image, save_image, to_pil
from ensemble_color.pipeline import Pipeline
from ensemble_color.visualize import contact_sheet, fit_square

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--n", type=int, default=12, help="photos (an even number: two pairs per row)")
    ap.add_argument("--size", type=int, default=192, help="cell size (pixels)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "historical_gallery.png")
    args = ap.parse_args()
    files = list_images(args.folder)
    if not files:
        raise SystemExit(f"error: {args.folder}: no images")
    picked = [files[round(i * len(files) / args.n)] for i in range(min(args.n, len(files)))]
    pipe = Pipeline.load(device="cpu")
    pairs = []
    for f in picked:
        gray = load_image(f).rgb
        with torch.inference_mode():
            color = pipe.colorize(gray).rgb
        pairs.append([fit_square(gray, args.size), fit_square(color, args.size)])
    rows = [pairs[i] + pairs[i + 1] for i in range(0, len(pairs) - 1, 2)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_pil(contact_sheet(rows)), args.out)
    print(f"{args.out}: {len(pairs)} photos ({', '.join(f.name for f in picked)})")


if __name__ == "__main__":
    main()
