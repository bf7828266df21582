"""Command line: ``python -m ensemble_color photo.jpg`` plus ``train``, ``evaluate`` and ``serve``.

Argument parsing and file handling only; the work is done by :class:`ensemble_color.pipeline.Pipeline`
and the train/evaluate modules. Bad inputs produce one ``error: <file>: <reason>`` line each, the
good ones are still written, and the exit code is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import glob
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from PIL import Image

from .composite import DECODE_ALONE, SUBJECT_CONTEXT_RAMP
from .io import ImageLoadError, load_image, save_image, to_pil
from .threads import configure_threads
from .train.data import IMAGE_SUFFIXES
from .video import ANIMATION_SUFFIXES, VIDEO_SUFFIXES, is_frame_sequence

if TYPE_CHECKING:
    from types import ModuleType

    from .pipeline import Pipeline

SUBCOMMANDS = ("train", "evaluate", "serve", "batch", "export")
OUTPUT_TAGS = ("_colorized", "_routing")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ensemble_color",
        description="Colourise grayscale photos with a routed ensemble of expert models. "
                    "Other commands: 'ensemble_color train|evaluate|serve|batch|export --help'.")
    p.add_argument("inputs", nargs="*", help="image or video files (animated GIFs too), folders or glob patterns")
    p.add_argument("-o", "--output", help="output folder (default: next to each input)")
    p.add_argument("--format", choices=["png", "jpg", "webp", "tif"],
                   help="output format of still images (default: the input's; videos and animations keep theirs)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier outputs (inputs are never replaced)")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 …")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="run the router and experts in torch or onnxruntime (faster on CPU; needs the 'onnx' "
                        "extra; converts in memory unless the plugins ship model.onnx, see 'export onnx')")
    p.add_argument("--router-backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="where the router's segmenter runs; auto (default): onnxruntime on CPU when installed "
                        "(about 2x faster there), else as --backend")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and each onnxruntime session (default: the cores this process may "
                        "use less those other processes keep busy)")
    p.add_argument("--size", type=int, default=None, help="working resolution: long side in pixels")
    p.add_argument("--saturation", type=float, default=None, help="chroma multiplier (1 = as predicted)")
    p.add_argument("--router", default="embedded", help="embedded | background | generalist | lraspp | "
                   "deeplabv3 (online weights) | path to an smp checkpoint folder")
    p.add_argument("--temperature", type=float, default=None, help="router softmax temperature (>1 softer)")
    p.add_argument("--experts", action="append", default=[], metavar="DIR",
                   help="extra plugin folder (repeatable; after $ENSEMBLE_COLOR_EXPERTS, later wins)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="use only these experts")
    p.add_argument("--assign", action="append", default=[], metavar="CLASS=EXPERT[+EXPERT]",
                   help="colour a route class with these experts instead of the ones whose manifests claim it "
                        "(e.g. background=scenes+generalist); repeatable")
    p.add_argument("--decode", action="append", default=[], metavar="EXPERT=DECODING",
                   help="decode a multi-head expert so in the blend (e.g. 'generalist=regression x1.5'; default "
                        "'generalist=blend 0.75 soft', docs/tuning.md); `--decode list` prints the decodings. A "
                        "photo it colours (nearly) alone decodes as its manifest says, unless --decode-alone blend")
    p.add_argument("--decode-alone", choices=DECODE_ALONE, default=None,
                   help="how an expert colouring a photo alone decodes: as its manifest says (default, "
                        "docs/tuning_alone_share.md) or as in the blend (--decode)")
    p.add_argument("--alone-share", type=float, default=None, metavar="S",
                   help="an expert colours a photo alone when it carries at least this share of it (0-1]; "
                        "default 0.9, 1 = only when no other expert has a region")
    subject = p.add_mutually_exclusive_group()
    subject.add_argument("--context", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                         help="let subjects' experts also colour the background when the subjects fill more "
                              f"than LO of the frame (all of it from HI); default {SUBJECT_CONTEXT_RAMP[0]} "
                              f"{SUBJECT_CONTEXT_RAMP[1]} (docs/tuning.md)")
    subject.add_argument("--main-subject", action="store_const", const=SUBJECT_CONTEXT_RAMP, dest="context",
                         help=f"photos of one bird, animal or person: same as --context "
                              f"{SUBJECT_CONTEXT_RAMP[0]} {SUBJECT_CONTEXT_RAMP[1]}, the default (the web demo's "
                              f"'One main subject' box)")
    subject.add_argument("--no-context", action="store_const", const=NO_CONTEXT, dest="context",
                         help="the background always goes to its own experts, however large the subjects")
    p.add_argument("--save-masks", action="store_true", help="also write {stem}_routing.png (routing overlay)")
    p.add_argument("--per-expert", action="store_true", help="also write each expert's own colourisation")
    p.add_argument("--batch-size", type=int, default=4, help="images (or video frames) colourised together")
    p.add_argument("--no-stabilize", action="store_true",
                   help="videos: colour every frame on its own (default: colour carried along motion, less flicker)")
    p.add_argument("--list-experts", action="store_true", help="list plugins found / skipped and exit")
    return p


def expand_inputs(items: Iterable[str], recursive: bool) -> tuple[list[Path], list[str]]:
    """Files from files/folders/globs (sorted, de-duplicated) and errors for arguments matching nothing."""
    files: list[Path] = []
    errors: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in (path.rglob("*") if recursive else path.iterdir())
                           if p.is_file() and (is_input_image(p) or is_input_sequence(p)))
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append(f"{item}: pattern matches no file")
            files.extend(matches)
        else:
            errors.append(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    return unique, errors


def is_input_image(path: PurePath) -> bool:
    """Whether a file found in a folder is an input: an image, not hidden, not one of our outputs.
    A pure name test, so ``batch`` applies the same rule to remote (pyarrow filesystem) listings."""
    return (path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.endswith(OUTPUT_TAGS)
            and not path.name.startswith("."))


def is_input_sequence(path: PurePath) -> bool:
    """Whether a file found in a folder is a video or a (possibly animated) GIF/PNG/WebP, by the naming rules
    of :func:`is_input_image`; GIFs used to be skipped without a word."""
    return (path.suffix.lower() in (*VIDEO_SUFFIXES, *ANIMATION_SUFFIXES) and not path.stem.endswith(OUTPUT_TAGS)
            and not path.name.startswith("."))


#: ``--no-context``: context sharing off (``PipelineOptions.context = None``)
NO_CONTEXT: tuple[float, ...] = ()


def parse_context(values: Sequence[float]) -> tuple[float, float]:
    """``--context LO HI`` -> (lo, hi), checked: 0 <= LO < HI <= 1 (fractions of the frame)."""
    lo, hi = (float(v) for v in values)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"--context needs 0 <= LO < HI <= 1 (fractions of the frame), got {lo} {hi}")
    return lo, hi


def _parse_pairs(items: Iterable[str], flag: str, expected: str) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> ``{KEY: VALUE}`` (stripped); a one-line error naming ``flag`` otherwise."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r}: expected {expected}")
        out[key.strip()] = value.strip()
    return out


def parse_assign(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``["background=scenes+generalist", ...]`` -> ``{"background": ("scenes", "generalist")}``."""
    expected = "CLASS=EXPERT[+EXPERT...]"
    out = {cls: tuple(n.strip() for n in names.split("+") if n.strip())
           for cls, names in _parse_pairs(items, "--assign", expected).items()}
    if empty := [cls for cls, experts in out.items() if not experts]:
        raise ValueError(f"--assign {empty[0]}=…: expected {expected}")
    return out


def parse_decode(items: Iterable[str]) -> dict[str, str]:
    """``["generalist=regression x1.5", ...]`` -> ``{"generalist": "regression x1.5"}`` (names checked on load)."""
    return _parse_pairs(items, "--decode", "EXPERT=DECODING (`--decode list` prints them)")


def output_path(src: Path, out_dir: Path | None, tag: str, fmt: str | None, overwrite: bool,
                protected: set[Path]) -> Path:
    """``{stem}{tag}.{ext}``; never an input file, and never an existing file unless ``overwrite``."""
    folder = out_dir or src.parent
    return folder / output_name(src, tag, fmt, lambda name: (folder / name).resolve() in protected
                                or ((folder / name).exists() and not overwrite))


def output_name(src: PurePath, tag: str, fmt: str | None, taken: Callable[[str], bool]) -> str:
    """``{stem}{tag}.{ext}``, else ``{stem}{tag}_1.{ext}``, ``_2``… until ``taken`` says no: the naming rule
    alone, so ``batch`` can plan names against a folder listing (local or remote) instead of the disk."""
    ext = f".{fmt}" if fmt else (src.suffix.lower() if src.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp",
                                                                               ".tif", ".tiff") else ".png")
    name, n = f"{src.stem}{tag}{ext}", 1
    while taken(name):
        name, n = f"{src.stem}{tag}_{n}{ext}", n + 1
    return name


def list_experts(args: argparse.Namespace) -> int:
    from .composite import ExpertRoute, served_by
    from .onnx_backend import is_onnx_router_folder, onnx_router
    from .plugins import discover, expert_search_path
    from .routing import RoutingTable, load_router

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
        served = served_by(sorted(predicted), routes)
        print("routing: " + "; ".join(f"{c} → {e}" for c, e in served.items()))
    return 0


def colorize_files(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .pipeline import Pipeline, PipelineOptions
    from .visualize import routing_overlay

    files, errors = expand_inputs(args.inputs, args.recursive)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not files:
        print("error: no input images", file=sys.stderr)
        return 1
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    overrides = {k: v for k, v in {"work_size": args.size, "saturation": args.saturation,
                                   "decode_alone": args.decode_alone, "alone_share": args.alone_share}.items()
                 if v is not None}
    try:
        assigned = parse_assign(args.assign)
        if assigned:  # on top of the default assignment (the generalist colours the background)
            overrides["assign"] = {**PipelineOptions().assign, **assigned}
        decodings = parse_decode(args.decode)
        if decodings:  # on top of the default (the generalist's decoding in the blend)
            overrides["decode"] = {**PipelineOptions().decode, **decodings}
        if args.context is NO_CONTEXT:
            overrides["context"] = None
        elif args.context is not None:
            overrides["context"] = parse_context(args.context)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    router_options = {"temperature": args.temperature} if args.temperature is not None else {}
    threads = configure_threads(args.threads)  # never more than the cores free of other work
    try:
        pipe = Pipeline.load(args.experts, router=args.router, device=args.device, enabled=args.only,
                             router_options=router_options,
                             options=PipelineOptions(backend=args.backend, router_backend=args.router_backend,
                                                     threads=threads))
    except (ValueError, KeyError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for flag, named in (("--assign", {n for names in assigned.values() for n in names}), ("--decode", decodings)):
        if unknown := set(named) - set(pipe.experts):
            print(f"error: {flag} names expert(s) {sorted(unknown)} that are not installed; "
                  f"installed: {sorted(pipe.experts)}", file=sys.stderr)
            return 1
    if overrides:
        try:
            pipe = pipe.with_options(**overrides)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
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
        if not batch:
            continue
        results = pipe.colorize_each([im for _, im in batch], per_expert=args.per_expert)
        for (f, im), res in zip(batch, results, strict=True):
            if isinstance(res, Exception):
                print(f"error: {f}: cannot colourise ({type(res).__name__}: {res})", file=sys.stderr)
                failed += 1
                bar.update(1)
                continue
            try:
                dst = output_path(f, out_dir, "_colorized", args.format, args.overwrite, protected)
                save_image(to_pil(res.rgb, im.alpha), dst)
                written = [dst]
                if args.save_masks:
                    ov = routing_overlay(res.L_work, res.probs, res.route_classes)
                    written.append(output_path(f, out_dir, "_routing", "png", args.overwrite, protected))
                    save_image(to_pil(ov), written[-1])
                for name, rgb in res.per_expert.items():
                    written.append(output_path(f, out_dir, f"_colorized_{name}", "png", args.overwrite, protected))
                    save_image(to_pil(rgb), written[-1])
                bar.write(f"{f} -> {', '.join(map(str, written))}", file=sys.stderr)
            except (OSError, ValueError) as err:
                print(f"error: {f}: cannot write output ({err})", file=sys.stderr)
                failed += 1
            bar.update(1)
    bar.close()
    failed += colorize_sequences(pipe, sequences, out_dir, args, protected)
    if failed:
        print(f"{failed} of {len(files) + len(errors)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def colorize_sequences(pipe: Pipeline, files: Sequence[Path], out_dir: Path | None, args: argparse.Namespace,
                       protected: set[Path]) -> int:
    """Videos and animated images, one at a time with a progress bar in frames; returns how many failed.

    Same rules as stills: one ``error: <file>: <reason>`` line per bad input, outputs named by
    :func:`output_path` (videos keep their container when it can be written, else .mp4), written atomically.
    """
    from tqdm import tqdm

    from .video import VideoError, colorize_sequence, output_suffix

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


def _trainers() -> dict[str, tuple[ModuleType, str]]:
    """``train`` subcommand -> (its module, help); imported on use (the trainers pull in the train extra)."""
    from .train import distill, expert, generalist, loop, router

    return {"expert": (expert, "a resnet18-deconv specialist"),
            "router": (router, "the grayscale segmenter that routes pixels to experts"),
            "generalist": (generalist, "the multi-head U-Net generalist on an ImageNet encoder"),
            "distill": (distill, "the grayscale ResNet-18 trunk distilled from ImageNet EfficientNet-Lite"),
            "compact": (loop, "shrink runs' checkpoint.pt to committable fp16 resume points")}


def train_parser() -> argparse.ArgumentParser:
    """The ``ensemble_color train`` parser, every trainer's arguments; builds no model, so the recipes in
    ``scripts/`` can be checked against it (their ``--dry-run`` commands, ``tests/test_recipes.py``)."""
    parser = argparse.ArgumentParser(prog="ensemble_color train", description="Train a model and export it.")
    sub = parser.add_subparsers(dest="what", required=True)
    for name, (module, help_text) in _trainers().items():
        module.add_arguments(sub.add_parser(name, help=help_text))
    return parser


def _train_main(argv: list[str]) -> int:
    args = train_parser().parse_args(argv)
    _trainers()[args.what][0].run(args, argv[1:])
    return 0


def _evaluate_report(argv: Sequence[str]) -> ModuleType | None:
    """The module of ``evaluate router`` / ``evaluate generalist`` (those models' own reports) when ``argv``
    names one, else None (the colourisation evaluation)."""
    from .train import generalist_eval, router_eval

    return {"router": router_eval, "generalist": generalist_eval}.get(argv[0]) if argv else None


def evaluate_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser ``ensemble_color evaluate ARGV`` uses and the arguments it parses; builds no model, so the
    recipes in ``scripts/`` can be checked against it (``tests/test_recipes.py``)."""
    if report := _evaluate_report(argv):
        parser = argparse.ArgumentParser(prog=f"ensemble_color evaluate {argv[0]}")
        report.add_eval_arguments(parser)
        return parser, list(argv[1:])
    from . import evaluate

    parser = argparse.ArgumentParser(prog="ensemble_color evaluate",
                                     description="Measure colourisation quality ('evaluate router' / "
                                                 "'evaluate generalist' for those models' own reports).")
    evaluate.add_arguments(parser)
    return parser, list(argv)


def _evaluate_main(argv: list[str]) -> int:
    parser, rest = evaluate_parser(argv)
    args = parser.parse_args(rest)
    if report := _evaluate_report(argv):
        report.run_eval(args)
        return 0
    from . import evaluate

    return evaluate.run(args, argv)


def _data_main(argv: list[str]) -> int:
    from .train import roots

    parser = argparse.ArgumentParser(prog="ensemble_color data", description="Inspect training data packs.")
    sub = parser.add_subparsers(dest="what", required=True)
    roots.add_summary_arguments(sub.add_parser("summary", help="images and masks per category/split/source"))
    return roots.run_summary(parser.parse_args(argv))


def _serve_main(argv: list[str]) -> int:
    from . import app

    parser = argparse.ArgumentParser(prog="ensemble_color serve", description="Start the web demo.")
    app.add_serve_arguments(parser)
    return app.serve(parser.parse_args(argv))


def _export_main(argv: list[str]) -> int:
    from . import export

    parser = argparse.ArgumentParser(prog="ensemble_color export",
                                     description="Export the router and every expert (ONNX, dynamic H and W).")
    export.add_arguments(parser)
    try:
        return export.run(parser.parse_args(argv))
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Pillow warns of a "decompression bomb" above 89 MP; every reader here refuses files over its own named
    # limit (ensemble_color.limits) before decoding them, so the warning would only repeat the error line.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if argv and argv[0] == "train":
        return _train_main(argv[1:])
    if argv and argv[0] == "evaluate":
        return _evaluate_main(argv[1:])
    if argv and argv[0] == "serve":
        return _serve_main(argv[1:])
    if argv and argv[0] == "batch":
        from . import batch

        return batch.main(argv[1:])
    if argv and argv[0] == "data":
        return _data_main(argv[1:])
    if argv and argv[0] == "export":
        return _export_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list_experts:
        return list_experts(args)
    if args.decode == ["list"]:
        from .nets.multihead_unet import DECODINGS

        print("\n".join(f"{name}: {kw}" for name, kw in DECODINGS.items()))
        return 0
    if not args.inputs:
        build_parser().print_usage(sys.stderr)
        print("error: give at least one image, folder or pattern (or --list-experts)", file=sys.stderr)
        return 2
    return colorize_files(args)
