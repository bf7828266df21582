"""``python -m ensemble_color evaluate``: colourisation quality of the pipeline, single experts and baselines.

Every method sees only the L channel of each ground-truth image (colour is discarded before any
model runs) and is scored against the original colours. Methods:

* ``gray``: ab = 0 (the baseline every model must beat);
* ``pipeline``: the routed ensemble as configured (router, crops, soft blend, fallback);
* ``expert:NAME``: one expert alone on the whole image.

Data sets: image folders (``--data``), and/or the seeded val composites (``--composites N``).
Results: a Markdown table per data set and a JSON file with per-method means and mean
cumulative ab-error curves (for plots).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..color import join_l_ab, rgb_to_lab
from ..data.images import list_images
from ..io import atomic_write_bytes, load_image
from ..pipeline import Pipeline
from . import metrics
from .perceptual import PerceptualScorer, PerceptualSet, frechet_distance

METRIC_KEYS = ("psnr", "ssim", "l2ab", "auc", "palette", "cf", "cf_gt", "cf_gap")

#: A method maps ground-truth-free input L (1, H, W) to predicted ab (2, H, W).
Method = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Scores:
    """Per-image metric values of one method on one data set, plus the summed error curve."""

    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRIC_KEYS})
    curve_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(len(metrics.AUC_THRESHOLDS)))

    def add(self, ab_pred: torch.Tensor, lab_true: torch.Tensor) -> torch.Tensor:
        """Score one prediction; returns its sRGB image (1, 3, H, W) for the perceptual metrics."""
        L, ab_true = lab_true[:1], lab_true[1:]
        rgb_pred = join_l_ab(L[None], ab_pred[None].float())
        rgb_true = join_l_ab(L[None], ab_true[None])
        err = metrics.ab_error(ab_pred[None], ab_true[None])
        cf, cf_gt = metrics.colorfulness(rgb_pred).item(), metrics.colorfulness(rgb_true).item()
        row = {"psnr": metrics.psnr(rgb_pred, rgb_true).item(), "ssim": metrics.ssim(rgb_pred, rgb_true).item(),
               "l2ab": err.mean().item(), "auc": metrics.auc(err).item(),
               "palette": metrics.palette_distance(ab_pred, ab_true), "cf": cf, "cf_gt": cf_gt,
               "cf_gap": cf - cf_gt}
        for k, v in row.items():
            self.values[k].append(v)
        self.curve_sum += metrics.cumulative_curve(err)[0].cpu()
        return rgb_pred

    def summary(self) -> dict[str, float]:
        n = len(self.values["l2ab"])
        out = {k: float(np.mean(v)) for k, v in self.values.items()}
        out["n"] = n
        out["curve"] = (self.curve_sum / max(n, 1)).tolist()
        out["l2ab_per_image"] = [round(x, 3) for x in self.values["l2ab"]]  # paired comparisons (wins per image)
        return out


def pipeline_method(pipe: Pipeline) -> Method:
    """The routed ensemble as a method (its ab before upsampling equals its ab at full size here)."""
    def run(L: torch.Tensor) -> torch.Tensor:
        res = pipe.colorize(_gray_rgb(L))
        return torch.nn.functional.interpolate(res.ab_work[None], size=L.shape[-2:], mode="bilinear",
                                               align_corners=False)[0]
    return run


def expert_method(pipe: Pipeline, name: str) -> Method:
    """One expert on the whole image at full resolution."""
    expert = pipe.experts[name]

    def run(L: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return expert.run(L[None].to(pipe.device))[0].cpu()
    return run


def gray_method(L: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, *L.shape[-2:])


def _gray_rgb(L: torch.Tensor) -> torch.Tensor:
    return join_l_ab(L[None], torch.zeros(1, 2, *L.shape[-2:]))[0]


def load_datasets(folders: Sequence[str], composites: int, data_root: str | None, limit: int | None
                  ) -> dict[str, list[torch.Tensor]]:
    """Named lists of ground-truth Lab images (3, H, W)."""
    sets: dict[str, list[torch.Tensor]] = {}
    for folder in folders:
        path = Path(folder)
        name = f"{path.parent.name}/{path.name}" if path.name in ("val", "train", "test") else path.name
        if name in sets:  # the same category/split of a second data root: name it by that root's folder
            root = path.parent.parent.parent if path.parent.parent.name == "colorize" else path.parent
            name = f"{root.name}:{name}"
        files = list_images(path)
        if limit and len(files) > limit:  # an even stride, not the first N: sorted names cluster by class
            files = [files[round(i * len(files) / limit)] for i in range(limit)]
        sets[name] = [rgb_to_lab(load_image(f).rgb[None])[0] for f in files]
    if composites:
        from ..data.composites import val_composites

        if data_root is None:
            raise ValueError("--composites needs --data-root (the shared data folder)")
        comps = val_composites(data_root, n=composites)
        sets[f"composites/val (n={composites}, seed 0)"] = [
            rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0] for rgb, _ in comps]
    return sets


def evaluate(methods: dict[str, Method], datasets: dict[str, list[torch.Tensor]],
             scorer: PerceptualScorer | None = None, pooled: str | None = None) -> dict[str, dict[str, dict]]:
    """{dataset: {method: summary}}; every method sees exactly the same L images.

    With a ``scorer``, each summary also holds agree1 / gt_class_prob / frechet (``perceptual``), and a
    ``ground truth`` row gives the classifier's view of the real photos (agree1 = 1, Fréchet = 0 by
    definition; its gt_class_prob is the ceiling the others are read against). With ``pooled`` too, an entry
    of that name holds each method's Fréchet distance over all data sets together ({method: {"n", "frechet"}}),
    from the same features, however few the images (small sets bias it upwards, alike for every method).
    """
    out: dict[str, dict[str, dict]] = {}
    pool_seen = {m: PerceptualSet() for m in methods}
    pool_truth = PerceptualSet()
    for ds_name, images in datasets.items():
        scores = {m: Scores() for m in methods}
        seen = {m: PerceptualSet() for m in methods}
        truth = PerceptualSet()
        for lab in tqdm(images, desc=ds_name, leave=False, mininterval=5):
            if scorer is not None:
                truth.add(*scorer(join_l_ab(lab[None, :1], lab[None, 1:])))
            for m, fn in methods.items():
                rgb = scores[m].add(fn(lab[:1].clone()), lab)
                if scorer is not None:
                    seen[m].add(*scorer(rgb))
        out[ds_name] = {m: s.summary() for m, s in scores.items()}
        if scorer is not None:
            for m in methods:
                out[ds_name][m].update(seen[m].summary(truth))
                pool_seen[m].feats += seen[m].feats
            out[ds_name]["ground truth"] = {"n": len(images), **truth.summary(truth)}
            pool_truth.feats += truth.feats
    if scorer is not None and pooled is not None:
        out[pooled] = {m: {"n": len(pool_truth.feats), "frechet": frechet_distance(
            torch.cat(s.feats), torch.cat(pool_truth.feats))} for m, s in pool_seen.items()}
    return out


def _fmt(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown(results: dict[str, dict[str, dict]], bold_best: bool = True) -> str:
    """One table per data set; best value per column in bold (higher is better except l2ab, palette, cf_gap,
    frechet)."""
    lines = []
    for ds_name, by_method in results.items():
        n = next(iter(by_method.values()))["n"]
        perceptual = "agree1" in next(iter(by_method.values()))
        head = "| method | PSNR ↑ | SSIM ↑ | L2ab ↓ | AuC ↑ | palette ↓ | colourfulness | GT colourfulness | gap |"
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        if perceptual:
            head += " agree@1 ↑ | GT-class prob ↑ | Fréchet ↓ |"
            rule += "---:|---:|---:|"
        lines += [f"### {ds_name} ({n} images)", "", head, rule]
        models = {m: v for m, v in by_method.items() if "l2ab" in v}
        best = {
            "psnr": max(v["psnr"] for v in models.values()), "ssim": max(v["ssim"] for v in models.values()),
            "l2ab": min(v["l2ab"] for v in models.values()), "auc": max(v["auc"] for v in models.values()),
            "palette": min(v["palette"] for v in models.values())}
        for m, v in models.items():
            def cell(k: str, fmt: str, v=v, best=best) -> str:
                s = format(v[k], fmt)
                return f"**{s}**" if bold_best and k in best and v[k] == best[k] else s
            row = (f"| {m} | {cell('psnr', '.2f')} | {cell('ssim', '.4f')} | {cell('l2ab', '.2f')} | "
                   f"{cell('auc', '.4f')} | {cell('palette', '.2f')} | {v['cf']:.1f} | {v['cf_gt']:.1f} | "
                   f"{v['cf_gap']:+.1f} |")
            if perceptual:
                row += f" {v['agree1']:.3f} | {v['gt_class_prob']:.3f} | {_fmt(v['frechet'], '.1f')} |"
            lines.append(row)
        if perceptual and "ground truth" in by_method:
            g = by_method["ground truth"]
            lines.append(f"| ground truth | | | | | | | | | {g['agree1']:.3f} | {g['gt_class_prob']:.3f} | "
                         f"{_fmt(g['frechet'], '.1f')} |")
        lines.append("")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="*", default=[], help="ground-truth colour image folder(s), one data set each")
    p.add_argument("--composites", type=int, default=0, help="also N seeded val composites (needs --data-root)")
    p.add_argument("--data-root", default=None, help="the shared data folder (for composites)")
    p.add_argument("--methods", nargs="+", default=["gray", "pipeline"],
                   help="gray, pipeline, expert:NAME, or experts (= every installed expert alone)")
    p.add_argument("--experts", action="append", default=[], metavar="DIR", help="extra plugin folder")
    p.add_argument("--no-shipped", action="store_true",
                   help="only the --experts folders, not the shipped experts (e.g. an older release's weights)")
    p.add_argument("--router", default="embedded")
    p.add_argument("--size", type=int, default=None, help="pipeline working size")
    p.add_argument("--limit", type=int, default=None, help="at most N images per folder (evenly spaced)")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-perceptual", action="store_true",
                   help="skip agree@1 / Fréchet (they need the train extra's ImageNet weights package)")


def build_methods(names: Sequence[str], pipe: Pipeline) -> dict[str, Method]:
    """Method names -> callables; 'experts' expands to every installed expert."""
    out: dict[str, Method] = {}
    for name in names:
        if name == "gray":
            out["gray"] = gray_method
        elif name == "pipeline":
            out["pipeline"] = pipeline_method(pipe)
        elif name == "experts":
            out.update({f"expert:{n}": expert_method(pipe, n) for n in pipe.experts})
        elif name.startswith("expert:") and name[7:] in pipe.experts:
            out[name] = expert_method(pipe, name[7:])
        else:
            raise ValueError(f"unknown method {name!r} (installed experts: {', '.join(pipe.experts)})")
    return out


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    if not args.data and not args.composites:
        raise SystemExit("error: give --data FOLDER(s) and/or --composites N")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.load(args.experts, router=args.router, device=args.device, use_shipped=not args.no_shipped)
    if args.size:
        pipe = pipe.with_options(work_size=args.size)
    methods = build_methods(args.methods, pipe)
    datasets = load_datasets(args.data, args.composites, args.data_root, args.limit)
    scorer = None if args.no_perceptual else PerceptualScorer(device=pipe.device)
    results = evaluate(methods, datasets, scorer)
    table = markdown(results)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out.with_suffix(".md"), table.encode())
        command = "python -m ensemble_color evaluate " + shlex.join(argv if argv is not None else sys.argv[2:])
        payload = {"command": command, "results": results, "options": dataclasses.asdict(pipe.options),
                   "router": pipe.router.name}
        atomic_write_bytes(out.with_suffix(".json"), json.dumps(payload, indent=1).encode())
    return 0

