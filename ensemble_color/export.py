"""Torch -> ONNX: trace our models into graphs with dynamic batch, height and width, and write plugin folders.

``python -m ensemble_color export onnx OUT_DIR`` writes ``OUT_DIR/router/`` (the smp segmenter *with its
input mapping*: L in Lab units in, label logits out, plus its ``config.json``) and ``OUT_DIR/experts/NAME/``
(``model.onnx`` + ``expert.json``; the generalist with its chosen decoding folded into the graph), each
checked against torch on a probe at a size other than the one traced. Use them with
``--backend onnxruntime --router OUT_DIR/router --experts OUT_DIR/experts``; other ONNX runtimes can run
the graphs without PyTorch.

Why the TorchScript (``dynamo=False``) exporter: on these models it traces in about a second, turns every
size computation into graph ops (timm's 'same' padding included: its ``get_same_padding`` takes the traced
size tensors), and needs nothing beyond torch. The ``torch.export`` exporter needs ``onnxscript`` (not a
dependency) and took 34 s for one 0.9 M-parameter expert here, too slow for the in-memory conversion
``--backend onnxruntime`` does at load. What the tracer cannot see (Python control flow on sizes) is what
the parity probe at a second size catches.

Only the router's segmenter is exported: its resize, softmax, routing-table matrix and feathering stay in
torch (:class:`~ensemble_color.routing.Router`), so the routing table remains data and one code path
serves both backends.
"""

from __future__ import annotations

import argparse
import io
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .io import atomic_write_bytes

if TYPE_CHECKING:
    from .plugins import ExpertSpec
    from .routing import Router

OPSET = 17                 #: opset of the graphs we write (onnxruntime >= 1.18 and most other runtimes run it)
ONNX_FILE = "model.onnx"
INPUT = "L"                #: the one input of every graph: L in Lab units, (B, 1, H, W) float32
EXPERT_OUTPUT = "ab"       #: an expert's one output: ab in Lab units, (B, 2, H, W)
ROUTER_OUTPUT = "logits"   #: a router's one output: label logits, (B, n_labels, h, w)
#: (message, module) of torch.onnx warnings that say nothing about *this* graph: the exporter's own
#: deprecation notice, and GroupNorm's batch-size check in torch.nn.functional (a training-time guard the
#: tracer cannot record). Tracer warnings from anywhere else are left to show.
_EXPORT_NOISE = ((r".*legacy TorchScript-based ONNX export.*", ""), (r"The feature will be removed.*", ""),
                 (r"Converting a tensor to a Python boolean.*", r"torch\.nn\.functional"))


class _Callable(nn.Module):
    """Makes a bound method (e.g. the generalist's ``segment``) exportable as a module."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        if isinstance(getattr(fn, "__self__", None), nn.Module):
            self.owner = fn.__self__  # registers the parameters, so .eval() and the tracer see them

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.fn(L)


def as_module(model: nn.Module | Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """``model`` itself if it is a module, else a module calling it."""
    return model if isinstance(model, nn.Module) else _Callable(model)


def to_onnx_bytes(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor,
                  output_name: str, opset: int = OPSET) -> bytes:
    """Trace ``model`` (in eval mode, on CPU) on ``example`` (B, 1, H, W) into an ONNX graph, serialised.

    Batch, height and width of the input and output are dynamic; nothing touches the file system.
    """
    module = as_module(model)
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    dims = {0: "batch", 2: "height", 3: "width"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            for message, where in _EXPORT_NOISE:
                warnings.filterwarnings("ignore", message=message, module=where)
            torch.onnx.export(module, (example.float().cpu(),), buf, input_names=[INPUT], output_names=[output_name],
                              opset_version=opset, dynamic_axes={INPUT: dims, output_name: dims}, dynamo=False,
                              do_constant_folding=True)
    finally:
        module.train(was_training)
    return buf.getvalue()


def probe_input(size_multiple: int, batch: int = 2, cells: tuple[int, int] = (5, 7), seed: int = 0) -> torch.Tensor:
    """A deterministic random L batch (B, 1, h, w) in [0, 100], sides ``cells`` x ``size_multiple``.

    The default (5 x 7 cells, batch 2) differs in batch, aspect and size from :func:`trace_example`, so a
    graph that baked the traced shape in fails the probe.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, cells[0] * size_multiple, cells[1] * size_multiple, generator=g) * 100.0


def trace_example(size_multiple: int, long_side: int = 128) -> torch.Tensor:
    """A 3:4 single-image input for tracing, sides multiples of ``size_multiple`` near ``long_side``."""
    w = max(4, round(long_side / size_multiple)) * size_multiple
    h = max(3, round(0.75 * w / size_multiple)) * size_multiple
    return probe_input(size_multiple, batch=1, cells=(h // size_multiple, w // size_multiple), seed=1)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------- folders


def export_expert_folder(spec: ExpertSpec, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Write ``spec``'s torch model as an ONNX plugin folder ``out`` (``model.onnx`` + ``expert.json``).

    The manifest is the source's, plus an ``onnx`` block saying how the graph was made and how far it is
    from torch on the probe (max |Δab|). Returns that block.
    """
    from .onnx_backend import convert_expert

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
    atomic_write_bytes(out / "expert.json", (json.dumps(manifest, indent=2) + "\n").encode())
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
    atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    return block


def export_router_graph(router: Router, out: Path, threads: int | None = None) -> dict[str, Any]:
    """Trace ``router.segmenter`` into ``out/model.onnx`` (checked on a probe); return the manifest block."""
    from .onnx_backend import convert_router

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
    from .pipeline import PipelineOptions
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
    atomic_write_bytes(out / "export.json", (json.dumps(summary, indent=2) + "\n").encode())
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
    from .cli import parse_decode
    from .pipeline import PipelineOptions

    decode = {**PipelineOptions().decode, **parse_decode(args.decode)}
    summary = export_onnx(args.out, args.router, args.experts, args.only, args.threads, decode)
    r = summary["router_onnx"]
    print(f"router -> {Path(args.out) / 'router'}  (max |Δp| {r['parity_max_abs_prob']:.2e} on {r['probe_shape']})")
    for name, block in summary["experts"].items():
        print(f"{name} -> {Path(args.out) / 'experts' / name}  (max |Δab| {block['parity_max_abs_ab']:.2e} "
              f"on {block['probe_shape']})")
    print(f"use: --backend onnxruntime --router {Path(args.out) / 'router'} --experts {Path(args.out) / 'experts'}")
    return 0
