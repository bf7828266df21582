"""Torch -> ONNX: trace our models into graphs with dynamic batch, height and width, and write plugin folders.

``python -m ensemble_color export onnx OUT_DIR`` writes ``OUT_DIR/router/`` (the smp segmenter *with its
input mapping*: L in Lab units in, label logits out, plus its ``config.json``) and ``OUT_DIR/experts/NAME/``
(``model.onnx`` + ``expert.json``; the generalist with its chosen decoding folded into the graph), each
checked against torch on a probe at a size other than the one traced. Use them with
``--backend onnxruntime --router OUT_DIR/router --experts OUT_DIR/experts``; other ONNX runtimes can run
the graphs without PyTorch.

Only the router's segmenter is exported: its resize, softmax, routing-table matrix and feathering stay in
torch (:class:`~ensemble_color.routing.Router`), so the routing table remains data and one code path
serves both backends.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .backends.onnx_contract import EXPERT_OUTPUT, INPUT, ONNX_FILE, OPSET, ROUTER_OUTPUT
from .io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from .plugins import ExpertSpec
    from .routing import Router

def export_expert_folder(spec: ExpertSpec, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Write ``spec``'s torch model as an ONNX plugin folder ``out`` (``model.onnx`` + ``expert.json``).

    The manifest is the source's, plus an ``onnx`` block saying how the graph was made and how far it is
    from torch on the probe (max |Δab|). Returns that block.
    """
    from .backends.ort import convert_expert

    model = spec.build()
    conv = convert_expert(model, spec.name, threads)  # refuses a graph further than 0.5 ab from torch
    block = {"file": ONNX_FILE, "opset": OPSET, "input": INPUT, "output": EXPERT_OUTPUT, "exporter": _exporter(),
             "size_multiple": model.descriptor.size_multiple, "probe_shape": list(conv.probe_shape),
             "parity_max_abs_ab": round(conv.max_abs, 6)}
    if "decode" in spec.config:
        block["decode"] = spec.config["decode"]  # folded into the graph: the ONNX expert returns that ab
    manifest = {**spec.manifest, "onnx": block}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / ONNX_FILE, conv.data)
    atomic_write_json(out / "expert.json", manifest)
    return block


def export_router_folder(router_folder: Path, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Write the smp router in ``router_folder`` (any encoder) as ``out/model.onnx`` + ``out/config.json``.

    The graph includes the router's input mapping (L -> the net's input scale), so it takes L like the
    experts. ``config.json`` is the source's with an ``ensemble_color.onnx`` block (parity: max |Δ logit|
    and max |Δp| after softmax on the probe); the smp keys stay loadable by torch beside the weights.
    """
    from .routing import RoutingTable, read_router_config, smp_router

    config, extra = read_router_config(router_folder)
    router = smp_router(router_folder, RoutingTable.load()).eval()
    block = export_router_graph(router, out, threads)
    config = {**config, "ensemble_color": {**extra, "onnx": block}}
    atomic_write_json(out / "config.json", config)
    return block


def export_router_graph(router: Router, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Trace ``router.segmenter`` into ``out/model.onnx`` (checked on a probe); return the manifest block."""
    from .backends.ort import convert_router

    conv = convert_router(router, threads)  # refuses a graph further than 0.01 in probability from torch
    block = {"file": ONNX_FILE, "opset": OPSET, "input": INPUT, "output": ROUTER_OUTPUT,
             "labels": router.label_to_route.shape[0], "exporter": _exporter(), "size_multiple": router.size_multiple,
             "input_size": router.input_size, "probe_shape": list(conv.probe_shape),
             "parity_max_abs_logit": round(conv.max_abs_logit or 0.0, 6), "parity_max_abs_prob": round(conv.max_abs, 6)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / ONNX_FILE, conv.data)
    return block


def _exporter() -> str:
    return f"torch.onnx TorchScript exporter (torch {torch.__version__.split('+')[0]})"


def export_onnx(out_dir: str | Path, router: str = "embedded", experts_dirs: Sequence[str | Path] = (),
                only: Sequence[str] | None = None, threads: int | None = None,
                decode: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Export the router and every discovered expert (shipped + ``experts_dirs``) under ``out_dir``.

    ``decode`` (expert -> named decoding; default the pipeline's, ``PipelineOptions.decode``) is folded into
    the graphs, so the exported folders colour as the torch pipeline does (a graph cannot change decoding).
    Writes ``out_dir/router/``, ``out_dir/experts/NAME/`` and ``out_dir/export.json`` (the parity
    summary); returns that summary.
    """
    from .options import PipelineOptions
    from .plugins import discover, expert_search_path
    from .routing import RoutingTable, router_dir

    out = Path(out_dir)
    table = RoutingTable.load()
    scan = discover(expert_search_path(experts_dirs), table.known_classes())
    scan.warn_skipped()
    names = list(scan.experts) if only is None else list(only)
    if unknown := sorted(set(names) - set(scan.experts)):
        raise ValueError(f"unknown expert(s) {unknown}; installed: {sorted(scan.experts)}")
    decodings = {n: d for n, d in (PipelineOptions().decode if decode is None else decode).items()
                 if n in names and "decodes" in scan.experts[n].descriptor.extra}
    folder = router_dir() if router == "embedded" else Path(router)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ValueError(f"router {router!r}: export needs an smp router folder (config.json + model.safetensors)")
    summary: dict[str, Any] = {"opset": OPSET, "torch": torch.__version__, "router": str(folder),
                               "router_onnx": export_router_folder(folder, out / "router", threads), "experts": {}}
    for name in names:
        spec = scan.experts[name]
        if "safetensors" not in spec.formats:
            raise ValueError(f"expert {name!r} ships no model.safetensors: nothing to export from")
        if name in decodings:
            spec = spec.with_decoding(decodings[name])
        summary["experts"][name] = export_expert_folder(spec, out / "experts" / name, threads)
    atomic_write_json(out / "export.json", summary)
    return summary


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="what to export to (only onnx so far)")
    parser.add_argument("out", help="output folder (router/ and experts/NAME/ are written inside)")
    parser.add_argument("--router", default="embedded", help="embedded | path to an smp router folder")
    parser.add_argument("--experts", action="append", default=[], metavar="DIR", help="extra plugin folder")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="export only these experts")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads for the parity probes")
    parser.add_argument("--decode", action="append", default=[], metavar="EXPERT=DECODING",
                        help="fold this decoding into a multi-head expert's graph instead of the pipeline's "
                             "default (as the colourising command's --decode)")


def run(args: argparse.Namespace) -> int:
    from .options import PipelineOptions, parse_decode

    decode = {**PipelineOptions().decode, **parse_decode(args.decode)}
    summary = export_onnx(args.out, args.router, args.experts, args.only, args.threads, decode)
    r = summary["router_onnx"]
    print(f"router -> {Path(args.out) / 'router'}  (max |Δp| {r['parity_max_abs_prob']:.2e} on {r['probe_shape']})")
    for name, block in summary["experts"].items():
        print(f"{name} -> {Path(args.out) / 'experts' / name}  (max |Δab| {block['parity_max_abs_ab']:.2e} "
              f"on {block['probe_shape']})")
    print(f"use: --backend onnxruntime --router {Path(args.out) / 'router'} --experts {Path(args.out) / 'experts'}")
    return 0
