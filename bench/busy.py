"""Threads on an idle and on a busy machine: the default against ``--threads 1`` and ``--threads 2``, side by side.

    python bench/busy.py [--repeats 3] [--out bench/results/busy]

Each run is the command a user types (``python -m ensemble_color INPUTS -o OUT``, a fresh process: model loading
included), on six portraits (``examples/``) and on a 50-frame 480x360 clip made from an example photo. "busy"
runs one competing CPU-bound process (a Python busy loop) for the whole measurement; "idle" runs none. Settings
are interleaved round by round, so drift hits all of them alike; medians are reported, and the ratio of the
default to the best of ``--threads 1`` / ``--threads 2``. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from timing_env import write_report  # bench/ is this script's folder, hence on sys.path

REPO = Path(__file__).resolve().parent.parent
PHOTOS = ["historical_man_1.jpg", "historical_man_111.jpg", "historical_woman_10.jpg", "historical_woman_104.jpg",
          "astronaut_gray.jpg", "chelsea_gray.jpg"]
SETTINGS = {"default": [], "--threads 1": ["--threads", "1"], "--threads 2": ["--threads", "2"]}


def make_clip(path: Path, frames: int = 50, w: int = 480, h: int = 360) -> Path:
    """A gray clip panning across an example photo (what a user's film looks like to the pipeline)."""
    img = cv2.imread(str(REPO / "examples" / "coffee_gray.jpg"), cv2.IMREAD_GRAYSCALE)
    img = cv2.resize(img, (2 * w, round(img.shape[0] * 2 * w / img.shape[1])))
    img = img if img.shape[0] >= h else cv2.resize(img, (2 * w, h))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for i in range(frames):
        x = round(i * (img.shape[1] - w) / max(1, frames - 1))
        writer.write(cv2.cvtColor(np.ascontiguousarray(img[:h, x:x + w]), cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def run(inputs: list[str], extra: list[str], out: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ensemble_color", *inputs, "-o", str(out), "--overwrite", *extra],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"error: the command failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "busy")
    args = ap.parse_args()
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workloads = {"six photos": [str(REPO / "examples" / p) for p in PHOTOS],
                     "50-frame clip": [str(make_clip(Path(tmp) / "clip.mp4"))]}
        for load in ("idle", "busy"):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
            try:
                time.sleep(1.0 if hog else 0.0)
                for _ in range(args.repeats):
                    for work, inputs in workloads.items():
                        for name, extra in SETTINGS.items():
                            secs = run(inputs, extra, Path(tmp) / "out")
                            results.setdefault(load, {}).setdefault(work, {}).setdefault(name, []).append(secs)
                            print(f"{load:5} {work:14} {name:12} {secs:6.2f} s", flush=True)
            finally:
                if hog:
                    hog.kill()
                    hog.wait()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = ["# Threads on an idle and a busy machine", "",
             f"`python bench/busy.py --repeats {args.repeats}`; {cores} usable cores, {platform.processor() or '?'}; "
             "median wall seconds of the whole command (model loading included); busy = one competing "
             "CPU-bound process.", "",
             "| machine | workload | default | --threads 1 | --threads 2 | default / best |",
             "|---|---|---:|---:|---:|---:|"]
    summary = {}
    for load, works in results.items():
        for work, times in works.items():
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["default"] / min(med["--threads 1"], med["--threads 2"])
            summary[f"{load}/{work}"] = {**{k: round(v, 2) for k, v in med.items()},
                                         "default_over_best": round(ratio, 3)}
            lines.append(f"| {load} | {work} | {med['default']:.2f} | {med['--threads 1']:.2f} | "
                         f"{med['--threads 2']:.2f} | {ratio:.2f} |")
    write_report(args.out, {"runs": results, "medians": summary}, lines)


if __name__ == "__main__":
    main()
