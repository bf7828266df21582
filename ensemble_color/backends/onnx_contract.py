"""The ONNX contract: what a graph must be to run here, checked before onnxruntime ever sees it.

Every graph has one input ``L`` (B, 1, H, W) float32 in Lab units and one output: ``ab`` (B, 2, H, W) for an
expert, ``logits`` (B, n_labels, h, w) for a router. ONNX files are untrusted like every plugin file. Before
onnxruntime sees one: it is read once, size-capped, parsed without loading external data, and refused if any
tensor lives in an external file (a hostile graph could name any path, and onnxruntime would read it), if it
imports or uses an operator domain other than the default one (custom operators run native code from
libraries; none is ever registered here), if it carries model-local functions, if its opset is outside
:func:`opset_range`, or if its input/output names, types and ranks are not the contract's; then
``onnx.checker`` runs. The runtime side (sessions, probes, conversion) is :mod:`.ort`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

OPSET = 17                 #: opset of the graphs we write (onnxruntime >= 1.18 and most other runtimes run it)
ONNX_FILE = "model.onnx"
INPUT = "L"                #: the one input of every graph: L in Lab units, (B, 1, H, W) float32
EXPERT_OUTPUT = "ab"       #: an expert's one output: ab in Lab units, (B, 2, H, W)
ROUTER_OUTPUT = "logits"   #: a router's one output: label logits, (B, n_labels, h, w)
#: opsets accepted: from 13 (the oldest our exporter and tests cover) to what the installed onnx knows
OPSET_MIN = 13
ALLOWED_DOMAINS = ("", "ai.onnx")     #: the default operator set only: no custom or contrib operators
MAX_BYTES = 512 * 1024 * 1024         #: protobuf cannot hold 2 GiB; ours are 4-13 MB
PARITY_TOL_AB = 0.5                   #: max |Δab| (Lab units) allowed between a converted expert and torch
PARITY_TOL_PROB = 0.01                #: max |Δp| after softmax allowed between a converted router and torch
#: device type -> onnxruntime execution provider (never "all available": that list includes remote ones)
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
#: onnxruntime's worker threads spin between runs by default; the pipeline does torch work between its
#: sessions' runs, and spinning threads would compete with torch's for the same cores
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}
INSTALL_HINT = "pip install 'ensemble_color[onnx]'"


class OnnxModelError(ValueError):
    """An ONNX graph that must not or cannot be used; the message says why."""


class OnnxUnavailableError(ImportError):
    """``onnx``/``onnxruntime`` are not installed (core dependencies, but an environment may lack them)."""


def _import(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise OnnxUnavailableError(f"{name} is not installed ({INSTALL_HINT})") from err


def opset_range() -> tuple[int, int]:
    """(lowest, highest) default-domain opset accepted: up to the newest the installed checker knows."""
    return OPSET_MIN, int(_import("onnx").defs.onnx_opset_version())


def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from ``Exception`` directly, not from one base)."""
    state = _import("onnxruntime.capi.onnxruntime_pybind11_state")
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel", "NotFound",
             "NotImplemented", "RuntimeException", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


# --------------------------------------------------------------------------------------- validation


def read_onnx(path: Path) -> bytes:
    """The file's bytes, read once (what is checked is what runs), refused above :data:`MAX_BYTES`."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise OnnxModelError(f"{path.name} is {size / 2**20:.0f} MiB, more than {MAX_BYTES // 2**20} MiB")
        return path.read_bytes()
    except OSError as err:
        raise OnnxModelError(f"{path.name} cannot be read ({err})") from None


def _subgraphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every graph nested in node attributes (If/Loop/Scan bodies), depth first."""
    onnx = _import("onnx")
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _subgraphs(g)


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor stored in ``graph`` itself: initializers, sparse initializers, tensor attributes."""
    onnx = _import("onnx")
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            elif attr.type == onnx.AttributeProto.SPARSE_TENSORS:
                for sparse in attr.sparse_tensors:
                    yield from (sparse.values, sparse.indices)


def _dims(value_info: Any) -> list[int | None] | None:
    """Static sizes of a tensor value (None where symbolic); None if it declares no shape."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _check_value(value_info: Any, role: str, name: str, channels: int | None) -> None:
    onnx = _import("onnx")
    if value_info.name != name:
        raise OnnxModelError(f"{role} is named {value_info.name!r}, the contract needs {name!r}")
    if not value_info.type.HasField("tensor_type") or value_info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise OnnxModelError(f"{role} {name!r} must be a float32 tensor")
    dims = _dims(value_info)
    if dims is not None and len(dims) != 4:
        raise OnnxModelError(f"{role} {name!r} has rank {len(dims)}, the contract needs 4 (B, C, H, W)")
    if dims is not None and channels is not None and dims[1] not in (None, channels):
        raise OnnxModelError(f"{role} {name!r} has {dims[1]} channels, the contract needs {channels}")


def check_graph(data: bytes, output_name: str, out_channels: int | None) -> None:
    """Raise :class:`OnnxModelError` unless ``data`` is an ONNX model safe to hand to onnxruntime and
    shaped like the contract: one float input ``L`` (B, 1, H, W), one float output ``output_name``
    (B, ``out_channels``, h, w)."""
    onnx = _import("onnx")
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)  # from bytes: nothing is resolved against any folder
    except (DecodeError, ValueError, RuntimeError) as err:
        raise OnnxModelError(f"not a readable ONNX model ({err})") from None
    lo, hi = opset_range()
    for imp in model.opset_import:
        if imp.domain not in ALLOWED_DOMAINS:
            raise OnnxModelError(f"imports operator domain {imp.domain!r}: custom operators are refused")
        if not lo <= imp.version <= hi:
            raise OnnxModelError(f"opset {imp.version} is outside the accepted range {lo}..{hi}")
    if not model.opset_import:
        raise OnnxModelError("declares no opset")
    if len(model.functions):
        raise OnnxModelError(f"carries {len(model.functions)} model-local function(s): refused")
    for graph in _subgraphs(model.graph):
        for node in graph.node:
            if node.domain not in ALLOWED_DOMAINS:
                raise OnnxModelError(f"node {node.name or node.op_type!r} uses operator domain {node.domain!r}: "
                                     "custom operators are refused")
        for tensor in _tensors(graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
                raise OnnxModelError(f"tensor {tensor.name!r} points at external data: refused (an ONNX file "
                                     "could make onnxruntime read any file)")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise OnnxModelError(f"has {len(inputs)} input(s) and {len(model.graph.output)} output(s), the contract "
                             f"is one input {INPUT!r} and one output {output_name!r}")
    _check_value(inputs[0], "input", INPUT, 1)
    _check_value(model.graph.output[0], "output", output_name, out_channels)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise OnnxModelError(f"fails the ONNX checker ({str(err).splitlines()[0]})") from None
