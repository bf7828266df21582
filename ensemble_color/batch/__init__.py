"""Archives beyond one machine: colourise a whole folder (local, or any pyarrow filesystem URI) with Ray Data.

    python -m ensemble_color batch scans/ out/ -r                         # local engine, no Ray needed
    python -m ensemble_color batch scans/ out/ -r --engine ray --workers 2
    python -m ensemble_color batch s3://bucket/scans s3://bucket/colour --engine ray --address auto

    from ensemble_color.batch import BatchConfig, run_batch
    summary = run_batch("scans/", "out/", BatchConfig(engine="ray", workers=2, recursive=True))

A thin layer over :class:`~ensemble_color.pipeline.Pipeline` and the CLI's rules, in three steps:

1. **plan** (driver): list the inputs with the CLI's filter, read ``OUTPUT/manifest.csv``, skip inputs done
   before (status ``ok`` and the output still there), and name every other output with the CLI's rule
   (``{stem}_colorized.{ext}``, ``_1``, ``_2``… past anything in OUTPUT or planned earlier). Naming on the
   driver, in sorted input order, makes the names the CLI's whichever worker finishes first.
2. **colourise** (workers): :class:`ColorizeBatch` holds one Pipeline per Ray actor (loaded once) and turns a
   batch of jobs into manifest rows; the ``local`` engine calls the very same object in-process. A failure is
   that image's row, ``<file>: <reason>``, never the job's end.
3. **record** (driver): merge the rows into the manifest (earlier runs' rows are kept; ``attempts`` counts
   tries), rewritten atomically every ``checkpoint_seconds`` and at the end, so a killed job loses little.

Ray (``pip install 'ensemble_color[scale]'``) is imported only by the ``ray`` engine; pyarrow only for URIs.
"""

from __future__ import annotations

import argparse
import sys

from ..options import add_pipeline_arguments, options_from_args
from ..threads import configure_threads
from .engine import (
    ENGINES,
    BatchConfig,
    BatchSummary,
    ColorizeBatch,
    PipelineSpec,
    colorize_jobs,
    plan_jobs,
    read_manifest,
    run_batch,
    write_manifest,
)
from .stores import ArrowStore, LocalStore, Store, open_store

__all__ = ["ArrowStore", "BatchConfig", "BatchSummary", "ColorizeBatch", "LocalStore", "PipelineSpec", "Store",
           "build_parser", "colorize_jobs", "config_from_args", "main", "open_store", "plan_jobs", "read_manifest",
           "run_batch", "write_manifest"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ensemble_color batch",
        description="Colourise an archive (a folder, or any pyarrow filesystem URI such as s3://bucket/scans) "
                    "into OUTPUT with the main command's naming; OUTPUT/manifest.csv records every input. "
                    "Re-running skips what is done and retries what failed.")
    p.add_argument("input", help="folder (or single file) of grayscale scans; local path or URI")
    p.add_argument("output", help="output folder; local path or URI")
    p.add_argument("--engine", choices=sorted(ENGINES), default="local",
                   help="local: this process; ray: Ray Data actors (needs the 'scale' extra)")
    p.add_argument("--address", help="Ray cluster to join (auto, ray://head:10001, local); default: $RAY_ADDRESS "
                                     "or a cluster started with 'ray start' on this machine, else a new local Ray")
    p.add_argument("--workers", type=int, default=1, help="Ray actors, each holding one loaded pipeline")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves per actor")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor (fractions share a GPU)")
    p.add_argument("--batch-size", type=int, default=4, help="images colourised together")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--format", choices=["png", "jpg", "webp", "tif"], help="output format (default: the input's)")
    add_pipeline_arguments(p)  # the main command's flags, same meaning (--threads: the local engine's)
    return p


def config_from_args(args: argparse.Namespace) -> BatchConfig:
    """Command-line flags -> :class:`BatchConfig`, through the main command's :func:`options_from_args`."""
    if args.engine == "ray":  # one thread per core of the node would oversubscribe a shared node
        threads = max(1, round(args.cpus_per_worker)) if args.backend == "onnxruntime" else args.threads
    else:  # this process: the cores free of other work (torch's and onnxruntime's pools alike)
        threads = configure_threads(args.threads)
    load, options = options_from_args(args, threads=threads)
    return BatchConfig(engine=args.engine, address=args.address, workers=args.workers,
                       cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                       batch_size=args.batch_size, recursive=args.recursive, fmt=args.format,
                       pipeline=PipelineSpec(load, options))


def main(argv: list[str]) -> int:
    """``python -m ensemble_color batch …``; exit code 1 when any input failed (as the main command)."""
    from tqdm import tqdm

    args = build_parser().parse_args(argv)
    bar = tqdm(unit="img", file=sys.stderr)
    try:
        summary = run_batch(args.input, args.output, config_from_args(args), on_row=lambda _: bar.update(1))
    except (ImportError, OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    for line in summary.errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"{summary.ok} colourised, {summary.failed} failed, {summary.skipped} skipped as done "
          f"in {summary.seconds:.1f} s; manifest: {summary.manifest}", file=sys.stderr)
    return 1 if summary.failed else 0
