"""Specialists vs each other vs the gray baseline on every category's val split, plus contact sheets.

    python bench/experts_report.py [--data ../shared/data] [--limit N]

Writes ``docs/experts_eval.{md,json}`` (one table per val set: gray, every expert alone) and
``experts/<name>/contact_sheet.png`` (8 val images of the expert's own category: gray input |
expert | ground truth). The check the specialists must pass is printed and written too: on its own
val set each specialist beats gray in L2ab and AuC, and beats every other specialist in L2ab.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ensemble_color.color import join_l_ab, rgb_to_lab
from ensemble_color.evaluate import build_methods, evaluate, load_datasets, markdown
from ensemble_color.io import load_image, to_pil
from ensemble_color.perceptual import PerceptualScorer
from ensemble_color.pipeline import Pipeline
from ensemble_color.train.data import list_images

#: specialist -> the category val split it must win on
HOME = {"scenes": "scenes", "faces": "faces", "birds": "birds", "animals": "animals"}


def contact_sheet(pipe: Pipeline, name: str, folder: Path, out: Path, n: int = 8, size: int = 160) -> None:
    """Rows of (gray | expert | ground truth) for the first n images of ``folder`` (sorted, deterministic)."""
    rows = []
    for f in list_images(folder)[:: max(1, len(list_images(folder)) // n)][:n]:
        rgb = load_image(f).rgb
        rgb = torch.nn.functional.interpolate(rgb[None], size=(size, size), mode="bilinear", antialias=True,
                                              align_corners=False)[0].clamp(0, 1)
        L = rgb_to_lab(rgb[None])[0, :1]
        with torch.inference_mode():
            ab = pipe.experts[name].run(L[None])[0]
        gray = join_l_ab(L[None], torch.zeros(1, 2, size, size))[0]
        rows.append(torch.cat([gray, join_l_ab(L[None], ab[None])[0], rgb], dim=2))
    to_pil(torch.cat(rows, dim=1)).save(out)


def images_won(me: dict, other: dict) -> str:
    """'k of n': images where ``me`` has the lower L2ab than ``other`` (a paired view of a mean difference)."""
    pairs = list(zip(me["l2ab_per_image"], other["l2ab_per_image"], strict=True))
    return f"{sum(a < b for a, b in pairs)} of {len(pairs)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="docs/experts_eval")
    ap.add_argument("--no-perceptual", action="store_true", help="skip agree@1 / Fréchet (needs the train extra)")
    args = ap.parse_args()
    pipe = Pipeline.load(router="background", device="cpu")
    specialists = [n for n in HOME if n in pipe.experts]
    folders = [f"{args.data}/colorize/{HOME[n]}/val" for n in specialists]
    methods = build_methods(["gray", *[f"expert:{n}" for n in specialists]], pipe)
    scorer = None if args.no_perceptual else PerceptualScorer()
    results = evaluate(methods, load_datasets(folders, 0, None, args.limit), scorer)
    checks = []
    for name in specialists:
        ds = f"{HOME[name]}/val"
        r = results[ds]
        me = r[f"expert:{name}"]
        others = {m: v["l2ab"] for m, v in r.items() if m.startswith("expert:") and m != f"expert:{name}"}
        rival = min(others, key=others.get) if others else None
        checks.append({"expert": name, "val_set": ds, "l2ab": me["l2ab"], "gray_l2ab": r["gray"]["l2ab"],
                       "auc": me["auc"], "gray_auc": r["gray"]["auc"],
                       "beats_gray": me["l2ab"] < r["gray"]["l2ab"] and me["auc"] > r["gray"]["auc"],
                       "best_other_l2ab": min(others.values()) if others else None,
                       "beats_other_specialists": all(me["l2ab"] < v for v in others.values()),
                       "best_other": rival and rival.removeprefix("expert:"),
                       "images_won_vs_best_other": rival and images_won(me, r[rival])})
        contact_sheet(pipe, name, Path(args.data) / "colorize" / HOME[name] / "val",
                      pipe.experts[name].spec.folder / "contact_sheet.png")
    lines = ["| expert | own val set | L2ab | gray L2ab | AuC | gray AuC | best other specialist L2ab | "
             "images where it beats that one | beats gray | beats other specialists |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in checks:
        lines.append(f"| {c['expert']} | {c['val_set']} | {c['l2ab']:.2f} | {c['gray_l2ab']:.2f} | {c['auc']:.4f} | "
                     f"{c['gray_auc']:.4f} | {c['best_other_l2ab']:.2f} ({c['best_other']}) | "
                     f"{c['images_won_vs_best_other']} | {'yes' if c['beats_gray'] else 'NO'} | "
                     f"{'yes' if c['beats_other_specialists'] else 'NO'} |")
    train_lines = ["| expert | routes | train images | steps (best) | init | train time (s) | images/s during run |",
                   "|---|---|---:|---:|---|---:|---:|"]
    for name in specialists:
        m = pipe.experts[name].spec.manifest
        t = m.get("training", {})
        n_train = m.get("data", {}).get("train", {}).get("images", "?")
        train_lines.append(f"| {name} | {', '.join(m['routes'])} | {n_train}"
                           f" | {t.get('steps')} ({t.get('best_step')}) | {t.get('init')} | {t.get('train_seconds')} | "
                           f"{t.get('images_per_second')} |")
    used = f"--limit {args.limit}: {args.limit} evenly spaced images per val split" if args.limit else "every val image"
    header = ("# Specialist experts on the category val splits\n\nGenerated by "
              f"`python bench/experts_report.py{f' --limit {args.limit}' if args.limit else ''}` ({used}; each expert "
              "alone on the whole image at its native size; input = L only).\n\n"
              "## The specialist check\n\n" + "\n".join(lines) + "\n\n## Training (from each expert.json)\n\n"
              "Images/s here were measured *during* the run, while two other trainings shared the 2 cores "
              "(one torch thread each); the uncontended figure is in `bench/results/train_throughput.md`.\n\n"
              + "\n".join(train_lines) + "\n\n## All results\n\n")
    out = Path(args.out)
    out.with_suffix(".md").write_text(header + markdown(results))
    for ds in results.values():
        for v in ds.values():
            v.pop("curve", None)
    out.with_suffix(".json").write_text(json.dumps({"checks": checks, "results": results}, indent=1))
    print(header)


if __name__ == "__main__":
    main()
