"""The full-resolution colour conversions: ours (``ensemble_color.color``) against kornia's, side by side.

    python bench/conversions.py [--sizes 1024x768 4032x3024] [--repeats 15] [--threads 2]

Every photo pays two conversions at its full size, whatever the working size of the networks: sRGB -> L on
the way in (``pipeline._to_l``: ``gray_to_l`` for a gray photo, ``rgb_to_l`` for a colour one) and L + ab
-> sRGB on the way out (``join_l_ab`` -> ``lab_to_rgb``). Ours compute only L's luminance for the first and
run kornia's own maths band by band of rows for the second (``color.by_bands``); kornia's calls here are
whole-image, computing all of Lab for the first. This times each pair interleaved, round by round (machine
noise hits both alike), and reports medians, the speed-up and the largest difference between the results.
Writes ``bench/results/conversions.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import kornia.color
import torch
from timing_env import env_note, threading_env  # bench/ is this script's folder, hence on sys.path

from ensemble_color.color import gray_to_l, lab_to_rgb, rgb_to_l

#: conversion -> (ours, kornia's), each a function of the test inputs
PAIRS: dict[str, tuple[Callable[[dict], torch.Tensor], Callable[[dict], torch.Tensor]]] = {
    "colour photo -> L": (lambda x: rgb_to_l(x["rgb"]), lambda x: kornia.color.rgb_to_lab(x["rgb"])[:, :1]),
    "gray photo -> L": (lambda x: gray_to_l(x["gray"]),
                        lambda x: kornia.color.rgb_to_lab(x["gray"].expand(-1, 3, -1, -1))[:, :1]),
    "L + ab -> sRGB": (lambda x: lab_to_rgb(x["lab"]), lambda x: kornia.color.lab_to_rgb(x["lab"], clip=True)),
}


def inputs(w: int, h: int) -> dict[str, torch.Tensor]:
    """A seeded colour photo, its gray, and a Lab image with chroma out of gamut in places."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, h, w, generator=g)
    lab = torch.cat([torch.rand(1, 1, h, w, generator=g) * 100,
                     (torch.rand(1, 2, h, w, generator=g) - 0.5) * 200], dim=1)
    return {"rgb": rgb, "gray": rgb[:, :1].contiguous(), "lab": lab}


def measure(size: str, repeats: int) -> list[dict]:
    w, h = map(int, size.split("x"))
    x = inputs(w, h)
    times: dict[tuple[str, str], list[float]] = {}
    for name, fns in PAIRS.items():
        for who, fn in zip(("ours", "kornia"), fns, strict=True):
            fn(x)  # warm-up
            times[name, who] = []
    with torch.inference_mode():
        for _ in range(repeats):
            for name, fns in PAIRS.items():
                for who, fn in zip(("ours", "kornia"), fns, strict=True):
                    t0 = time.perf_counter()
                    fn(x)
                    times[name, who].append(time.perf_counter() - t0)
        rows = []
        for name, (ours, theirs) in PAIRS.items():
            a, b = statistics.median(times[name, "ours"]), statistics.median(times[name, "kornia"])
            rows.append({"size": size, "conversion": name, "ours_ms": a * 1e3, "kornia_ms": b * 1e3,
                         "speedup": b / a, "max_abs_diff": float((ours(x) - theirs(x)).abs().max())})
    return rows


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
            "kornia": kornia.__version__, "cpu": platform.processor() or platform.machine(), "env": threading_env()}
    md = ["| input | conversion | ours median (ms) | kornia median (ms) | speed-up | max abs difference |",
          "|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['size']} | {r['conversion']} | {r['ours_ms']:.1f} | {r['kornia_ms']:.1f} | {r['speedup']:.2f}× | "
           f"{r['max_abs_diff']:.1e} |" for r in rows]
    md += ["", f"{meta['threads']} torch threads, {args.repeats} interleaved rounds, torch {meta['torch']}, "
           f"kornia {meta['kornia']}. Differences are in L units (-> L) and sRGB in [0, 1] (-> sRGB). {env_note()}"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
