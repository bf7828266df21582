"""The generalist against gray and its v0 version on every val split of both packs and the val composites.

    python bench/generalist_report.py --data ../shared/data --data $EXT [--limit 100]

The generalist checks, per data set (written before the candidate was measured): beats gray in L2ab and
AuC; beats v0 (the shipped generalist before the rebuild, ``bench/v0_models.py``) by >= 8 % L2ab;
colourfulness within 20 % of ground truth; a lower Fréchet distance than v0 (where the set has the
100 images a Fréchet distance needs); a semantic agree@1 above gray's. Writes
``docs/generalist_eval.{md,json}`` and two contact sheets the model card shows:
``ensemble_color/weights/experts/generalist/contact_sheet.png`` (val photos of every split: gray | v0 |
generalist | truth) and ``ensemble_color/weights/experts/generalist/historical.png`` (ten of
``../shared/examples/historical``: input | generalist).

``--candidates DIR`` measures a generalist that is not shipped (a folder holding a ``generalist`` plugin, e.g.
``runs/export_v10``; it overrides the shipped one, as a plugin folder does) by the same checks, and writes its
contact sheets beside ``--out`` instead of into the shipped model card.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from v0_models import V0_COMMIT, extract, renamed_copies

from ensemble_color.color import join_l_ab, rgb_to_l, rgb_to_lab
from ensemble_color.data.images import list_images
from ensemble_color.eval.evaluate import build_methods, evaluate, load_datasets, markdown
from ensemble_color.eval.perceptual import PerceptualScorer
from ensemble_color.io import load_image, to_pil
from ensemble_color.pipeline import Pipeline
from ensemble_color.visualize import contact_sheet, fit_square
from ensemble_color.weights import shipped_experts_dir

REPO = Path(__file__).resolve().parent.parent
NEW, OLD = "expert:generalist", "expert:generalist-v0"


def checks(results: dict) -> dict[str, dict[str, bool | None]]:
    """The generalist's done-when figures per data set (None: not measurable on that set)."""
    out = {}
    for ds, r in results.items():
        new, old, gray = r[NEW], r[OLD], r["gray"]
        out[ds] = {
            "beats_gray_l2ab": new["l2ab"] < gray["l2ab"], "beats_gray_auc": new["auc"] > gray["auc"],
            "beats_v0_by_8pct": new["l2ab"] <= 0.92 * old["l2ab"],
            "colourfulness_within_20pct": abs(new["cf_gap"]) <= 0.2 * new["cf_gt"],
            "frechet_below_v0": None if new.get("frechet") is None else new["frechet"] < old["frechet"],
            "agree1_above_gray": new["agree1"] > gray["agree1"]}
    return out


def val_sheet(pipe: Pipeline, folders: list[str], per_folder: int = 2, size: int = 128) -> torch.Tensor:
    rows = []
    for folder in folders:
        files = list_images(folder)
        for f in files[len(files) // (per_folder + 1)::max(1, len(files) // (per_folder + 1))][:per_folder]:
            rgb = fit_square(load_image(f).rgb, size)
            L = rgb_to_lab(rgb[None])[:, :1]
            cells = [join_l_ab(L, torch.zeros(1, 2, size, size))[0]]
            for name in ("generalist-v0", "generalist"):
                with torch.inference_mode():
                    cells.append(join_l_ab(L, pipe.experts[name].run(L))[0])
            rows.append([*cells, rgb])
    return contact_sheet(rows)


def historical_sheet(pipe: Pipeline, folder: Path, n: int = 10, size: int = 160) -> torch.Tensor:
    files = list_images(folder)
    rows = []
    for f in files[::max(1, len(files) // n)][:n]:
        rgb = fit_square(load_image(f).rgb, size)
        L = rgb_to_l(rgb[None])
        with torch.inference_mode():
            rows.append([join_l_ab(L, torch.zeros(1, 2, size, size))[0],
                         join_l_ab(L, pipe.experts["generalist"].run(L))[0]])
    return contact_sheet([rows[i] + rows[i + 1] for i in range(0, len(rows) - 1, 2)])


def sheet_paths(out: Path, shipped: bool) -> tuple[Path, Path]:
    """The shipped generalist's sheets belong to its model card; a candidate's go beside its report."""
    if shipped:
        folder = shipped_experts_dir() / "generalist"
        return folder / "contact_sheet.png", folder / "historical.png"
    return out.parent / f"{out.name}_contact_sheet.png", out.parent / f"{out.name}_historical.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=None, help="data roots (default ../shared/data)")
    ap.add_argument("--limit", type=int, default=100, help="evenly spaced images per val split")
    ap.add_argument("--composites", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "docs" / "generalist_eval"))
    ap.add_argument("--candidates", default=None, help="folder with a generalist plugin to measure instead")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    roots = [Path(r) for r in (args.data or ["../shared/data"])]
    folders = [str(r / "colorize" / c / "val") for r in roots for c in ("scenes", "faces", "people", "birds", "animals")
               if (r / "colorize" / c / "val").is_dir()]
    with tempfile.TemporaryDirectory(prefix="v0_models_") as tmp:
        extract(V0_COMMIT, ["experts"], Path(tmp) / "v0")
        renamed_copies(Path(tmp) / "v0" / "experts", Path(tmp) / "methods")
        extra = [args.candidates] if args.candidates else []
        pipe = Pipeline.load([Path(tmp) / "methods", *extra], router="background", device="cpu")
        measured = pipe.experts["generalist"].spec.folder
        if args.candidates and measured.parent.resolve() != Path(args.candidates).resolve():
            sys.exit(f"error: {args.candidates}: no usable generalist plugin there (would measure {measured})")
        for expert in pipe.experts.values():
            _ = expert.model  # load while the folder exists
        methods = build_methods(["gray", NEW, OLD], pipe)
        datasets = load_datasets(folders, args.composites, str(roots[0]), args.limit)
        results = evaluate(methods, datasets, PerceptualScorer())
        out = Path(args.out)
        val_png, historical_png = sheet_paths(out, shipped=not args.candidates)
        to_pil(val_sheet(pipe, folders)).save(val_png)
        to_pil(historical_sheet(pipe, REPO.parent / "shared" / "examples" / "historical")).save(historical_png)
    done = checks(results)
    command = "python bench/generalist_report.py " + " ".join(sys.argv[1:])
    lines = ["# The generalist (multihead-lite) vs gray and v0", "", f"Generated by `{command}`.", "",
             "| data set | beats gray L2ab | beats gray AuC | ≥ 8 % below v0 L2ab | colourfulness within 20 % "
             "| Fréchet below v0 | agree@1 above gray |", "|---|---|---|---|---|---|---|"]
    for ds, c in done.items():
        lines.append(f"| {ds} | " + " | ".join("n/a" if v is None else ("yes" if v else "**no**")
                                               for v in c.values()) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n\n" + markdown(results))
    for ds in results.values():
        for v in ds.values():
            v.pop("curve", None)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "checks": done, "results": results},
                                                   indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
