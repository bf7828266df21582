"""Loading the models a pipeline runs: the device, each expert on its backend (lazily, with its decodings), and
the router on its backend (onnxruntime on CPU by default, converted in memory and cached, torch otherwise).

Why apart from :mod:`.pipeline`: what runs where is decided once at load time (:class:`~.options.LoadOptions`);
the pipeline only calls the loaded modules.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .composite import ExpertRoute
from .nets import ModelDescriptor
from .options import LoadOptions
from .plugins import ExpertSpec, PluginError
from .routing import Router, RoutingTable, available_routers, load_router


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as given (error if CUDA asked but absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return dev


def _torch_expert(spec: ExpertSpec, device: torch.device, threads: int | None) -> nn.Module:
    # channels-last weights make the convolutions run channels-last whatever the input's layout: 1.5x faster
    # for resnet18-deconv on this CPU (bench/results/speed.md has the pipeline before/after)
    return spec.build().to(device, memory_format=torch.channels_last)


def _onnxruntime_expert(spec: ExpertSpec, device: torch.device, threads: int | None) -> nn.Module:
    """``spec`` on onnxruntime: its own ``model.onnx`` (checked again: the file may have changed since the
    scan), else its torch model converted in memory and checked against torch (max |Δab| <= 0.5)."""
    from .backends.onnx_contract import ONNX_FILE, read_onnx
    from .backends.ort import OrtModel, convert_expert, expert_session

    descriptor = spec.build_descriptor()
    if "onnx" in spec.formats:
        return OrtModel(expert_session(read_onnx(spec.folder / ONNX_FILE), descriptor, threads, device), descriptor)
    model = spec.build()
    return OrtModel(convert_expert(model, spec.name, threads, device).session, model.descriptor)


def _torch_router(router: Router, device: torch.device, threads: int | None) -> Router:
    if isinstance(router.segmenter, nn.Module):
        router.segmenter.to(memory_format=torch.channels_last)  # as for the experts (~1.1x for the Lite0 FPN)
    return router


def _onnxruntime_router(router: Router, device: torch.device, threads: int | None) -> Router:
    from .backends.ort import cache_dir, router_on_onnxruntime

    return router_on_onnxruntime(router, threads, device, cache=cache_dir())


#: backend -> (expert loader, router converter). A loaded model knows its backend; the code path is one.
LOADERS = {"torch": (_torch_expert, _torch_router), "onnxruntime": (_onnxruntime_expert, _onnxruntime_router)}


class LoadedExpert:
    """A plugin expert with its model built lazily on first use (nothing loads at import or scan).

    ``backend`` is the one asked for; :attr:`backend` the one used (an ONNX-only plugin runs on onnxruntime).
    """

    def __init__(self, spec: ExpertSpec, device: torch.device, backend: str = "torch",
                 threads: int | None = None) -> None:
        self.spec, self.device, self.requested_backend, self.threads = spec, device, backend, threads
        self._model: nn.Module | None = None
        self._decoded: dict[str, LoadedExpert] = {}

    @property
    def backend(self) -> str:
        return self.requested_backend if self.requested_backend in self.spec.backends else self.spec.backends[0]

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = LOADERS[self.backend][0](self.spec, self.device, self.threads)
        return self._model

    def torch_model(self) -> nn.Module:
        """The torch module itself (the generalist's seg head as router needs it), shared with :attr:`model`
        on the torch backend."""
        return self.model if self.backend == "torch" else self.spec.build().to(self.device)

    def with_decoding(self, name: str | None) -> LoadedExpert:
        """This expert decoding as named decoding ``name`` (``None``: as its manifest says). Each is built lazily
        once and kept here, so per-request options (the app's ``with_options``) never rebuild or reconvert it."""
        if name is None:
            return self
        if name not in self._decoded:
            spec = self.spec.with_decoding(name)
            self._decoded[name] = self if spec is self.spec else LoadedExpert(
                spec, self.device, self.requested_backend, self.threads)
        return self._decoded[name]

    @property
    def descriptor(self) -> ModelDescriptor:
        """What the model supports, read without loading its weights (built once, by the spec)."""
        return self.spec.descriptor

    @property
    def route(self) -> ExpertRoute:
        return ExpertRoute(self.spec.name, self.spec.routes, self.spec.fallback)

    def run(self, L: torch.Tensor) -> torch.Tensor:
        """ab for a batch of L crops (B, 1, h, w); pads to the model's size multiple (replicate)."""
        model = self.model
        d = model.descriptor
        h, w = L.shape[-2:]
        ph, pw = (-h) % d.size_multiple, (-w) % d.size_multiple
        x = F.pad(L, (0, pw, 0, ph), mode="replicate") if ph or pw else L
        use_half = self.device.type == "cuda" and d.supports_half
        ctx = torch.autocast("cuda", dtype=torch.float16) if use_half else nullcontext()
        with ctx:
            ab = model(x.to(self.device))
        return ab.float()[..., :h, :w]


def usable_decodings(experts: Mapping[str, LoadedExpert], decode: Mapping[str, str]) -> dict[str, str]:
    """The ``decode`` option restricted to loaded experts that have a decoding (experts not loaded and
    specialists are left out); an unknown decoding name is an error (``ValueError``); an expert that cannot
    change its decoding (an ONNX graph with another folded in) keeps its own, with a warning."""
    usable = {}
    for name, decoding in decode.items():
        if name not in experts or "decodes" not in experts[name].descriptor.extra:
            continue
        try:
            experts[name].with_decoding(decoding)
        except PluginError as e:
            warnings.warn(f"decode {name}={decoding!r} not applied: {e}", stacklevel=3)
            continue
        usable[name] = decoding
    return usable


def _load_router(spec: str, table: RoutingTable, opt: LoadOptions, device: torch.device,
                 generalist: Callable[[], nn.Module] | None, router_options: dict) -> Router:
    """The router on the options' backend. An exported router folder (``model.onnx``) runs on onnxruntime
    (on either backend when it ships no torch weights); any other router loads in torch, then converts."""
    from .backends.ort import is_onnx_router_folder

    folder = Path(spec)
    backend = router_backend(opt, device)
    exported = spec not in available_routers() and is_onnx_router_folder(folder)
    if exported and (backend == "onnxruntime" or not (folder / "model.safetensors").is_file()):
        from .backends.ort import onnx_router

        return onnx_router(folder, table, opt.threads, device, **router_options)
    r = load_router(spec, table, generalist=generalist, **router_options)
    from .backends.onnx_contract import OnnxModelError

    try:
        return LOADERS[backend][1](r, device, opt.threads)
    except (OnnxModelError, torch.onnx.errors.OnnxExporterError) as e:
        if opt.router_backend != "auto":  # asked for by name, a router that does not convert is an error
            raise
        warnings.warn(f"router {r.name} stays on torch (it did not convert to onnxruntime: {e})", stacklevel=3)
        return _torch_router(r, device, opt.threads)


def router_backend(opt: LoadOptions, device: torch.device) -> str:
    """The backend ``opt.router_backend`` names, "auto" resolved (onnxruntime on CPU when installed)."""
    if opt.router_backend != "auto":
        return opt.router_backend
    if device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime"
    return opt.backend


