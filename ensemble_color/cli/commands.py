"""The other commands: ``train``, ``evaluate``, ``data``, ``serve``, ``export`` (each imports its module lazily:
``python -m ensemble_color photo.jpg`` never loads the trainers)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType


def _trainers() -> dict[str, tuple[ModuleType, str]]:
    """``train`` subcommand -> (its module, help); imported on use (the trainers pull in the train extra)."""
    from ..train import distill, expert, generalist, loop, pseudo_masks, router, soup

    return {"expert": (expert, "a resnet18-deconv specialist"),
            "router": (router, "the grayscale segmenter that routes pixels to experts"),
            "generalist": (generalist, "the multi-head U-Net generalist on an ImageNet encoder"),
            "distill": (distill, "the grayscale ResNet-18 trunk distilled from ImageNet EfficientNet-Lite"),
            "compact": (loop, "shrink runs' checkpoint.pt to committable fp16 resume points"),
            "soup": (soup, "interpolate the weights of a model and its fine-tuned copy (WiSE-FT)"),
            "pseudo-masks": (pseudo_masks, "person masks for unmasked photos from a router's confident pixels")}


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
    from ..eval import generalist as generalist_eval
    from ..eval import router as router_eval

    return {"router": router_eval, "generalist": generalist_eval}.get(argv[0]) if argv else None


def evaluate_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser ``ensemble_color evaluate ARGV`` uses and the arguments it parses; builds no model, so the
    recipes in ``scripts/`` can be checked against it (``tests/test_recipes.py``)."""
    if report := _evaluate_report(argv):
        parser = argparse.ArgumentParser(prog=f"ensemble_color evaluate {argv[0]}")
        report.add_eval_arguments(parser)
        return parser, list(argv[1:])
    from ..eval import evaluate

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
    from ..eval import evaluate

    return evaluate.run(args, argv)


def _data_main(argv: list[str]) -> int:
    from ..data import roots

    parser = argparse.ArgumentParser(prog="ensemble_color data", description="Inspect training data packs.")
    sub = parser.add_subparsers(dest="what", required=True)
    roots.add_summary_arguments(sub.add_parser("summary", help="images and masks per category/split/source"))
    return roots.run_summary(parser.parse_args(argv))


def _serve_main(argv: list[str]) -> int:
    from .. import app

    parser = argparse.ArgumentParser(prog="ensemble_color serve", description="Start the web demo.")
    app.add_serve_arguments(parser)
    return app.serve(parser.parse_args(argv))


def _export_main(argv: list[str]) -> int:
    from .. import export

    parser = argparse.ArgumentParser(prog="ensemble_color export",
                                     description="Export the router and every expert (ONNX, dynamic H and W).")
    export.add_arguments(parser)
    try:
        return export.run(parser.parse_args(argv))
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
