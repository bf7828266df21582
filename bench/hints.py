"""Colour hints on val photos: hints sampled from the ground truth, as a user who knows the colours would place them.

    python bench/hints.py [--per-category 15] [--out bench/results/hints]

For each val photo of the main pack (``--per-category`` evenly spaced per category) and each count in 1, 5 and
20, hints are drawn at seeded random pixels with the true colour there (radius 2 px), and the shipped pipeline
colours the photo with them; every propagation method of ``ensemble_color.hints`` is measured side by side on the
same hints. Reported against no hints: mean L2ab and palette distance to the truth, colourfulness (truth's
beside it), the largest |dL| anywhere (hints must never change L), and the median seconds per update (one
``Pipeline.colorize`` with hints, the web demo's cost).

Method rule (written 2026-12-07, before either method was measured here): the method that ships is the one with
the lower mean L2ab at 5 hints; both must keep |dL| < 0.5.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from timing_env import write_report  # bench/ is this script's folder, hence on sys.path

from ensemble_color.color import rgb_to_lab
from ensemble_color.data.images import list_images
from ensemble_color.eval.metrics import colorfulness, l2ab, palette_distance
from ensemble_color.hints import HINT_METHODS, Hint
from ensemble_color.io import load_image
from ensemble_color.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
COUNTS = (0, 1, 5, 20)
METHODS = HINT_METHODS


def sample_hints(rgb: torch.Tensor, n: int, rng: np.random.Generator) -> list[Hint]:
    """``n`` hints at random pixels with the true sRGB colour there (radius 2 px)."""
    h, w = rgb.shape[-2:]
    out = []
    for _ in range(n):
        y, x = int(rng.integers(h)), int(rng.integers(w))
        r, g, b = (rgb[:, y, x] * 255).round().int().tolist()
        out.append(Hint(((x + 0.5, y + 0.5),), f"#{r:02x}{g:02x}{b:02x}", 2.0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--per-category", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hints")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = Pipeline.load(device="cpu", threads=args.threads)
    photos = []
    for cat in ("faces", "birds", "animals", "scenes"):
        files = list_images(args.data / "colorize" / cat / "val")
        photos += [files[i] for i in np.linspace(0, len(files) - 1, args.per_category).round().astype(int)]
    rows: dict[str, dict[str, list[float]]] = {}
    truth_colour = []
    for i, path in enumerate(photos):
        rgb = load_image(path).rgb
        lab_true = rgb_to_lab(rgb[None])[0]
        truth_colour.append(float(colorfulness(rgb[None])))
        base = None
        for n in COUNTS:
            hints = sample_hints(rgb, n, np.random.default_rng([i, n]))
            for method in (METHODS if n else ("none",)):
                t0 = time.perf_counter()
                res = pipe.with_options(hint_method=method if n else "geodesic").colorize(rgb, hints=hints)
                secs = time.perf_counter() - t0
                lab = rgb_to_lab(res.rgb[None])[0]
                base = lab if n == 0 else base
                key = "no hints" if n == 0 else f"{n} hints, {method}"
                row = rows.setdefault(key, {"l2ab": [], "palette": [], "colourfulness": [], "max_dL": [], "s": []})
                row["l2ab"].append(float(l2ab(lab[1:][None], lab_true[1:][None]).mean()))
                row["palette"].append(palette_distance(lab[1:], lab_true[1:]))
                row["colourfulness"].append(float(colorfulness(res.rgb[None])))
                row["max_dL"].append(float((lab[0] - base[0]).abs().max()))
                row["s"].append(secs)
        print(f"{i + 1}/{len(photos)} {path.name}", flush=True)
    summary = {k: {"l2ab": round(statistics.mean(v["l2ab"]), 3), "palette": round(statistics.mean(v["palette"]), 3),
                   "colourfulness": round(statistics.mean(v["colourfulness"]), 2),
                   "max_dL": round(max(v["max_dL"]), 3), "median_s": round(statistics.median(v["s"]), 3)}
               for k, v in rows.items()}
    none = summary["no hints"]["l2ab"]
    lines = ["# Colour hints on val photos", "",
             f"`python bench/hints.py --per-category {args.per_category}`: {len(photos)} main-pack val photos, hints "
             f"from the ground truth (seeded); truth's colourfulness {statistics.mean(truth_colour):.2f}.", "",
             "| setting | L2ab | vs no hints | palette distance | colourfulness | max abs dL | median s / update |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k, v in summary.items():
        lines.append(f"| {k} | {v['l2ab']:.2f} | {100 * (v['l2ab'] / none - 1):+.1f} % | {v['palette']:.2f} | "
                     f"{v['colourfulness']:.2f} | {v['max_dL']:.3f} | {v['median_s']:.3f} |")
    chosen = min(METHODS, key=lambda m: summary[f"5 hints, {m}"]["l2ab"])  # one method left since the rule chose
    lines += ["", f"Rule (docstring): the method with the lower mean L2ab at 5 hints ships: **{chosen}**."]
    write_report(args.out, {"summary": summary, "chosen": chosen}, lines)


if __name__ == "__main__":
    main()
