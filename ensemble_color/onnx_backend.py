"""onnxruntime backend: validated ONNX graphs behind the module interface the pipeline already uses.

A loaded model, not the compositor, knows where it runs: :class:`OrtModel` is an ``nn.Module`` with the
same ``descriptor`` and the same call (L (B, 1, H, W) in, a tensor out) as the torch model it replaces,
so :class:`~ensemble_color.pipeline.Pipeline` and :class:`~ensemble_color.routing.Router` run one code
path for both backends. Only the networks move to onnxruntime; the router's resize/softmax/routing-table
step and the compositor stay in torch.

Graphs come from two places: a plugin's own ``model.onnx`` (or an exported router folder), or the torch
model converted in memory at load (:mod:`ensemble_color.export`), checked against torch on a probe before use.
A converted *router* is also kept in the user's cache (:func:`cache_dir`, keyed by a hash of the segmenter's
architecture and weights, the opset and the torch version): tracing takes ~1.5 s, about what 250 photos gain
from onnxruntime, so the pipeline's default router backend (``auto``, onnxruntime on CPU) would cost a
one-photo CLI run more than it saves without it. A cached graph is an untrusted file like any other: it is
validated, and checked against torch on the probe, at every load.

ONNX files are untrusted like every plugin file. Before onnxruntime sees one: it is read once, size-capped,
parsed without loading external data, and refused if any tensor lives in an external file (a hostile graph
could name any path, and onnxruntime would read it), if it imports or uses an operator domain other than
the default one (custom operators run native code from libraries; none is ever registered here), if it
carries model-local functions, if its opset is outside :func:`opset_range`, or if its input/output names,
types and ranks are not the contract's; then ``onnx.checker`` runs, the session is built from the checked
bytes (the device's own provider only, no custom-op library), and a probe batch must give the expected
shape, finite.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .export import (
    EXPERT_OUTPUT,
    INPUT,
    ONNX_FILE,
    OPSET,
    ROUTER_OUTPUT,
    max_abs_diff,
    probe_input,
    to_onnx_bytes,
    trace_example,
)
from .io import atomic_write_bytes
from .nets import ModelDescriptor

if TYPE_CHECKING:
    import onnxruntime as ort

    from .plugins import ExpertSpec
    from .routing import Router, RoutingTable

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


# ----------------------------------------------------------------------------------------- sessions


def make_session(data: bytes, threads: int | None = None, device: torch.device | str = "cpu"
                 ) -> ort.InferenceSession:
    """An onnxruntime session over already-checked bytes; ``threads`` intra-op threads (None: onnxruntime's
    default, one per physical core). Only the device's own provider; no custom-op library is registered."""
    ort = _import("onnxruntime")
    device = torch.device(device)
    provider = PROVIDERS.get(device.type)
    if provider is None or provider not in ort.get_available_providers():
        raise OnnxModelError(f"onnxruntime has no provider for device {device} here "
                             f"(available: {', '.join(ort.get_available_providers())})")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or 0)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in SESSION_CONFIG.items():
        so.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(data, sess_options=so, providers=[provider])
    except _ort_errors() as err:
        raise OnnxModelError(f"onnxruntime cannot load it ({str(err).strip()[:300]})") from None


def run_session(session: ort.InferenceSession, L: torch.Tensor) -> torch.Tensor:
    """Run the one-input, one-output ``session`` on ``L`` (B, 1, H, W); the result on ``L``'s device."""
    x = L.detach().to("cpu", torch.float32).contiguous().numpy()
    out = session.run(None, {INPUT: x})[0]
    return torch.from_numpy(out).to(L.device)


def _probe(session: ort.InferenceSession, x: torch.Tensor, channels: int, same_size: bool) -> torch.Tensor:
    """Run ``x`` through ``session``; raise unless the output is (B, channels, h, w), finite (h, w = x's
    if ``same_size``)."""
    try:
        y = run_session(session, x)
    except _ort_errors() as err:
        raise OnnxModelError(f"fails on a probe input {list(x.shape)} ({str(err).strip()[:300]})") from None
    want = (x.shape[0], channels, *x.shape[-2:]) if same_size else (x.shape[0], channels)
    if y.dim() != 4 or tuple(y.shape[:len(want)]) != want:
        raise OnnxModelError(f"returns shape {list(y.shape)} for a probe {list(x.shape)}; expected "
                             f"{list(want)}{'' if same_size else ' + (h, w)'}")
    if not torch.isfinite(y).all():
        raise OnnxModelError(f"returns non-finite values on a probe {list(x.shape)}")
    return y


def expert_session(data: bytes, descriptor: ModelDescriptor, threads: int | None = None,
                   device: torch.device | str = "cpu") -> ort.InferenceSession:
    """Check ``data`` as an expert graph (L -> ab at the same size), build its session, probe it."""
    check_graph(data, EXPERT_OUTPUT, 2)
    session = make_session(data, threads, device)
    _probe(session, probe_input(descriptor.size_multiple), 2, same_size=True)
    return session


def router_session(data: bytes, n_labels: int, size_multiple: int, threads: int | None = None,
                   device: torch.device | str = "cpu") -> ort.InferenceSession:
    """Check ``data`` as a router graph (L -> ``n_labels`` logits at any resolution), build and probe it."""
    check_graph(data, ROUTER_OUTPUT, n_labels)
    session = make_session(data, threads, device)
    _probe(session, probe_input(size_multiple, cells=(3, 4)), n_labels, same_size=False)
    return session


class OrtModel(nn.Module):
    """An onnxruntime session presented as the torch model it replaces (same ``descriptor``, same call).

    No parameters: ``.to(device)`` and ``.eval()`` are no-ops; outputs come back on the input's device.
    """

    def __init__(self, session: ort.InferenceSession, descriptor: ModelDescriptor) -> None:
        super().__init__()
        self.session = session
        self.descriptor = replace(descriptor, supports_half=False,
                                  extra={**descriptor.extra, "backend": "onnxruntime"})
        self.eval()

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return run_session(self.session, L)


# ---------------------------------------------------------------------------------------- loading


def validate_expert_file(path: Path, descriptor: ModelDescriptor) -> None:
    """Plugin validation of ``path`` (a plugin's ``model.onnx``); raises :class:`OnnxModelError`."""
    expert_session(read_onnx(path), descriptor)


def load_expert(spec: ExpertSpec, device: torch.device, threads: int | None = None) -> OrtModel:
    """``spec`` on onnxruntime: its own ``model.onnx`` (checked again: the file may have changed since the
    scan), else its torch model converted in memory and checked against torch (max |Δab| <= 0.5)."""
    descriptor = spec.build_descriptor()
    if "onnx" in spec.formats:
        return OrtModel(expert_session(read_onnx(spec.folder / ONNX_FILE), descriptor, threads, device),
                        descriptor)
    model = spec.build()
    return OrtModel(convert_expert(model, spec.name, threads, device).session, model.descriptor)


@dataclass(frozen=True)
class Conversion:
    """A torch model traced to a checked graph: its bytes, a live session, and how far it is from torch on
    the probe (max |Δab| for an expert; max |Δp| after softmax for a router, with max |Δ logit|)."""

    data: bytes
    session: ort.InferenceSession
    probe_shape: tuple[int, ...]
    max_abs: float
    max_abs_logit: float | None = None


def convert_expert(model: nn.Module, name: str, threads: int | None = None, device: torch.device | str = "cpu"
                   ) -> Conversion:
    """Trace a torch expert (on CPU) into a checked session; raise unless max |Δab| <= :data:`PARITY_TOL_AB`."""
    d = model.descriptor
    data = to_onnx_bytes(model, trace_example(d.size_multiple, d.input_size), EXPERT_OUTPUT)
    session = expert_session(data, d, threads, device)
    x = probe_input(d.size_multiple)
    with torch.inference_mode():
        delta = max_abs_diff(run_session(session, x).cpu(), model.eval()(x))
    if delta > PARITY_TOL_AB:
        raise OnnxModelError(f"expert {name}: the converted graph differs from torch by {delta:.3f} ab "
                             f"on a probe (limit {PARITY_TOL_AB}); run it with --backend torch")
    return Conversion(data, session, tuple(x.shape), delta)


def cache_dir() -> Path:
    """Where converted graphs are kept between runs: ``$ENSEMBLE_COLOR_CACHE``, else
    ``$XDG_CACHE_HOME/ensemble_color``, else ``~/.cache/ensemble_color`` (never the working directory)."""
    if os.environ.get("ENSEMBLE_COLOR_CACHE"):
        return Path(os.environ["ENSEMBLE_COLOR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ensemble_color"


def conversion_key(module: nn.Module) -> str:
    """A hash of what a traced graph depends on: the module's structure and every parameter and buffer, the
    opset and the torch version (its exporter)."""
    h = hashlib.sha256(f"{OPSET}|{torch.__version__}|{module!r}".encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


def _store_graph(path: Path, data: bytes) -> None:
    """Keep a converted graph for the next load; a cache that cannot be written only costs time (warned)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as e:
        warnings.warn(f"cannot cache the converted router in {path.parent} ({e}); it is converted at every load",
                      stacklevel=4)


def convert_router(router: Router, threads: int | None = None, device: torch.device | str = "cpu",
                   cache: Path | None = None) -> Conversion:
    """Trace ``router.segmenter`` (input mapping included; on CPU) into a checked session; raise unless
    max |Δp| after softmax <= :data:`PARITY_TOL_PROB`. With ``cache`` (a folder), a graph traced from the
    same segmenter before is read from there instead of traced (checked the same way; one that fails is
    ignored with a warning), and a new one is written there."""
    from .export import as_module

    seg = as_module(router.segmenter)
    path = cache / f"router-{conversion_key(seg)}.onnx" if cache is not None else None
    if path is not None and path.is_file():
        try:  # unreadable, invalid or not matching torch: traced again and replaced
            return _checked_router(router, seg, read_onnx(path), threads, device)
        except OnnxModelError as e:
            warnings.warn(f"ignoring the cached router graph: {e}", stacklevel=2)
    data = to_onnx_bytes(seg, trace_example(router.size_multiple, router.input_size), ROUTER_OUTPUT)
    conversion = _checked_router(router, seg, data, threads, device)
    if path is not None:
        _store_graph(path, conversion.data)
    return conversion


def _checked_router(router: Router, seg: nn.Module, data: bytes, threads: int | None = None,
                    device: torch.device | str = "cpu") -> Conversion:
    """``data`` as a router session, after the graph checks and the parity check against ``seg`` on a probe."""
    m, n_labels = router.size_multiple, router.label_to_route.shape[0]
    session = router_session(data, n_labels, m, threads, device)
    x = probe_input(m, cells=(5, 7))
    with torch.inference_mode():
        ours, ref = run_session(session, x).cpu(), seg.eval()(x).float()
    delta = max_abs_diff(ours.softmax(1), ref.softmax(1))
    if delta > PARITY_TOL_PROB:
        raise OnnxModelError(f"router {router.name}: the converted graph differs from torch by {delta:.4f} in "
                             f"probability on a probe (limit {PARITY_TOL_PROB}); run it with --backend torch")
    return Conversion(data, session, tuple(x.shape), delta, max_abs_diff(ours, ref))


def _router_descriptor(router_name: str, size_multiple: int, input_size: int) -> ModelDescriptor:
    return ModelDescriptor(f"router:{router_name}", size_multiple=size_multiple, supports_half=False,
                           input_size=input_size)


def router_on_onnxruntime(router: Router, threads: int | None = None, device: torch.device | str = "cpu",
                          cache: Path | None = None) -> Router:
    """The same router with its segmenter (input mapping included) converted to an onnxruntime graph
    (kept in / read from ``cache``, see :func:`convert_router`).

    A segmenter without parameters (the all-background placeholder) has nothing to accelerate and is kept.
    Checked against torch on a probe (max |Δp| after softmax <= 0.01).
    """
    from .export import as_module

    if not any(True for _ in as_module(router.segmenter).parameters()):
        return router
    m = router.size_multiple
    ort_seg = OrtModel(convert_router(router, threads, device, cache).session,
                       _router_descriptor(router.name, m, router.input_size))
    return router.with_segmenter(ort_seg, f"{router.name}@onnxruntime")


def is_onnx_router_folder(spec: str | Path) -> bool:
    """Whether ``spec`` names a router folder holding a ``model.onnx`` (an exported router)."""
    folder = Path(spec)
    return (folder / ONNX_FILE).is_file() and (folder / "config.json").is_file()


def onnx_router(folder: str | Path, table: RoutingTable, threads: int | None = None,
                device: torch.device | str = "cpu", **options: Any) -> Router:
    """An exported router folder (``model.onnx`` + ``config.json``) on onnxruntime; config and graph
    validated like a plugin's. Its labels map to route classes through the routing table's backend."""
    from .routing import Router, read_router_config, router_settings

    folder = Path(folder)
    _, extra = read_router_config(folder)
    matrix, classes, settings = router_settings(folder, extra, table)
    block = extra.get("onnx", {})
    m = block.get("size_multiple", 32) if isinstance(block, dict) else None
    if not (isinstance(m, int) and 1 <= m <= 256):
        raise OnnxModelError(f"router {folder}: config.json needs an 'onnx' object whose size_multiple is an "
                             f"integer in 1..256 (got {m!r})")
    session = router_session(read_onnx(folder / ONNX_FILE), matrix.shape[0], m, threads, device)
    seg = OrtModel(session, _router_descriptor(folder.name, m, settings["input_size"]))
    return Router(f"onnx:{folder.name}", seg, matrix, classes, **(settings | {"size_multiple": m} | options))
