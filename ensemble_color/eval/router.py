"""Measurements of a router, and ``python -m ensemble_color evaluate router`` (``weights/router/metrics.{json,md}``).

Why measured this way:
* Every score goes through the full :class:`~ensemble_color.routing.Router` (resize to its input size,
  softmax, routing table, resize back), so what is measured is what the pipeline uses; the training-time
  validation and the fp16 check wrap the in-memory net the same way (:func:`net_router`).
* IoU is counted per class over the whole set (ignore pixels excluded), not averaged per image.
* The recall of pasted subjects (in the multi-object composites, and one clean val cut-out on a val
  scene) is reported beside mIoU because a subject routed mostly to background stays grey, whatever the
  mIoU says.
* Latency is wall and process-CPU time: on a shared machine wall time includes waiting for the cores.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..color import rgb_to_lab
from ..data.composites import IGNORE, LABELS, single_subject_composites, val_composites
from ..data.masks import (
    CLASS_NAMES,
    MASK_CATEGORIES,
    N_CLASSES,
    MaskedImages,
    load_masked,
    load_scenes,
    unreliable_masks,
)
from ..io import atomic_write_bytes, atomic_write_json
from ..routing import Router, RoutingTable, _LToUnit
from ..weights import router_dir

# ----------------------------------------------------------------------------------------- metrics


def route_to_label(route_classes: tuple[str, ...]) -> torch.Tensor:
    """Index map router output channel -> data label (by class name; unknown classes -> background)."""
    return torch.tensor([LABELS.get(c, LABELS["background"]) for c in route_classes], dtype=torch.long)


@torch.inference_mode()
def route_probs(router: Router, rgb: np.ndarray) -> torch.Tensor:
    """(R, H, W) route probabilities for an RGB uint8 image through the full :class:`Router` (resize to its
    input size, softmax, routing table, resize back), so what is measured is what the pipeline uses."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    return router(rgb_to_lab(t)[:, :1])[0]


def predict_labels(router: Router, rgb: np.ndarray) -> np.ndarray:
    """The router's hard decision per pixel for an RGB uint8 image, as data labels (H, W) uint8."""
    idx = route_probs(router, rgb).argmax(0)
    return route_to_label(router.route_classes)[idx].numpy().astype(np.uint8)


class IoUCounter:
    """Accumulates per-class intersection and union over a dataset (ignore pixels excluded)."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        self.inter = np.zeros(n_classes, np.int64)
        self.union = np.zeros(n_classes, np.int64)
        self.pixels = 0

    def add(self, pred: np.ndarray, target: np.ndarray) -> None:
        valid = target != IGNORE
        p, t = pred[valid].astype(np.int64), target[valid].astype(np.int64)
        n = len(self.inter)
        cm = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
        tp = np.diag(cm)
        self.inter += tp
        self.union += cm.sum(0) + cm.sum(1) - tp
        self.pixels += int(valid.sum())

    def result(self) -> dict[str, Any]:
        """Per-class IoU (None for a class absent from both prediction and truth) and their mean."""
        iou = {
            name: (float(self.inter[i] / self.union[i]) if self.union[i] else None)
            for i, name in enumerate(CLASS_NAMES)
        }
        present = [v for v in iou.values() if v is not None]
        return {
            "miou": float(np.mean(present)) if present else float("nan"),
            "iou": iou,
            "pixels": self.pixels,
        }


def segmentation_scores(router: Router, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Dataset-level per-class IoU and mIoU of ``router`` on (RGB uint8, labels uint8) pairs."""
    counter = IoUCounter()
    for rgb, labels in pairs:
        counter.add(predict_labels(router, rgb), labels)
    return counter.result()


def routed_fraction(router: Router, rgb: np.ndarray, region: np.ndarray, route: str) -> float:
    """Mean probability of ``route`` inside the boolean ``region`` (what the compositor would blend)."""
    return float(route_probs(router, rgb)[router.route_classes.index(route)].numpy()[region].mean())


#: a pasted subject counts in the recall figures when it covers at least this share of the image
MIN_SUBJECT_AREA = 0.01


def pasted_recall(router: Router, pairs: list[tuple[np.ndarray, np.ndarray]], min_area: float = MIN_SUBJECT_AREA
                  ) -> dict[str, dict[str, float]]:
    """Per subject class: of the composites where it covers >= ``min_area`` of the image, the share whose
    pasted region gets more than half of its probability routed to that class (what the pasted-bird
    test asks of a handful of them), and the mean routed fraction."""
    fractions: dict[str, list[float]] = {}
    subjects = [name for name in CLASS_NAMES[1:] if name in router.route_classes]
    for rgb, labels in pairs:
        present = [(name, labels == LABELS[name]) for name in subjects]
        present = [(name, region) for name, region in present if region.mean() >= min_area]
        if not present:
            continue
        probs = route_probs(router, rgb).numpy()  # one router pass per composite, whatever it shows
        for name, region in present:
            fractions.setdefault(name, []).append(float(probs[router.route_classes.index(name)][region].mean()))
    return {k: {"composites": len(v), "share_over_half": float(np.mean(np.array(v) > 0.5)),
                "mean_fraction": float(np.mean(v))} for k, v in fractions.items()}


def single_subject_sets(data_root: str | Path, n: int = 60, size: int = 256, seed: int = 0
                        ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per mask category, ``n`` "one clean subject pasted on a val scene" images (built once, scored by any
    number of routers with :func:`single_subject_recall`)."""
    bad = unreliable_masks(data_root)
    return {category: single_subject_composites(data_root, category, n=n, size=size, seed=seed, exclude=bad)
            for category in MASK_CATEGORIES}


def single_subject_recall(router: Router, sets: dict[str, list[tuple[np.ndarray, np.ndarray]]]
                          ) -> dict[str, dict[str, float]]:
    """:func:`pasted_recall` on each of :func:`single_subject_sets`' sets, keyed by route class."""
    out: dict[str, dict[str, float]] = {}
    for pairs in sets.values():
        out.update(pasted_recall(router, pairs))
    return out


def net_router(net: nn.Module, input_size: int = 320, table: RoutingTable | None = None,
               input_mapping: str = "l_unit") -> Router:
    """Wrap an in-memory 1-channel net exactly like :func:`routing.smp_router` does after loading."""
    table = table or RoutingTable.load()
    matrix, classes = table.matrix("ensemble")
    return Router("training", _LToUnit(net, input_mapping), matrix, classes, input_size=input_size)


def _fp16_roundtrip(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with its float weights rounded to fp16 and back (what an fp16 export ships)."""
    import copy

    out = copy.deepcopy(net)
    out.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    )
    return out.eval()


def _fp16_scores(
    net: nn.Module, input_size: int, val_pairs: list, val_comp: list, mapping: str
) -> tuple[float, float, float]:
    """mIoU with weights rounded to fp16 (what an fp16 export would ship), to decide whether fp16 is safe."""
    router = net_router(_fp16_roundtrip(net), input_size, input_mapping=mapping)
    m = segmentation_scores(router, val_pairs)["miou"]
    c = segmentation_scores(router, val_comp)["miou"]
    return 1.0 - (m + c) / 2, m, c


# -------------------------------------------------------------------------------------- evaluate


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ensemble_color evaluate router``."""
    p.add_argument("--data", action="append", default=None,
                   help="data pack root (colorize/ and route/); the first is the main report, further roots "
                        "(the extension pack) add their val masks per category (default ../shared/data)")
    p.add_argument(
        "--router",
        default="embedded",
        help="router to measure: embedded, generalist (its segmentation head), lraspp, deeplabv3, background, "
             "or an smp folder",
    )
    p.add_argument("--composites", type=int, default=100, help="number of seeded val composites")
    p.add_argument("--single", type=int, default=60,
                   help="one-subject composites per class (a clean val cut-out on a val scene)")
    p.add_argument("--composite-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the val composites")
    p.add_argument("--limit", type=int, default=None, help="at most this many val masks per category")
    p.add_argument("--threads", type=int, default=2, help="torch threads (latency is measured with these)")
    p.add_argument("--latency-repeats", type=int, default=20)
    p.add_argument("--out", default=str(router_dir() / "metrics"), help="writes <out>.json and <out>.md")


def router_latency(
    router: Router, sizes: tuple[tuple[int, int], ...] = ((320, 320), (768, 1024)), repeats: int = 20
) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU seconds of one router call per input size (H, W), after 2 warm-ups.

    Process CPU time is reported too because wall time on a shared machine includes waiting for
    the cores; CPU time / threads is then the better estimate of the unloaded wall time.
    """
    import statistics

    out = {}
    for h, w in sizes:
        L = torch.rand(1, 1, h, w) * 100
        walls, cpus = [], []
        with torch.inference_mode():
            for i in range(repeats + 2):
                t0, c0 = time.perf_counter(), time.process_time()
                router(L)
                if i >= 2:
                    walls.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
        out[f"{w}x{h}"] = {
            "wall_s_median": statistics.median(walls),
            "wall_s_min": min(walls),
            "cpu_s_median": statistics.median(cpus),
        }
    return out


def _markdown(result: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"Router `{result['router']}` (`{result['command']}`)",
        "",
        "| set | images | mIoU | " + " | ".join(f"IoU {c}" for c in CLASS_NAMES) + " |",
        "|---|---:|---:|" + "---:|" * N_CLASSES,
    ]
    for key in ("val_masks", "val_composites"):
        r = result[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {r['images']} | {f(r['miou'])} | "
            + " | ".join(f(r["iou"][c]) for c in CLASS_NAMES)
            + " |"
        )
    lines += [
        "",
        "Per category of val masks (mIoU over classes true or predicted there; 0 = false positives only):",
        "",
        "| category | images | mIoU | " + " | ".join(f"IoU {c}" for c in CLASS_NAMES) + " |",
        "|---|---:|---:|" + "---:|" * N_CLASSES,
    ]
    for cat, r in result["val_masks_per_category"].items():
        lines.append(
            f"| {cat} | {r['images']} | {f(r['miou'])} | "
            + " | ".join(f(r["iou"][c]) for c in CLASS_NAMES)
            + " |"
        )
    for root, cats in result.get("val_masks_other_roots", {}).items():
        lines += ["", f"Val masks of `{root}` per category:", "",
                  "| category | images | mIoU | " + " | ".join(f"IoU {c}" for c in CLASS_NAMES) + " |",
                  "|---|---:|---:|" + "---:|" * N_CLASSES]
        lines += [f"| {cat} | {r['images']} | {f(r['miou'])} | " + " | ".join(f(r["iou"][c]) for c in CLASS_NAMES)
                  + " |" for cat, r in cats.items()]
    recall = result.get("val_composites_pasted_recall", {})
    if recall:
        lines += ["", "Pasted subjects in the val composites (covering >= 1 % of the image): share routed more "
                  "than half to their class, and the mean routed fraction:", "",
                  "| class | composites | share > 0.5 | mean fraction |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['composites']} | {v['share_over_half']:.2f} | {v['mean_fraction']:.2f} |"
                  for k, v in recall.items()]
    single = result.get("val_single_subject_recall", {})
    if single:
        lines += ["", "One clean val cut-out pasted on a val scene (`single_subject_composites`, unreliable masks "
                  "excluded as in training): share routed more than half to its class, and the mean routed fraction:",
                  "", "| class | composites | share > 0.5 | mean fraction |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['composites']} | {v['share_over_half']:.2f} | {v['mean_fraction']:.2f} |"
                  for k, v in single.items()]
    s = result["val_scenes"]
    lines += [
        "",
        f"Val scenes (all-background photos, {s['images']} images): {s['background_fraction']:.3f} of "
        "pixels routed to background.",
        "",
        f"Latency ({result['threads']} torch threads, load average {result['loadavg_1min']:.2f} "
        f"on {result['cpus']} CPUs):",
        "",
        "| input (W x H) | median wall s | min wall s | median process CPU s |",
        "|---|---:|---:|---:|",
    ]
    for size, t in result["latency"].items():
        lines.append(
            f"| {size} | {t['wall_s_median']:.4f} | {t['wall_s_min']:.4f} | {t['cpu_s_median']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _masks_iou(router: Router, masked: MaskedImages) -> tuple[IoUCounter, dict[str, IoUCounter]]:
    """IoU counters over all of ``masked`` and per category (one router pass per image)."""
    per_cat: dict[str, IoUCounter] = {}
    total = IoUCounter()
    for rgb, mask, cat in zip(masked.images, masked.masks, masked.categories, strict=True):
        pred = predict_labels(router, rgb)
        total.add(pred, mask)
        per_cat.setdefault(cat, IoUCounter()).add(pred, mask)
    return total, per_cat


def run_eval(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Per-class IoU and mIoU on val masks and seeded val composites, plus latency; writes JSON + Markdown."""
    import os

    from ..routing import load_router

    torch.set_num_threads(args.threads)
    roots = [Path(d) for d in (args.data or ["../shared/data"])]
    data = roots[0]
    if args.router == "generalist":  # the installed generalist's segmentation head, wired as the pipeline does
        from ..pipeline import Pipeline

        router = Pipeline.load(router="generalist", device="cpu").router.eval()
    else:
        router = load_router(args.router).eval()
    val = load_masked(data, "val", limit=args.limit, clean=False)
    total, per_cat = _masks_iou(router, val)
    counts = val.counts()
    more_roots = {}
    for root in roots[1:]:
        extra = load_masked(root, "val", limit=args.limit, clean=False)
        _, extra_cat = _masks_iou(router, extra)
        more_roots[str(root)] = {c: {"images": extra.counts()[c], **extra_cat[c].result()} for c in extra_cat}
    comps = val_composites(data, n=args.composites, size=args.composite_size, seed=args.seed)
    comp = segmentation_scores(router, comps)
    recall = pasted_recall(router, comps)
    single = single_subject_recall(router, single_subject_sets(data, args.single, args.composite_size, args.seed))
    scenes = load_scenes(data, "val", limit=args.limit)
    bg = [float((predict_labels(router, s) == LABELS["background"]).mean()) for s in scenes]
    result = {
        "router": router.name,
        "command": "python -m ensemble_color evaluate router "
        + shlex.join(argv if argv is not None else sys.argv[3:]),
        "val_masks": {"images": len(val), **total.result()},
        "val_masks_per_category": {c: {"images": counts[c], **per_cat[c].result()} for c in per_cat},
        "val_masks_other_roots": more_roots,
        "val_composites": {"images": len(comps), "size": args.composite_size, "seed": args.seed, **comp},
        "val_composites_pasted_recall": recall,
        "val_single_subject_recall": single,
        "val_scenes": {
            "images": len(scenes),
            "background_fraction": float(np.mean(bg)) if bg else float("nan"),
        },
        "latency": router_latency(router, repeats=args.latency_repeats),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), result)
    md = _markdown(result)
    atomic_write_bytes(out.with_suffix(".md"), md.encode())
    print(md)
    return result

