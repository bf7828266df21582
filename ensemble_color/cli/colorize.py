"""The main command's work: colour files, folders and patterns (stills, videos, animations); list the experts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..hints import Hint, HintError, load_hints, save_hints
from ..io import ImageLoadError, LoadedImage, load_image, save_image, to_pil
from ..naming import expand_inputs, output_path
from ..options import named_experts, options_from_args
from ..threads import configure_threads
from ..video import is_frame_sequence

if TYPE_CHECKING:
    from ..pipeline import ColorizeResult, Pipeline


def list_experts(args: argparse.Namespace) -> int:
    """``--list-experts``: what was found, what was skipped and why, and who colours each route class *as the
    pipeline would* (its default assignment, the generalist on the background, plus any ``--assign``)."""
    from ..backends.ort import is_onnx_router_folder, onnx_router
    from ..composite import ExpertRoute, served_by
    from ..plugins import discover, expert_search_path
    from ..routing import RoutingTable, load_router

    table = RoutingTable.load()
    scan = discover(expert_search_path(args.experts), table.known_classes())
    if is_onnx_router_folder(args.router):  # an exported router: its classes come from the table's backend
        router = onnx_router(args.router, table)
    else:
        router = load_router(args.router, table, generalist=None) if args.router != "generalist" else None
    predicted = set(router.route_classes) if router is not None else set(table.classes_of("ensemble"))
    print(f"router: {args.router}  (predicts: {', '.join(sorted(predicted))})")
    print("experts:")
    for name, spec in scan.experts.items():
        routes = ", ".join(spec.routes) or "-"
        note = "  [fallback: colours every unclaimed class]" if spec.fallback else ""
        if "onnx" in spec.formats:
            note += "  [model.onnx" + ("]" if "torch" in spec.backends else " only: runs on onnxruntime]")
        missing = [r for r in spec.routes if r not in predicted]
        if missing:
            note += f"  [no router predicts this class: {', '.join(missing)}]"
        print(f"  {name:<12} routes: {routes:<20} {spec.architecture:<16} {spec.folder}{note}")
    for name, old, new in scan.overridden:
        print(f"  overridden: {name} from {old} by {new}")
    for folder, reason in scan.skipped:
        print(f"  skipped: {folder}: {reason}")
    if scan.experts:
        routes = [ExpertRoute(s.name, s.routes, s.fallback) for s in scan.experts.values()]
        try:
            _, options = options_from_args(args)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        installed = {n: e for n, e in options.assign.items() if all(x in scan.experts for x in e)}
        served = served_by(sorted(predicted), routes, installed)
        print("routing: " + "; ".join(f"{c} → {e}" for c, e in served.items()))
    return 0


def colorize_files(args: argparse.Namespace) -> int:
    """The main command: colour every input (stills in batches, then videos and animations); 1 if any failed."""
    from tqdm import tqdm

    files, errors = expand_inputs(args.inputs, args.recursive)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not files:
        print("error: no input images", file=sys.stderr)
        return 1
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        hints = [*(load_hints(args.hints) if args.hints else []), *(Hint.parse(h) for h in args.hint)]
    except HintError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    pipe = load_pipeline(args)
    if pipe is None:
        return 1
    protected = {f.resolve() for f in files}
    failed = len(errors)
    moving = {f: is_frame_sequence(f) for f in files}  # videos and animated images go frame by frame
    images, sequences = [f for f in files if not moving[f]], [f for f in files if moving[f]]
    bar = tqdm(total=len(images), unit="img", disable=len(images) < 2, file=sys.stderr)
    for start in range(0, len(images), max(1, args.batch_size)):
        batch = []
        for f in images[start:start + args.batch_size]:
            try:
                im = load_image(f)
            except ImageLoadError as err:
                print(f"error: {err}", file=sys.stderr)
                failed += 1
                bar.update(1)
                continue
            if im.was_color:
                bar.write(f"note: {f} is a colour image; only its lightness (L) is used", file=sys.stderr)
            batch.append((f, im))
        results = pipe.colorize_each([im for _, im in batch], per_expert=args.per_expert, hints=hints)
        for (f, im), res in zip(batch, results, strict=True):
            failed += not _write_outputs(f, im, res, out_dir, args, protected, bar.write, hints)
            bar.update(1)
    bar.close()
    failed += colorize_sequences(pipe, sequences, out_dir, args, protected)
    if failed:
        print(f"{failed} of {len(files) + len(errors)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def load_pipeline(args: argparse.Namespace) -> Pipeline | None:
    """The pipeline the flags describe (threads: the cores free of other work unless ``--threads``), or None
    after a one-line error (bad flag value, unknown or uninstalled expert, unloadable router)."""
    from ..pipeline import Pipeline

    try:
        load, options = options_from_args(args, threads=configure_threads(args.threads))
        pipe = Pipeline.load(load=load)
        if unknown := named_experts(load, options) - set(pipe.experts):
            raise ValueError(f"--assign/--decode name expert(s) {sorted(unknown)} that are not installed; "
                             f"installed: {sorted(pipe.experts)}")
        return pipe.with_options(**{f.name: getattr(options, f.name) for f in fields(options)})
    except (ValueError, KeyError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _write_outputs(f: Path, im: LoadedImage, res: ColorizeResult | Exception, out_dir: Path | None,
                   args: argparse.Namespace, protected: set[Path], say: Callable[..., None],
                   hints: Sequence[Hint] = ()) -> bool:
    """Write one photo's outputs (colourised, routing overlay, per-expert); False after its one error line."""
    from ..visualize import routing_overlay

    if isinstance(res, Exception):
        print(f"error: {f}: cannot colourise ({type(res).__name__}: {res})", file=sys.stderr)
        return False
    try:
        dst = output_path(f, out_dir, "_colorized", args.format, args.overwrite, protected)
        save_image(to_pil(res.rgb, im.alpha), dst)
        written = [dst]
        if args.save_hints:
            written.append(output_path(f, out_dir, "_hints", "json", args.overwrite, protected))
            save_hints(written[-1], hints, im.size)
        if args.save_masks:
            ov = routing_overlay(res.L_work, res.probs, res.route_classes)
            written.append(output_path(f, out_dir, "_routing", "png", args.overwrite, protected))
            save_image(to_pil(ov), written[-1])
        for name, rgb in res.per_expert.items():
            written.append(output_path(f, out_dir, f"_colorized_{name}", "png", args.overwrite, protected))
            save_image(to_pil(rgb), written[-1])
    except (OSError, ValueError) as err:
        print(f"error: {f}: cannot write output ({err})", file=sys.stderr)
        return False
    say(f"{f} -> {', '.join(map(str, written))}", file=sys.stderr)
    return True


def colorize_sequences(pipe: Pipeline, files: Sequence[Path], out_dir: Path | None, args: argparse.Namespace,
                       protected: set[Path]) -> int:
    """Videos and animated images, one at a time with a progress bar in frames; returns how many failed.

    Same rules as stills: one ``error: <file>: <reason>`` line per bad input, outputs named by
    :func:`output_path` (videos keep their container when it can be written, else .mp4), written atomically.
    """
    from tqdm import tqdm

    from ..video import VideoError, colorize_sequence, output_suffix

    failed = 0
    for src in files:
        dst = output_path(src, out_dir, "_colorized", output_suffix(src)[1:], args.overwrite, protected)
        with tqdm(unit="frame", desc=src.name, file=sys.stderr, leave=False) as bar:
            try:
                report = colorize_sequence(pipe, src, dst, stabilize=not args.no_stabilize,
                                           batch_size=max(1, args.batch_size), progress=_frame_progress(bar))
            except VideoError as err:
                bar.write(f"error: {err}", file=sys.stderr)
                failed += 1
                continue
            except (OSError, ValueError) as err:
                bar.write(f"error: {src}: cannot write output ({err})", file=sys.stderr)
                failed += 1
                continue
            except Exception as err:  # e.g. cv2.error on a malformed stream: this file's error
                bar.write(f"error: {src}: cannot colourise ({type(err).__name__}: {err})", file=sys.stderr)
                failed += 1
                continue
        for note in report.notes:
            print(f"note: {src}: {note}", file=sys.stderr)
        if report.audio.startswith("dropped"):
            print(f"note: {src}: audio {report.audio}", file=sys.stderr)
        cuts = f", carried colour reset at {len(report.cuts)} scene cut(s)" if report.stabilized else ""
        print(f"{src} -> {dst} ({report.frames} frames, {report.width}x{report.height} at {report.fps:.3g} fps"
              f"{cuts}; audio {report.audio.split(' (')[0]})", file=sys.stderr)
    return failed


def _frame_progress(bar) -> Callable[[int, int], None]:
    """The video module's ``progress(done, total)`` driving a tqdm bar (no total when the container has none)."""
    def update(done: int, total: int) -> None:
        bar.total = total if total >= done else None
        bar.update(done - bar.n)
    return update
