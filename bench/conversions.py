"""The per-photo conversions: ours (``ensemble_color.color``, ``.composite``) against a reference, side by side.

    python bench/conversions.py [--sizes 1024x768 4032x3024] [--repeats 15] [--threads 2]

Every photo pays two conversions at its full size, whatever the working size of the networks: sRGB -> L on
the way in (``pipeline._to_l``: ``gray_to_l`` for a gray photo, ``rgb_to_l`` for a colour one) and L + ab
-> sRGB on the way out (``join_l_ab`` -> ``lab_to_rgb``). Ours compute only L's luminance for the first, and
kornia's maths with the curves spliced by clamps instead of ``torch.where`` for both, band by band of rows
(``color.by_bands``); kornia's calls here are whole-image, computing all of Lab for the first. The guided
upsampling's low-resolution half (``composite.guided_coefficients``, at the working size the pipeline uses for
that photo) is timed against its textbook form, six ``F.avg_pool2d`` box filters, and the whole guided
upsampling (``composite.guided_upsample_ab``) against plain bilinear upsampling, the routed pipeline's cost
over the seed merge's there. This times each pair interleaved, round by round (machine noise hits both
alike), and reports medians, the speed-up and the largest difference between the results.
Writes ``bench/results/conversions.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import kornia.color
import torch
import torch.nn.functional as F
from timing_env import env_note, threading_env  # bench/ is this script's folder, hence on sys.path

from ensemble_color.color import gray_to_l, lab_to_rgb, rgb_to_l
from ensemble_color.composite import (
    GUIDED_EPS,
    GUIDED_RADIUS,
    guided_coefficients,
    guided_upsample_ab,
    upsample_ab,
)
from ensemble_color.pipeline import PipelineOptions, working_size


def textbook_guided_coefficients(ab: torch.Tensor, L_low: torch.Tensor) -> torch.Tensor:
    """The guided filter's A and B as first written here: a replicate-padded ``F.avg_pool2d`` per map."""
    r, eps = GUIDED_RADIUS, GUIDED_EPS

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)

    guide, p = L_low[None] / 100.0, ab[None] / 100.0
    mean_g, mean_p = box(guide), box(p)
    a = (box(guide * p) - mean_g * mean_p) / (box(guide * guide) - mean_g * mean_g + eps)
    return torch.cat([box(a), box(mean_p - a * mean_g)], dim=1)[0]


#: conversion -> (ours, the reference, what the reference is, whether it computes the same thing), each a function
#: of the test inputs. The guided upsampling's reference is plain bilinear upsampling, a different result: its
#: row is the guided filter's full-resolution cost over the cheapest upsampling there is
PAIRS: dict[str, tuple[Callable[[dict], torch.Tensor], Callable[[dict], torch.Tensor], str, bool]] = {
    "colour photo -> L": (lambda x: rgb_to_l(x["rgb"]), lambda x: kornia.color.rgb_to_lab(x["rgb"])[:, :1],
                          "kornia", True),
    "gray photo -> L": (lambda x: gray_to_l(x["gray"]),
                        lambda x: kornia.color.rgb_to_lab(x["gray"].expand(-1, 3, -1, -1))[:, :1], "kornia", True),
    "L + ab -> sRGB": (lambda x: lab_to_rgb(x["lab"]), lambda x: kornia.color.lab_to_rgb(x["lab"], clip=True),
                       "kornia", True),
    "guided A, B (working size)": (lambda x: guided_coefficients(x["ab_work"], x["L_work"]),
                                   lambda x: textbook_guided_coefficients(x["ab_work"], x["L_work"]),
                                   "F.avg_pool2d", True),
    "ab working -> full size": (lambda x: guided_upsample_ab(x["ab_work"], x["L_work"], x["lab"][0, :1]),
                                lambda x: upsample_ab(x["ab_work"], tuple(x["lab"].shape[-2:])),
                                "bilinear (not guided)", False),
}


def inputs(w: int, h: int) -> dict[str, torch.Tensor]:
    """A seeded colour photo, its gray, and a Lab image with chroma out of gamut in places."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, h, w, generator=g)
    lab = torch.cat([torch.rand(1, 1, h, w, generator=g) * 100,
                     (torch.rand(1, 2, h, w, generator=g) - 0.5) * 200], dim=1)
    hw, ww = working_size(h, w, PipelineOptions().work_size)
    return {"rgb": rgb, "gray": rgb[:, :1].contiguous(), "lab": lab,
            "L_work": torch.rand(1, hw, ww, generator=g) * 100,
            "ab_work": (torch.rand(2, hw, ww, generator=g) - 0.5) * 100}


def measure(size: str, repeats: int) -> list[dict]:
    w, h = map(int, size.split("x"))
    x = inputs(w, h)
    times: dict[tuple[str, str], list[float]] = {}
    for name, (*fns, _, _) in PAIRS.items():
        for who, fn in zip(("ours", "reference"), fns, strict=True):
            fn(x)  # warm-up
            times[name, who] = []
    with torch.inference_mode():
        for _ in range(repeats):
            for name, (*fns, _, _) in PAIRS.items():
                for who, fn in zip(("ours", "reference"), fns, strict=True):
                    t0 = time.perf_counter()
                    fn(x)
                    times[name, who].append(time.perf_counter() - t0)
        rows = []
        for name, (ours, theirs, reference, same) in PAIRS.items():
            a, b = statistics.median(times[name, "ours"]), statistics.median(times[name, "reference"])
            rows.append({"size": size, "conversion": name, "reference": reference, "ours_ms": a * 1e3,
                         "reference_ms": b * 1e3, "speedup": b / a,
                         "max_abs_diff": float((ours(x) - theirs(x)).abs().max()) if same else None})
    return rows


def diff(value: float | None) -> str:
    return "n/a (another result)" if value is None else f"{value:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1024x768", "4032x3024"], help="WxH")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="bench/results/conversions")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for size in args.sizes for r in measure(size, args.repeats)]
    meta = {"threads": torch.get_num_threads(), "repeats": args.repeats, "torch": torch.__version__,
            "kornia": kornia.__version__, "cpu": platform.processor() or platform.machine(), "env": threading_env(),
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}
    md = ["| input | conversion | ours median (ms) | reference | reference median (ms) | speed-up | "
          "max abs difference |", "|---|---|---:|---|---:|---:|---:|"]
    md += [f"| {r['size']} | {r['conversion']} | {r['ours_ms']:.2f} | {r['reference']} | {r['reference_ms']:.2f} | "
           f"{r['speedup']:.2f}× | {diff(r['max_abs_diff'])} |" for r in rows]
    md += ["", f"{meta['threads']} torch threads, {args.repeats} interleaved rounds, torch {meta['torch']}, "
           f"kornia {meta['kornia']}. Differences are in L units (-> L), sRGB in [0, 1] (-> sRGB) and the guided "
           f"filter's A, B, which run at the working size of a photo of that size (long side "
           f"{PipelineOptions().work_size}); 'ab working -> full size' is the whole guided upsampling against plain "
           f"bilinear upsampling, the cost floor. The coefficients allocate ~1 MB temporaries, and when glibc "
           f"serves them from fresh mmap pages (its threshold follows the sizes freed before, so it depends on "
           f"what ran earlier) each call pays page faults: compare a run with MALLOC_MMAP_THRESHOLD_=33554432 "
           f"(this run: {meta['malloc_mmap_threshold'] or 'unset'}). {env_note()}"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
