"""The batch job: plan (names and skips on the driver), colourise (workers: in-process or Ray actors), record
(the manifest). See the package docstring for the three steps and why each runs where it does."""

from __future__ import annotations

import csv
import io as _io
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

import numpy as np

from ..io import ImageLoadError, LoadedImage, to_pil
from ..naming import output_name
from ..options import LoadOptions, PipelineOptions
from ..pipeline import Pipeline
from .stores import SCALE_HINT, Store, open_store

MANIFEST_NAME = "manifest.csv"
OUTPUT_TAG = "_colorized"
#: what a worker reports per image (``finished``: UTC, when the worker was done with it); the driver adds
#: ``run`` (when that run started) and ``attempts``
ROW_FIELDS = ("input", "output", "status", "error", "seconds", "experts", "worker", "finished")
MANIFEST_FIELDS = (*ROW_FIELDS, "run", "attempts")

Row = dict[str, Any]


@dataclass(frozen=True)
class PipelineSpec:
    """How each worker builds its Pipeline: plain, picklable data (models are loaded where they run)."""

    load_options: LoadOptions = field(default_factory=LoadOptions)
    options: PipelineOptions | None = None

    @classmethod
    def of(cls, options: PipelineOptions | None = None, **load_fields: Any) -> PipelineSpec:
        """``PipelineSpec.of(router="background", experts_dirs=("my_experts",))``: load options by keyword."""
        return cls(LoadOptions(**load_fields), options)

    def load(self) -> Pipeline:
        return Pipeline.load(load=self.load_options, options=self.options)


class ColorizeBatch:
    """The per-batch function: a Ray Data callable class (one instance, hence one Pipeline, per actor) and
    the ``local`` engine's worker alike. Batches are Ray's numpy format: ``{"input": [...], "output": [...]}``."""

    def __init__(self, spec: PipelineSpec, source: Store, target: Store) -> None:
        self.pipe = spec.load()
        self.source, self.target = source, target
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        jobs = list(zip((str(s) for s in batch["input"]), (str(d) for d in batch["output"]), strict=True))
        rows = colorize_jobs(self.pipe, jobs, self.source, self.target)
        for row in rows:
            row["worker"] = self.worker
        return {k: np.asarray([r[k] for r in rows]) for k in ROW_FIELDS}


def colorize_jobs(pipe: Pipeline, jobs: Sequence[tuple[str, str]], source: Store, target: Store) -> list[Row]:
    """(input, planned output) pairs -> one row each; every failure is recorded in its row, none raised."""
    rows: dict[str, Row] = {}
    loaded: list[tuple[str, str, LoadedImage, float]] = []
    for src, dst in jobs:
        t0 = time.perf_counter()
        try:
            loaded.append((src, dst, source.load(src), time.perf_counter() - t0))
        except ImageLoadError as err:
            rows[src] = _row(src, error=str(err), seconds=time.perf_counter() - t0)
        except Exception as err:  # a decoder bug on a malformed file (struct.error, IndexError…): that file's row
            rows[src] = _row(src, error=f"{src}: cannot decode ({type(err).__name__}: {err})",
                             seconds=time.perf_counter() - t0)
    results = pipe.colorize_each([im for _, _, im, _ in loaded])
    for (src, dst, im, t_load), res in zip(loaded, results, strict=True):
        if isinstance(res, BaseException):
            rows[src] = _row(src, error=f"{src}: colourisation failed ({type(res).__name__}: {res})", seconds=t_load)
            continue
        t0 = time.perf_counter()
        seconds = t_load + sum(res.seconds.values())
        try:
            if target.exists(dst):  # appeared since planning (another job?): never overwrite it
                raise FileExistsError(f"{dst} appeared after planning; re-run to pick the next free name")
            target.save(to_pil(res.rgb, im.alpha), dst)
        except (OSError, ValueError) as err:
            rows[src] = _row(src, error=f"{src}: cannot write output ({err})", seconds=seconds)
            continue
        rows[src] = _row(src, dst, seconds=seconds + time.perf_counter() - t0, experts="+".join(sorted(res.boxes)))
    return [rows[src] for src, _ in jobs]


def _row(src: str, output: str = "", error: str = "", seconds: float = 0.0, experts: str = "") -> Row:
    return {"input": src, "output": output, "status": "error" if error else "ok",
            "error": " ".join(error.split()), "seconds": round(seconds, 4), "experts": experts, "worker": "",
            "finished": _now(timespec="milliseconds")}


def _now(timespec: str = "seconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------- manifest
def read_manifest(target: Store) -> dict[str, Row]:
    """Earlier runs' rows by input location (empty when there is no manifest yet)."""
    data = target.read_bytes(target.child(MANIFEST_NAME))
    if data is None:
        return {}
    reader = csv.DictReader(_io.StringIO(data.decode("utf-8")))
    if not {"input", "output", "status"} <= set(reader.fieldnames or ()):
        raise ValueError(f"{target.child(MANIFEST_NAME)}: not a batch manifest (needs input, output, status columns)")
    return {row["input"]: {k: row.get(k) or "" for k in MANIFEST_FIELDS} for row in reader}


def write_manifest(target: Store, rows: dict[str, Row]) -> None:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[k] for k in sorted(rows))
    target.write_bytes(target.child(MANIFEST_NAME), buf.getvalue().encode("utf-8"))


def merge_row(manifest: dict[str, Row], row: Row, run: str) -> None:
    """Record one attempt; the input's earlier row is replaced, its attempt count carried on."""
    previous = manifest.get(row["input"], {})
    manifest[row["input"]] = {**row, "run": run, "attempts": int(previous.get("attempts") or 0) + 1}


# ---------------------------------------------------------------------------------------------- planning
def plan_jobs(inputs: Sequence[str], manifest: dict[str, Row], target: Store, fmt: str | None
              ) -> tuple[list[tuple[str, str]], int]:
    """(input, output) pairs still to do, and how many inputs were skipped as done.

    Done = ``ok`` in the manifest with its output still in OUTPUT. Our own recorded outputs are never
    inputs (OUTPUT inside INPUT). Names follow the CLI's :func:`~ensemble_color.naming.output_name` against
    OUTPUT's listing plus the names planned so far, so nothing existing is ever replaced.
    """
    present = target.names()
    done = {i for i, r in manifest.items() if r["status"] == "ok" and PurePath(r["output"]).name in present}
    ours = {r["output"] for r in manifest.values() if r["output"]}
    taken = set(present)
    jobs, skipped = [], 0
    for src in inputs:
        if src in done or src in ours:
            skipped += 1
            continue
        name = output_name(PurePath(src), OUTPUT_TAG, fmt, taken.__contains__)
        taken.add(name)
        jobs.append((src, target.child(name)))
    return jobs, skipped


# ---------------------------------------------------------------------------------------------- engines
@dataclass(frozen=True)
class BatchConfig:
    """Where and how to run; the defaults run in-process (no Ray)."""

    engine: str = "local"             #: a key of :data:`ENGINES`
    address: str | None = None        #: Ray address ("auto", "ray://head:10001", "local"); None = ray.init's rule
    workers: int = 1                  #: Ray actors, each holding one Pipeline
    cpus_per_worker: float = 1.0      #: Ray reserves these per actor (and sets its OMP threads to match)
    gpus_per_worker: float = 0.0      #: e.g. 1, or 0.5 to share a GPU between two actors
    batch_size: int = 4               #: images per colorize_batch call (and per Ray batch)
    recursive: bool = False           #: descend into sub-folders of INPUT
    fmt: str | None = None            #: output format; None = the input's (CLI rule)
    checkpoint_seconds: float = 30.0  #: rewrite the manifest at least this often while running
    pipeline: PipelineSpec = field(default_factory=PipelineSpec)


Jobs = Sequence[tuple[str, str]]
Engine = Callable[[Jobs, Store, Store, BatchConfig], Iterator[Row]]


def _batches(jobs: Jobs, size: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(jobs), max(1, size)):
        chunk = jobs[start:start + max(1, size)]
        yield {"input": np.asarray([s for s, _ in chunk]), "output": np.asarray([d for _, d in chunk])}


def _rows(columns: dict[str, np.ndarray]) -> Iterator[Row]:
    for i in range(len(columns["input"])):
        yield {k: columns[k][i].item() for k in ROW_FIELDS}


def run_local(jobs: Jobs, source: Store, target: Store, config: BatchConfig) -> Iterator[Row]:
    """The same :class:`ColorizeBatch` as the Ray actors, called in this process."""
    worker = ColorizeBatch(config.pipeline, source, target)
    for batch in _batches(jobs, config.batch_size):
        yield from _rows(worker(batch))


def run_ray(jobs: Jobs, source: Store, target: Store, config: BatchConfig) -> Iterator[Row]:
    """``map_batches`` over a fixed pool of ``workers`` actors; rows stream back as batches finish.
    Uses the Ray instance already initialised in this process, else starts/joins one (and shuts it down)."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise ImportError(f"--engine ray needs Ray ({SCALE_HINT})") from err
    config.pipeline.load()  # fail here, once, on a bad option, rather than in every actor's constructor
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=config.address, include_dashboard=False)
    try:
        need, have = config.workers * config.cpus_per_worker, ray.cluster_resources().get("CPU", 0.0)
        if need > have:
            warnings.warn(f"{config.workers} worker(s) × {config.cpus_per_worker} CPU need {need:g} CPUs, the Ray "
                          f"cluster has {have:g}: actors will wait for an autoscaler", stacklevel=2)
        resources = {"num_gpus": config.gpus_per_worker} if config.gpus_per_worker > 0 else {}
        ds = ray.data.from_items([{"input": s, "output": d} for s, d in jobs])
        ds = ds.map_batches(ColorizeBatch, fn_constructor_kwargs={"spec": config.pipeline, "source": source,
                                                                  "target": target},
                            batch_size=config.batch_size, batch_format="numpy",
                            compute=ray.data.ActorPoolStrategy(size=config.workers),
                            num_cpus=config.cpus_per_worker, **resources)
        for row in ds.iter_rows():
            yield {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in ROW_FIELDS}
    finally:
        if owned:
            ray.shutdown()


#: engine name -> runner; both turn the same jobs into the same rows with the same ColorizeBatch
ENGINES: dict[str, Engine] = {"local": run_local, "ray": run_ray}


# ---------------------------------------------------------------------------------------------- the job
@dataclass
class BatchSummary:
    """What one run did; ``errors`` are this run's one-line ``<file>: <reason>`` messages."""

    manifest: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def run_batch(input: str, output: str, config: BatchConfig | None = None,
              on_row: Callable[[Row], None] | None = None) -> BatchSummary:
    """Colourise every image under ``input`` into ``output`` (local paths or pyarrow URIs), idempotently.

    Inputs done by an earlier run are skipped, failures are rows in ``output/manifest.csv`` (retried on the
    next run), never exceptions. Raises only for a job that cannot start (no such INPUT, bad options,
    unknown engine, Ray absent or unreachable). ``on_row`` sees each finished row (progress bars).
    """
    config = config or BatchConfig()
    if config.engine not in ENGINES:
        raise ValueError(f"unknown engine {config.engine!r}; choose from {', '.join(ENGINES)}")
    t0 = time.perf_counter()
    source, target = open_store(input), open_store(output)
    inputs = source.list_images(config.recursive)
    target.make_root()
    manifest = read_manifest(target)
    jobs, skipped = plan_jobs(inputs, manifest, target, config.fmt)
    summary = BatchSummary(manifest=target.child(MANIFEST_NAME), skipped=skipped)
    if jobs:
        _record(ENGINES[config.engine](jobs, source, target, config), manifest, target, summary, config, on_row)
    summary.seconds = time.perf_counter() - t0
    return summary


def _record(rows: Iterable[Row], manifest: dict[str, Row], target: Store, summary: BatchSummary,
            config: BatchConfig, on_row: Callable[[Row], None] | None) -> None:
    """Merge streamed rows into the manifest; write it periodically and, whatever happens, at the end."""
    run = _now()
    last_write, merged = time.monotonic(), 0
    try:
        for row in rows:
            merge_row(manifest, row, run)
            merged += 1
            if row["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
                summary.errors.append(row["error"])
            if on_row is not None:
                on_row(row)
            if time.monotonic() - last_write > config.checkpoint_seconds:
                write_manifest(target, manifest)
                last_write = time.monotonic()
    finally:
        if merged:  # also after a crash or Ctrl-C: what finished is recorded, so a re-run skips it
            write_manifest(target, manifest)
