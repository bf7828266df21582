"""Colour dots on halftone prints: the edge-aware upsampling guided by the screened L against the descreened L.

    python bench/halftone_chroma.py [--folder ../shared/examples/historical] [--out bench/results/halftone_chroma]

For every photo in which ``ensemble_color.descreen`` finds a screen, the shipped pipeline's working ab is
upsampled twice (``composite.full_res_ab``): along the original, screened full-resolution L and along the
descreened L (what the pipeline does). The figure is the high-frequency chroma of the result: the mean |ab -
its 5x5 mean| in ab units, i.e. how much of the screen's dot pattern the upsampling copied into the colour.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from ensemble_color.composite import full_res_ab
from ensemble_color.data.images import list_images
from ensemble_color.io import atomic_write_bytes, atomic_write_json, load_image
from ensemble_color.pipeline import Pipeline, image_l, seen_l

REPO = Path(__file__).resolve().parent.parent


def dot_chroma(ab: torch.Tensor) -> float:
    smooth = F.avg_pool2d(ab[None], 5, 1, 2, count_include_pad=False)[0]
    return (ab - smooth).norm(dim=0).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "halftone_chroma")
    args = ap.parse_args()
    pipe = Pipeline.load(device="cpu")
    rows = []
    for path in list_images(args.folder):
        im = load_image(path)
        L = image_l(im)  # as the pipeline takes it
        seen = seen_l(L)  # descreened only when a screen is found
        if seen is L:
            continue
        with torch.inference_mode():
            res = pipe.colorize(im)
            screened = dot_chroma(full_res_ab(L, res.ab_work, res.L_work))
            descreened = dot_chroma(full_res_ab(seen, res.ab_work, res.L_work))
        rows.append({"photo": path.name, "screened": round(screened, 3), "descreened": round(descreened, 3)})
        print(rows[-1], flush=True)
    ratios = [r["screened"] / r["descreened"] for r in rows]
    summary = {"photos": len(rows), "median_ratio": round(statistics.median(ratios), 2),
               "min_ratio": round(min(ratios), 2), "max_ratio": round(max(ratios), 2)}
    lines = ["# Colour dots on halftone prints", "",
             f"`python bench/halftone_chroma.py` ({len(rows)} screened photos of `{args.folder.name}`): high-frequency "
             "chroma (mean |ab - 5x5 mean|, ab units) of the upsampled ab, guided by the screened L vs the "
             "descreened L (the pipeline's).", "",
             "| photo | screened guide | descreened guide |", "|---|---:|---:|",
             *[f"| {r['photo']} | {r['screened']} | {r['descreened']} |" for r in rows], "",
             f"Ratio screened / descreened: median {summary['median_ratio']}, range {summary['min_ratio']}-"
             f"{summary['max_ratio']}.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out.with_suffix(".md"), "\n".join(lines).encode())
    atomic_write_json(args.out.with_suffix(".json"), {**summary, "rows": rows})
    print(summary)


if __name__ == "__main__":
    main()
