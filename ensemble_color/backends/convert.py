"""Torch -> ONNX bytes: trace our models into graphs with dynamic batch, height and width.

Why the TorchScript (``dynamo=False``) exporter: on these models it traces in about a second, turns every
size computation into graph ops (timm's 'same' padding included: its ``get_same_padding`` takes the traced
size tensors), and needs nothing beyond torch. The ``torch.export`` exporter needs ``onnxscript`` (not a
dependency) and took 34 s for one 0.9 M-parameter expert here, too slow for the in-memory conversion
``--backend onnxruntime`` does at load. What the tracer cannot see (Python control flow on sizes) is what
the parity probe at a second size catches.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import torch
from torch import nn

from .onnx_contract import INPUT, OPSET

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
