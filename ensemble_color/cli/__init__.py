"""Command line: ``python -m ensemble_color photo.jpg`` plus ``train``, ``evaluate``, ``serve``, ``batch``, ``data``
and ``export``.

Argument parsing and file handling only; the work is done by :class:`ensemble_color.pipeline.Pipeline`
and the train/evaluate modules. Bad inputs produce one ``error: <file>: <reason>`` line each, the
good ones are still written, and the exit code is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from PIL import Image

from ..options import add_pipeline_arguments
from .colorize import colorize_files, list_experts
from .commands import (
    _data_main,
    _evaluate_main,
    _export_main,
    _serve_main,
    _train_main,
    evaluate_parser,
    train_parser,
)

__all__ = ["build_parser", "evaluate_parser", "main", "train_parser"]

SUBCOMMANDS = ("train", "evaluate", "serve", "batch", "export")


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
    add_pipeline_arguments(p)
    p.add_argument("--hint", action="append", default=[], metavar="X,Y=#RRGGBB[:R]",
                   help="a colour you know, at pixel (X, Y) of the photo (radius R px, default 3); it spreads "
                        "through the object it touches and stops at its edges; repeatable")
    p.add_argument("--hints", metavar="FILE.json", help="hints from a file (as written by --save-hints)")
    p.add_argument("--save-hints", action="store_true",
                   help="also write {stem}_hints.json beside the output: the hints used, to load again with --hints")
    p.add_argument("--save-masks", action="store_true", help="also write {stem}_routing.png (routing overlay)")
    p.add_argument("--per-expert", action="store_true", help="also write each expert's own colourisation")
    p.add_argument("--batch-size", type=int, default=4, help="images (or video frames) colourised together")
    p.add_argument("--no-stabilize", action="store_true",
                   help="videos: colour every frame on its own (default: colour carried along motion, less flicker)")
    p.add_argument("--list-experts", action="store_true", help="list plugins found / skipped and exit")
    return p


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
        from .. import batch

        return batch.main(argv[1:])
    if argv and argv[0] == "data":
        return _data_main(argv[1:])
    if argv and argv[0] == "export":
        return _export_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.list_experts:
        return list_experts(args)
    if args.decode == ["list"]:
        from ..nets.multihead_unet import DECODINGS

        print("\n".join(f"{name}: {kw}" for name, kw in DECODINGS.items()))
        return 0
    if not args.inputs:
        build_parser().print_usage(sys.stderr)
        print("error: give at least one image, folder or pattern (or --list-experts)", file=sys.stderr)
        return 2
    return colorize_files(args)
