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
import csv
import io as _io
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Protocol

import numpy as np
from PIL import Image

from .cli import expand_inputs, is_input_image, output_name
from .composite import SUBJECT_CONTEXT_RAMP
from .io import (
    ImageLoadError,
    LoadedImage,
    atomic_write_bytes,
    encode_image,
    load_image,
    read_image,
    save_image,
    to_pil,
)
from .pipeline import Pipeline, PipelineOptions
from .threads import configure_threads

MANIFEST_NAME = "manifest.csv"
OUTPUT_TAG = "_colorized"
#: what a worker reports per image (``finished``: UTC, when the worker was done with it); the driver adds
#: ``run`` (when that run started) and ``attempts``
ROW_FIELDS = ("input", "output", "status", "error", "seconds", "experts", "worker", "finished")
MANIFEST_FIELDS = (*ROW_FIELDS, "run", "attempts")
SCALE_HINT = "pip install 'ensemble_color[scale]'"

Row = dict[str, Any]


# ---------------------------------------------------------------------------------------------- storage
class Store(Protocol):
    """A folder of files named by *locations* (a local path, or a URI) — what inputs and outputs live in."""

    root: str

    def list_images(self, recursive: bool) -> list[str]: ...
    def names(self) -> set[str]: ...
    def child(self, name: str) -> str: ...
    def exists(self, location: str) -> bool: ...
    def load(self, location: str) -> LoadedImage: ...
    def save(self, image: Image.Image, location: str) -> None: ...
    def read_bytes(self, location: str) -> bytes | None: ...
    def write_bytes(self, location: str, data: bytes) -> None: ...
    def make_root(self) -> None: ...


@dataclass(frozen=True)
class LocalStore:
    """A local (or shared-mounted) folder, through the very functions the CLI uses: same listing, same
    load errors, same atomic save."""

    root: str

    def list_images(self, recursive: bool) -> list[str]:
        files, errors = expand_inputs([self.root], recursive)
        if errors:
            raise FileNotFoundError(errors[0])
        # stills only, as for URIs: the CLI's folder listing also holds videos and animations, which batch
        # does not colourise (a single INPUT file is taken as given)
        single = Path(self.root).is_file()
        return [str(f.absolute()) for f in files if single or is_input_image(f)]

    def names(self) -> set[str]:
        folder = Path(self.root)
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()

    def child(self, name: str) -> str:
        return str(Path(self.root) / name)

    def exists(self, location: str) -> bool:
        return Path(location).exists()

    def load(self, location: str) -> LoadedImage:
        return load_image(location)

    def save(self, image: Image.Image, location: str) -> None:
        save_image(image, location)

    def read_bytes(self, location: str) -> bytes | None:
        path = Path(location)
        return path.read_bytes() if path.exists() else None

    def write_bytes(self, location: str, data: bytes) -> None:
        atomic_write_bytes(location, data)

    def make_root(self) -> None:
        Path(self.root).mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class ArrowStore:
    """A folder on any pyarrow filesystem (``s3://``, ``gs://``, ``hdfs://``, ``file://``…). Locations are
    ``root`` + relative path, so the manifest names files the way the user named the folder."""

    root: str     #: the URI as given, without query and trailing slash
    base: str     #: the same folder as a path of ``fs``
    fs: Any       #: a ``pyarrow.fs.FileSystem`` (picklable: travels to Ray actors)

    @classmethod
    def from_uri(cls, uri: str) -> ArrowStore:
        try:
            from pyarrow import fs as pafs
        except ImportError as err:
            raise ImportError(f"{uri}: filesystem URIs need pyarrow ({SCALE_HINT})") from err
        filesystem, base = pafs.FileSystem.from_uri(uri)
        return cls(root=uri.split("?", 1)[0].rstrip("/"), base=base.rstrip("/"), fs=filesystem)

    def _path(self, location: str) -> str:
        return self.base + location[len(self.root):]

    def _location(self, path: str) -> str:
        return self.root + path[len(self.base):]

    def _type(self, location: str) -> Any:
        return self.fs.get_file_info(self._path(location)).type

    def list_images(self, recursive: bool) -> list[str]:
        from pyarrow import fs as pafs

        kind = self._type(self.root)
        if kind == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{self.root}: no such file or folder")
        if kind == pafs.FileType.File:
            return [self.root]
        infos = self.fs.get_file_info(pafs.FileSelector(self.base, recursive=recursive))
        paths = [i.path for i in infos if i.type == pafs.FileType.File and is_input_image(PurePosixPath(i.path))]
        return [self._location(p) for p in sorted(paths, key=PurePosixPath)]  # the CLI's (Path) order

    def names(self) -> set[str]:
        from pyarrow import fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        return {i.base_name for i in infos}

    def child(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, location: str) -> bool:
        from pyarrow import fs as pafs

        return self._type(location) != pafs.FileType.NotFound

    def load(self, location: str) -> LoadedImage:
        try:
            data = self.read_bytes(location)
        except OSError as err:  # network, permissions: this file's failure, told like load_image's
            raise ImageLoadError(f"{location}: cannot read ({err})") from None
        if data is None:
            raise ImageLoadError(f"{location}: no such file")
        return read_image(_io.BytesIO(data), location)

    def save(self, image: Image.Image, location: str) -> None:
        self.write_bytes(location, encode_image(image, PurePosixPath(location).name))

    def read_bytes(self, location: str) -> bytes | None:
        if not self.exists(location):
            return None
        with self.fs.open_input_stream(self._path(location)) as f:
            return f.read()

    def write_bytes(self, location: str, data: bytes) -> None:
        """Temporary sibling + move: a local or HDFS rename is atomic, an object store's copy appears whole."""
        from pyarrow import fs as pafs

        path = PurePosixPath(self._path(location))
        tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, str(path))
        except BaseException:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:  # clean up, then report the error
                self.fs.delete_file(tmp)
            raise

    def make_root(self) -> None:
        self.fs.create_dir(self.base, recursive=True)


def open_store(location: str) -> Store:
    """A URI (``scheme://…``) goes through pyarrow; anything else is a local path."""
    return ArrowStore.from_uri(location) if "://" in location else LocalStore(str(Path(location).absolute()))


# ---------------------------------------------------------------------------------------------- workers
@dataclass(frozen=True)
class PipelineSpec:
    """How each worker builds its Pipeline: plain, picklable data (models are loaded where they run)."""

    experts_dirs: tuple[str, ...] = ()
    router: str = "embedded"
    device: str = "auto"
    only: tuple[str, ...] | None = None
    options: PipelineOptions | None = None
    router_options: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Pipeline:
        return Pipeline.load(self.experts_dirs, router=self.router, device=self.device, options=self.options,
                             enabled=self.only, router_options=self.router_options)


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
    inputs (OUTPUT inside INPUT). Names follow the CLI's :func:`~ensemble_color.cli.output_name` against
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


# ---------------------------------------------------------------------------------------------- CLI
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
    p.add_argument("--size", type=int, help="working resolution: long side in pixels")
    p.add_argument("--saturation", type=float, help="chroma multiplier (1 = as predicted)")
    p.add_argument("--main-subject", action="store_true", help="photos of one subject (see the main command)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], help="as in the main command (default: torch)")
    p.add_argument("--router-backend", choices=["auto", "torch", "onnxruntime"],
                   help="as in the main command (default: auto)")
    p.add_argument("--router", default="embedded", help="as in the main command")
    p.add_argument("--experts", action="append", default=[], metavar="DIR", help="extra plugin folder")
    p.add_argument("--only", nargs="+", metavar="NAME", help="use only these experts")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, e.g. on a GPU actor), cpu, cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="--engine local: CPU threads (default: the cores free of other work, as the main command)")
    return p


def config_from_args(args: argparse.Namespace) -> BatchConfig:
    """Command-line flags -> :class:`BatchConfig` (pipeline options only where given, as in the CLI)."""
    overrides = {k: v for k, v in {"work_size": args.size, "saturation": args.saturation,
                                   "context": SUBJECT_CONTEXT_RAMP if args.main_subject else None,
                                   "backend": args.backend, "router_backend": args.router_backend}.items()
                 if v is not None}
    if args.engine == "ray":  # one thread per core of the node would oversubscribe a shared node
        if args.backend == "onnxruntime":
            overrides["threads"] = max(1, round(args.cpus_per_worker))
    else:  # this process: the cores free of other work (torch's and onnxruntime's pools alike)
        overrides["threads"] = configure_threads(args.threads)
    spec = PipelineSpec(experts_dirs=tuple(args.experts), router=args.router, device=args.device,
                        only=tuple(args.only) if args.only else None,
                        options=PipelineOptions(**overrides) if overrides else None)
    return BatchConfig(engine=args.engine, address=args.address, workers=args.workers,
                       cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                       batch_size=args.batch_size, recursive=args.recursive, fmt=args.format, pipeline=spec)


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
