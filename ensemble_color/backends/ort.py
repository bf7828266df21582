"""onnxruntime backend: validated ONNX graphs behind the module interface the pipeline already uses.

A loaded model, not the compositor, knows where it runs: :class:`OrtModel` is an ``nn.Module`` with the
same ``descriptor`` and the same call (L (B, 1, H, W) in, a tensor out) as the torch model it replaces,
so :class:`~ensemble_color.pipeline.Pipeline` and :class:`~ensemble_color.routing.Router` run one code
path for both backends. Only the networks move to onnxruntime; the router's resize/softmax/routing-table
step and the compositor stay in torch.

Graphs come from two places: a plugin's own ``model.onnx`` (or an exported router folder), or the torch
model converted in memory at load (:mod:`.convert`), checked against torch on a probe before use.
A converted *router* is also kept in the user's cache (:func:`cache_dir`, keyed by a hash of the segmenter's
architecture and weights, the opset and the torch version): tracing takes ~1.5 s, about what 250 photos gain
from onnxruntime, so the pipeline's default router backend (``auto``, onnxruntime on CPU) would cost a
one-photo CLI run more than it saves without it. A cached graph is an untrusted file like any other: it is
validated (:mod:`.onnx_contract`), and checked against torch on the probe, at every load; the session is
built from the checked bytes (the device's own provider only, no custom-op library), and a probe batch must
give the expected shape, finite.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..io import atomic_write_bytes
from ..nets import ModelDescriptor
from .convert import as_module, max_abs_diff, probe_input, to_onnx_bytes, trace_example
from .onnx_contract import (
    EXPERT_OUTPUT,
    INPUT,
    ONNX_FILE,
    OPSET,
    PARITY_TOL_AB,
    PARITY_TOL_PROB,
    PROVIDERS,
    ROUTER_OUTPUT,
    SESSION_CONFIG,
    OnnxModelError,
    _import,
    _ort_errors,
    check_graph,
    read_onnx,
)

if TYPE_CHECKING:
    import onnxruntime as ort

    from ..routing import Router, RoutingTable

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
    from ..routing import Router, read_router_config, router_settings

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
