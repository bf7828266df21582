"""The specialists against gray, each other, their v0 versions and (optionally) their from-scratch twins.

    python bench/experts_report.py --data ../shared/data --data $EXT [--limit 200] [--scratch DIR [--init-only]]

The specialist checks, per specialist and per val split of its own categories in every pack (written before
the specialists were measured): beats gray and every other specialist in L2ab; beats its v0 version
(``bench/v0_models.py``; v0's ``faces`` is the ``people`` expert's predecessor) by >= 8 % L2ab on the
main pack's split; colourfulness within 25 % of ground truth; a semantic agree@1 above gray's.

Each specialist is also scored at output gain 1 (``<name>-gain1``: the same weights without the gain its
trainer chose for colourfulness, ``train.expert.choose_gain``), so the report shows what the gain costs
in L2ab and buys in colourfulness.

With ``--scratch DIR`` (plugin folder of the same recipe run without the distilled trunk,
``INIT=scratch scripts/train_experts.sh``, e.g. ``runs/export_scratch``) it also writes ``docs/experts_init.md``:
same data and steps, distilled init vs scratch, on each category's val split; ``--init-only`` writes only that.

Writes ``docs/experts_eval.{md,json}`` and ``experts/<name>/contact_sheet.png`` (val photos of its own
categories from every pack: gray | v0 | specialist | truth). Every expert is run alone on the whole
photo at its native size; input = L only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from v0_models import V0_COMMIT, extract, renamed_copies

from ensemble_color.color import join_l_ab, rgb_to_lab
from ensemble_color.data.images import list_images
from ensemble_color.eval.evaluate import build_methods, evaluate, load_datasets, markdown
from ensemble_color.eval.perceptual import PerceptualScorer
from ensemble_color.io import load_image, to_pil
from ensemble_color.pipeline import Pipeline
from ensemble_color.visualize import contact_sheet, fit_square
from ensemble_color.weights import shipped_experts_dir

REPO = Path(__file__).resolve().parent.parent
#: specialist -> the categories whose val splits it must win on, and its v0 predecessor
HOME: dict[str, tuple[str, ...]] = {"scenes": ("scenes",), "people": ("faces", "people"), "birds": ("birds",),
                                    "animals": ("animals",)}
V0_NAME = {"scenes": "scenes", "people": "faces", "birds": "birds", "animals": "animals"}


def own_sets(roots: list[Path], name: str) -> list[tuple[str, Path]]:
    """(data set name as ``evaluate.load_datasets`` names it, folder) of the specialist's own val splits."""
    out = []
    for i, root in enumerate(roots):
        for cat in HOME[name]:
            folder = root / "colorize" / cat / "val"
            if folder.is_dir():
                out.append((f"{cat}/val" if i == 0 else f"{root.name}:{cat}/val", folder))
    return out


def checks(results: dict, specialists: list[str], roots: list[Path]) -> list[dict]:
    """The done-when figures per (specialist, own val set); None where a figure does not apply."""
    out = []
    for name in specialists:
        for ds, _ in own_sets(roots, name):
            r = results[ds]
            me, gray = r[f"expert:{name}"], r["gray"]
            others = {m: v["l2ab"] for m, v in r.items() if m.removeprefix("expert:") in specialists
                      and m != f"expert:{name}"}
            v0 = r.get(f"expert:{V0_NAME[name]}-v0") if ":" not in ds else None
            out.append({
                "expert": name, "val_set": ds, "l2ab": me["l2ab"], "gray_l2ab": gray["l2ab"],
                "best_other": min(others, key=others.get).removeprefix("expert:") if others else None,
                "best_other_l2ab": min(others.values()) if others else None,
                "v0_l2ab": v0["l2ab"] if v0 else None, "cf": me["cf"], "cf_gt": me["cf_gt"],
                "beats_gray_l2ab": me["l2ab"] < gray["l2ab"],
                "beats_other_specialists": all(me["l2ab"] < v for v in others.values()),
                "beats_v0_by_8pct": None if v0 is None else me["l2ab"] <= 0.92 * v0["l2ab"],
                "colourfulness_within_25pct": abs(me["cf_gap"]) <= 0.25 * me["cf_gt"],
                "agree1_above_gray": me["agree1"] > gray["agree1"]})
    return out


def sheet(pipe: Pipeline, name: str, folders: list[Path], n: int = 8, size: int = 128) -> torch.Tensor:
    """Rows of gray | v0 | specialist | truth, evenly spaced val photos spread over ``folders``."""
    rows = []
    for folder in folders:
        files = list_images(folder)
        k = n // len(folders)
        for f in files[len(files) // (2 * k)::max(1, len(files) // k)][:k]:
            rgb = fit_square(load_image(f).rgb, size)
            L = rgb_to_lab(rgb[None])[:, :1]
            cells = [join_l_ab(L, torch.zeros(1, 2, size, size))[0]]
            for expert in (f"{V0_NAME[name]}-v0", name):
                with torch.inference_mode():
                    cells.append(join_l_ab(L, pipe.experts[expert].run(L))[0])
            rows.append([*cells, rgb])
    return contact_sheet([rows[i] + rows[i + 1] for i in range(0, len(rows) - 1, 2)])


def init_table(results: dict, specialists: list[str], roots: list[Path]) -> str:
    lines = ["| specialist | val set | scratch L2ab | distilled init L2ab | change | scratch AuC | distilled AuC |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in specialists:
        for ds, _ in own_sets(roots, name):
            if f"expert:{name}-scratch" not in results[ds]:  # its twin was not trained (ONLY=...)
                lines.append(f"| {name} | {ds} | not run | {results[ds][f'expert:{name}']['l2ab']:.2f} | | | |")
                continue
            a, b = results[ds][f"expert:{name}-scratch"], results[ds][f"expert:{name}"]
            lines.append(f"| {name} | {ds} | {a['l2ab']:.2f} | {b['l2ab']:.2f} | "
                         f"{100 * (b['l2ab'] / a['l2ab'] - 1):+.1f} % | {a['auc']:.4f} | {b['auc']:.4f} |")
    return "\n".join(lines)


def check_table(rows: list[dict]) -> str:
    def yn(v: bool | None) -> str:
        return "n/a" if v is None else ("yes" if v else "**no**")

    lines = ["| specialist | val set | L2ab | gray | best other specialist | v0 | colourfulness (GT) | beats gray "
             "| beats others | ≥ 8 % below v0 | colourfulness within 25 % | agree@1 above gray |",
             "|---|---|---:|---:|---:|---:|---:|---|---|---|---|---|"]
    for c in rows:
        v0 = "n/a" if c["v0_l2ab"] is None else f"{c['v0_l2ab']:.2f}"
        other = "n/a" if c["best_other"] is None else f"{c['best_other_l2ab']:.2f} ({c['best_other']})"
        lines.append(f"| {c['expert']} | {c['val_set']} | {c['l2ab']:.2f} | {c['gray_l2ab']:.2f} | {other} | {v0} | "
                     f"{c['cf']:.1f} ({c['cf_gt']:.1f}) | {yn(c['beats_gray_l2ab'])} | "
                     f"{yn(c['beats_other_specialists'])} | {yn(c['beats_v0_by_8pct'])} | "
                     f"{yn(c['colourfulness_within_25pct'])} | {yn(c['agree1_above_gray'])} |")
    return "\n".join(lines)


def training_table(pipe: Pipeline, specialists: list[str]) -> str:
    lines = ["| specialist | routes | train images | held out | steps (best) | init | train time (s) | images/s |",
             "|---|---|---:|---:|---:|---|---:|---:|"]
    for name in specialists:
        m = pipe.experts[name].spec.manifest
        t, d = m.get("training", {}), m.get("data", {})
        lines.append(f"| {name} | {', '.join(m['routes'])} | {d.get('train', {}).get('images', '?')} | "
                     f"{d.get('held_out_for_selection', 0)} | {t.get('steps')} ({t.get('best_step')}) | "
                     f"{t.get('init')} | {t.get('train_seconds')} | {t.get('images_per_second')} |")
    return "\n".join(lines)


def write_init(path: Path, command: str, results: dict, specialists: list[str], roots: list[Path]) -> None:
    path.write_text(
        f"# Distilled ResNet-18 init vs scratch\n\nGenerated by `{command}`: the same recipe "
        "(`scripts/train_experts.sh`: data, steps, schedule, seed), once from the distilled grayscale ResNet-18 "
        "trunk (`inits/resnet18-gray`) and once from random weights (`INIT=scratch`); each arm at the output gain "
        "its own run chose by the same rule (`train.expert.choose_gain`).\n\n"
        + init_table(results, specialists, roots) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=None, help="data roots (default ../shared/data)")
    ap.add_argument("--limit", type=int, default=200, help="evenly spaced images per val split")
    ap.add_argument("--scratch", type=Path, default=None, help="plugin folder of the from-scratch twins")
    ap.add_argument("--init-only", action="store_true",
                    help="with --scratch: only the specialists that have a twin, only docs/experts_init.md")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "docs" / "experts_eval"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    roots = [Path(r) for r in (args.data or ["../shared/data"])]
    with tempfile.TemporaryDirectory(prefix="experts_report_") as tmp:
        if not args.init_only:  # the v0 and gain-1 twins are only for the specialist check
            extract(V0_COMMIT, ["experts"], Path(tmp) / "v0")
            renamed_copies(Path(tmp) / "v0" / "experts", Path(tmp) / "methods")
            renamed_copies(shipped_experts_dir(), Path(tmp) / "methods", suffix="-gain1", only=list(HOME),
                           config={"ab_gain": 1.0})
        if args.scratch:
            renamed_copies(args.scratch, Path(tmp) / "methods", suffix="-scratch")
        pipe = Pipeline.load([Path(tmp) / "methods"], router="background", device="cpu")
        for expert in pipe.experts.values():
            _ = expert.model  # load while the folder exists
    specialists = [n for n in HOME if n in pipe.experts]
    scorer = PerceptualScorer()
    results: dict = {}
    command = "python bench/experts_report.py " + " ".join(sys.argv[1:])
    if args.init_only:
        specialists = [n for n in specialists if f"{n}-scratch" in pipe.experts]
    for name in specialists:  # each val split once, with the methods its checks need
        for ds, folder in own_sets(roots, name):
            twin = [f"expert:{name}-scratch"] if f"{name}-scratch" in pipe.experts else []
            names = [f"expert:{name}", *twin] if args.init_only else [
                "gray", *[f"expert:{n}" for n in specialists], f"expert:{name}-gain1", f"expert:{V0_NAME[name]}-v0",
                *twin]
            data = load_datasets([str(folder)], 0, None, args.limit)
            results[ds] = next(iter(evaluate(build_methods(names, pipe), data, scorer).values()))
        if not args.init_only:
            to_pil(sheet(pipe, name, [f for _, f in own_sets(roots, name)])).save(
                pipe.experts[name].spec.folder / "contact_sheet.png")
    if args.init_only:
        write_init(Path(args.out).parent / "experts_init.md", command, results, specialists, roots)
        return
    rows = checks(results, specialists, roots)
    text = (f"# The specialists on their own val splits\n\nGenerated by `{command}` ({args.limit} evenly spaced "
            "images per val split at most; each expert alone on the whole photo at its native size; input = L "
            f"only; v0 = the experts at commit {V0_COMMIT}).\n\n## The specialist check\n\n"
            + check_table(rows) + "\n\n## Training (from each expert.json)\n\n" + training_table(pipe, specialists)
            + "\n\n## All results\n\n" + markdown(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    if args.scratch:
        write_init(out.parent / "experts_init.md", command, results, specialists, roots)
    for ds in results.values():
        for v in ds.values():
            v.pop("curve", None)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "checks": rows, "results": results},
                                                   indent=1))
    print(check_table(rows))


if __name__ == "__main__":
    main()
