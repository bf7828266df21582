"""Video colourisation speed and flicker, stabilised vs per-frame, measured in one run.

    python bench/video.py [--frames 120] [--size 640x360] [--out bench/results/video]

Makes a gray clip whose true colours are known, in a temporary folder (never the working
directory): a slow pan (1 px/frame) across the bundled colour photo ``tests/data/coffee.jpg``, then,
for the last third, a cut to ``tests/data/chelsea.jpg`` (also panning). It is colourised end to end
by ``Pipeline.colorize_video`` (read, colourise in batches, write MPEG-4) with temporal
stabilisation (the default) and per frame, timed (frames/s, wall clock, whole file), and the same
frames are colourised again in memory (``video.colorize_frames``) to measure the colourisation itself:
the flicker measure of ``ensemble_color.video.flicker`` (mean |Δab| between consecutive frames after
motion compensation; flow from the input), its ratio stabilised / per-frame, and L2ab against the
true colours; the same on the written files, where the codec's own noise adds to both. Writes JSON
and Markdown; the load average is recorded because a busy machine slows every number here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from timing_env import env_note, threading_env  # bench/ is this script's folder, hence on sys.path

from ensemble_color.color import rgb_to_l
from ensemble_color.pipeline import Pipeline
from ensemble_color.video import FlowCarry, ab_of, colorize_frames, colorize_video, flicker, l_to_u8

REPO = Path(__file__).resolve().parent.parent
PHOTOS = (REPO / "tests" / "data" / "coffee.jpg", REPO / "tests" / "data" / "chelsea.jpg")


def pan(photo: Path, w: int, h: int, n: int) -> list[np.ndarray]:
    """``n`` RGB frames of size ``w``×``h`` panning 1 px/frame (diagonally) across ``photo``."""
    bgr = cv2.imread(str(photo))
    scale = max((w + n) / bgr.shape[1], (h + n // 2 + 1) / bgr.shape[0])
    big = cv2.resize(bgr, (round(bgr.shape[1] * scale) + 1, round(bgr.shape[0] * scale) + 1),
                     interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    rgb = cv2.cvtColor(big, cv2.COLOR_BGR2RGB)
    return [np.ascontiguousarray(rgb[i // 2:i // 2 + h, i:i + w]) for i in range(n)]


def make_clip(folder: Path, w: int, h: int, frames: int, fps: float) -> tuple[Path, list[np.ndarray]]:
    """Gray MPEG-4 clip (pan, cut, pan) and its colour ground truth."""
    first = frames - frames // 3
    color = pan(PHOTOS[0], w, h, first) + pan(PHOTOS[1], w, h, frames - first)
    path = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in color:
        writer.write(cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path, color


def read_frames(path: Path) -> list[torch.Tensor]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float() / 255)
    cap.release()
    return out


def l2ab(abs_: list[np.ndarray], truth: list[np.ndarray]) -> float:
    """Mean Euclidean ab error over every pixel of every frame (Lab units)."""
    return float(np.mean([np.linalg.norm(a - t, axis=-1).mean() for a, t in zip(abs_, truth, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--size", default="640x360", help="WxH")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work-size", type=int, default=None, help="pipeline working size (default: its own)")
    ap.add_argument("--router", default="embedded")
    ap.add_argument("--experts", action="append", default=[])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"],
                    help="pipeline backends, measured one after the other in this run")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "video"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    w, h = map(int, args.size.split("x"))
    load_before = os.getloadavg()
    pipes = {}
    for backend in args.backends:
        pipe = Pipeline.load(args.experts, router=args.router, device="cpu",
                             backend=backend, router_backend=backend, threads=args.threads)  # all on one
        pipes[backend] = pipe.with_options(work_size=args.work_size) if args.work_size else pipe
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        src, color = make_clip(Path(tmp), w, h, args.frames, args.fps)
        truth = [ab_of(torch.from_numpy(c).permute(2, 0, 1).float() / 255) for c in color]
        inputs = read_frames(src)
        Ls = [l_to_u8(rgb_to_l(rgb[None])[0]) for rgb in inputs]  # the flicker measure's flow
        frames_u8 = [(rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for rgb in inputs]
        for pipe in pipes.values():  # warm-up: build every model (and ONNX session) before timing
            for expert in pipe.experts.values():
                _ = expert.model
            pipe.colorize_batch([torch.rand(3, h, w)])
        runs = [(b, mode, stab) for b in pipes for mode, stab in (("stabilised", True), ("per_frame", False))]
        for backend, mode, stabilize in runs:
            pipe, name = pipes[backend], f"{mode} ({backend})"
            dst = Path(tmp) / f"{mode}_{backend}.mp4"
            t0 = time.perf_counter()
            report = colorize_video(pipe, src, dst, stabilize=stabilize, batch_size=args.batch_size)
            seconds = time.perf_counter() - t0
            written = [ab_of(rgb) for rgb in read_frames(dst)]
            carry = FlowCarry() if stabilize else None
            t0 = time.perf_counter()
            abs_ = [ab_of(r.rgb) for r in colorize_frames(pipe, frames_u8, args.batch_size, carry)]
            rows[name] = {"frames": report.frames, "seconds": seconds, "fps": report.frames / seconds,
                          "fps_colourise_only": len(abs_) / (time.perf_counter() - t0),
                          "flicker": flicker(abs_, Ls), "flicker_written": flicker(written, Ls),
                          "l2ab": l2ab(abs_, truth), "l2ab_written": l2ab(written, truth), "cuts": report.cuts,
                          "flow_seconds_per_frame": carry.seconds / len(abs_) if carry else 0.0}
    first = next(iter(pipes))
    stab, per = rows[f"stabilised ({first})"], rows[f"per_frame ({first})"]
    summary = {"flicker_ratio": stab["flicker"] / per["flicker"], "l2ab_change": stab["l2ab"] / per["l2ab"] - 1,
               "flicker_ratio_written": stab["flicker_written"] / per["flicker_written"],
               "flicker_of_true_colours": flicker(truth, Ls), "true_cut_at": args.frames - args.frames // 3}
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cv2": cv2.__version__,
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "size": args.size,
            "frames": args.frames, "batch_size": args.batch_size, "work_size": pipes[first].options.work_size,
            "router": pipes[first].router.name, "experts": sorted(pipes[first].experts), "backends": list(pipes),
            "clip": "gray MPEG-4, 1 px/frame pan over tests/data/coffee.jpg, cut to tests/data/chelsea.jpg",
            "env": threading_env()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "summary": summary}, indent=1))
    md = ["| method | frames/s end to end (colourise only) | flicker: colourised (written file) | "
          "L2ab: colourised (written) | cuts found |", "|---|---:|---:|---:|---|"]
    md += [f"| {name} | {r['fps']:.1f} ({r['fps_colourise_only']:.1f}) | {r['flicker']:.3f} "
           f"({r['flicker_written']:.3f}) | {r['l2ab']:.2f} ({r['l2ab_written']:.2f}) | {r['cuts'] or '-'} |"
           for name, r in rows.items()]
    md.append(f"\nflicker ratio stabilised / per-frame ({first}) **{summary['flicker_ratio']:.2f}** (target ≤ 0.5; "
              f"{summary['flicker_ratio_written']:.2f} on the written files, where MPEG-4 noise adds to both), "
              f"L2ab change {summary['l2ab_change']:+.1%} (budget ≤ +5 %); true cut at frame "
              f"{summary['true_cut_at']}; the measure gives {summary['flicker_of_true_colours']:.3f} on the true "
              f"colours (its floor: interpolation). Flow and blending: "
              f"{stab['flow_seconds_per_frame'] * 1000:.0f} ms/frame.")
    md.append(f"{args.frames} frames at {args.size}, working size {meta['work_size']}, batch {args.batch_size}, "
              f"{meta['threads']} torch threads on {meta['cpus']} CPUs, load average {load_before[0]:.1f} before / "
              f"{meta['loadavg_after'][0]:.1f} after, torch {meta['torch']}, OpenCV {meta['cv2']}. Flicker = mean "
              f"|Δab| between consecutive frames after motion compensation (`ensemble_color.video.flicker`). "
              f"{env_note()}")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
