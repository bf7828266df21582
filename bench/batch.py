"""Throughput of ``ensemble_color batch``: the local engine and Ray Data with 1 and 2 workers, one run.

    python bench/batch.py [--images 200] [--workers 1 2] [--note "idle machine"] [--out bench/results/batch]

Inputs are the bundled gray example photos (``examples/*_gray.jpg``, 300–640 px), copied round-robin to
``--images`` files in a temporary folder, so routing and expert crops are those of real photos. Each
variant writes into its own fresh temporary OUTPUT (nothing in the repository or the working directory)
and is timed end to end by :func:`ensemble_color.batch.run_batch`:

* ``wall``: listing + planning + actor start and model load + colourising + manifest;
* ``first done``: until a worker finished its first image (start-up: actors, models, first batch);
* ``steady``: images after every worker's first batch / the time they took (what more images cost).

Times come from the manifest's ``finished`` stamps, written by the workers: Ray hands rows back to the
driver in bursts (often all at the end), so arrival times on the driver would measure Ray's buffering.

One new local Ray instance (``num_cpus`` = this machine's cores, no dashboard) serves every Ray variant;
its start time is reported apart. Its workers run at ``--ray-niceness`` (default 0, as the local engine;
Ray's own default is 15, which on a busy machine starves them: ~500 s instead of ~30 s to the first image
next to a nice -10 training job, seen here). Ray gives each actor ``--cpus-per-worker`` CPUs and sets its
torch threads to match; the local engine uses torch's default (all cores), so "local" vs "ray, 1 worker"
also shows what one thread vs all threads does. Writes JSON and Markdown; ``--note`` labels the conditions (e.g. load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
from timing_env import env_note, threading_env  # bench/ is this script's folder, hence on sys.path

from ensemble_color.batch import BatchConfig, PipelineSpec, run_batch
from ensemble_color.pipeline import PipelineOptions

REPO = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, n: int) -> list[Path]:
    """``n`` copies of the bundled gray photos, round-robin, named so the listing order is the copy order."""
    photos = sorted((REPO / "examples").glob("*_gray.jpg"))
    if not photos:
        raise FileNotFoundError(f"{REPO / 'examples'}: no *_gray.jpg example photos")
    folder.mkdir(parents=True)
    files = [folder / f"img{i:05d}_{photos[i % len(photos)].name}" for i in range(n)]
    for src_i, dst in enumerate(files):
        shutil.copyfile(photos[src_i % len(photos)], dst)
    return files


def timed_run(scans: Path, out: Path, config: BatchConfig) -> dict:
    """One batch run; timings from the workers' ``finished`` stamps (epoch seconds), counts from the summary."""
    rows: list[dict] = []
    t0 = time.time()
    summary = run_batch(str(scans), str(out), config, on_row=rows.append)
    wall = time.time() - t0
    done = sorted(datetime.fromisoformat(r["finished"].replace("Z", "+00:00")).timestamp() for r in rows)
    workers = config.workers if config.engine == "ray" else 1
    warm = workers * config.batch_size  # every worker has loaded its models and finished one batch
    steady = (len(done) - warm) / (done[-1] - done[warm - 1]) if len(done) > warm and done[-1] > done[warm - 1] \
        else None
    return {"engine": config.engine, "workers": workers, "workers_used": len({r["worker"] for r in rows}),
            "images": summary.ok, "failed": summary.failed, "wall_s": round(wall, 2),
            "first_done_s": round(done[0] - t0, 2) if done else None,
            "throughput_img_s": round(summary.ok / wall, 3), "steady_img_s": round(steady, 3) if steady else None}


def markdown(result: dict) -> str:
    rows = result["runs"]
    base = next((r["steady_img_s"] for r in rows if r["engine"] == "ray" and r["workers"] == 1), None)
    lines = [
        "# Batch throughput (`bench/batch.py`)",
        "",
        f"**Conditions: {result['note']}.** {env_note()}",
        "",
        f"{result['images']} images (bundled gray photos, 300–640 px, copied round-robin), working size "
        f"{result['work_size']} px, batch size {result['batch_size']}, shipped experts; "
        f"{result['cpus']} CPU cores, {result['device']}; load average (1 min) before: {result['load_before']:.2f}, "
        f"after: {result['load_after']:.2f}. Ray {result['ray_version']}, local instance started in "
        f"{result['ray_init_s']:.1f} s (not in the rows below), workers at niceness "
        f"{result['ray_worker_niceness']}.",
        "",
        "| engine | workers (did work) | images ok | wall | first done | overall | steady | steady vs 1 Ray worker |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['steady_img_s'] / base:.2f}×" if base and r["steady_img_s"] and r["engine"] == "ray" else ""
        steady = f"{r['steady_img_s']:.2f} img/s" if r["steady_img_s"] is not None else "–"
        lines.append(f"| {r['engine']} | {r['workers']} ({r['workers_used']}) | {r['images']} | {r['wall_s']:.1f} s | "
                     f"{r['first_done_s']:.1f} s | {r['throughput_img_s']:.2f} img/s | {steady} | {ratio} |")
    lines += [
        "",
        "*wall*: listing, planning, actor start + model load, colourising, manifest. *first done*: until a "
        "worker finished its first image. *steady*: images finished after every worker's first batch, per "
        "second (workers' own time stamps). Ray actors run with 1 CPU (torch 1 thread) each; the local "
        "engine uses all cores.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work-size", type=int, default=PipelineOptions.work_size)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--no-local", action="store_true", help="skip the in-process (local engine) baseline")
    ap.add_argument("--ray-niceness", type=int, default=0, help="Ray worker niceness (Ray's default: 15)")
    ap.add_argument("--note", default="idle machine", help="conditions of this run, printed in the results")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "batch")
    args = ap.parse_args()

    import ray

    spec = PipelineSpec(options=PipelineOptions(work_size=args.work_size))
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        scans = Path(tmp) / "scans"
        make_inputs(scans, args.images)
        if not args.no_local:
            runs.append(timed_run(scans, Path(tmp) / "local", BatchConfig(batch_size=args.batch_size,
                                                                          pipeline=spec)))
            print(runs[-1], flush=True)
        t0 = time.perf_counter()
        # read by the raylet that ray.init starts; Ray's config names are case-sensitive, hence the noqa
        os.environ["RAY_worker_niceness"] = str(args.ray_niceness)  # noqa: SIM112
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)
        ray_init = time.perf_counter() - t0
        try:
            for n in args.workers:
                config = BatchConfig(engine="ray", workers=n, batch_size=args.batch_size, pipeline=spec)
                runs.append(timed_run(scans, Path(tmp) / f"ray{n}", config))
                print(runs[-1], flush=True)
        finally:
            ray.shutdown()
    result = {"note": args.note, "images": args.images, "work_size": args.work_size, "batch_size": args.batch_size,
              "cpus": os.cpu_count(), "device": "CUDA" if torch.cuda.is_available() else "no GPU",
              "load_before": load_before, "load_after": os.getloadavg()[0], "ray_version": ray.__version__,
              "ray_init_s": round(ray_init, 2), "ray_worker_niceness": args.ray_niceness,
              "torch": torch.__version__, "python": platform.python_version(),
              "env": threading_env(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
