"""The one colourisation pipeline object shared by the CLI, the web app, the benchmarks and the tests.

    pipe = Pipeline.load()                      # shipped experts + embedded router, auto device
    result = pipe.colorize(load_image("photo.jpg"))
    to_pil(result.rgb).save("photo_colorized.png")

Flow: full-res L -> working-size L -> router probabilities -> expert weights and crops ->
each needed expert runs once per batch on its crops -> blend -> upsample ab -> join with full-res L.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .color import gray_to_l, join_l_ab, rgb_to_l
from .composite import (
    DECODE_ALONE,
    SUBJECT_CONTEXT_RAMP,
    Box,
    ExpertRoute,
    alone_experts,
    blend,
    choose_fallback,
    compose,
    expert_weights,
    plan_regions,
    served_by,
    share_context,
)
from .io import LoadedImage
from .nets import ModelDescriptor
from .plugins import ExpertSpec, PluginError, PluginScan, discover, expert_search_path
from .routing import Router, RoutingTable, available_routers, load_router

if TYPE_CHECKING:
    from .video import VideoReport


@dataclass(frozen=True)
class PipelineOptions:
    """Knobs a user may turn; defaults chosen by bench/tune_defaults.py on held-out train photos (docs/tuning.md)."""

    work_size: int = 256          #: long side of the working image (router + experts); tuned, docs/tuning.md
    saturation: float = 1.0       #: chroma multiplier applied to the blended ab
    threshold: float = 0.1        #: weight above which a pixel belongs to an expert's crop; tuned
    margin: int = 16              #: crop margin around a region, working pixels
    min_fraction: float = 0.002   #: specialists with less mean weight than this are not run
    fallback_min: float = 0.25    #: the fallback runs only where unclaimed weight exceeds this; tuned
    crop_quantile: float = 0.02   #: crops span the q..1-q quantiles of an expert's weight (ignores specks); tuned
    #: route class -> experts (overrides the manifests). Default: the generalist colours the background
    #: (docs/tuning.md: chosen on held-out train photos and composites by bench/tune_defaults.py's rule)
    assign: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"background": ("generalist",)})
    #: subjects' area (fraction of the frame) from which their experts start / finish taking the background
    #: too (composite.share_context); None = background always goes to its own experts. Default: on
    #: (docs/tuning.md), so a photo of one bird is coloured by the birds expert, surroundings included
    context: tuple[float, float] | None = SUBJECT_CONTEXT_RAMP
    #: expert -> named decoding (:data:`.nets.multihead_unet.DECODINGS`) it runs with *in the blend*, instead of
    #: its manifest's. The generalist's manifest keeps its own rule's choice (alone, on its held-out photos:
    #: issue 17); colouring backgrounds in this pipeline it decodes as issue 18's rule chose (docs/tuning.md).
    #: Experts named here but not loaded, or without a decoding, are left out; one that cannot change its
    #: decoding (an ONNX graph with another folded in) keeps its own, with a warning.
    decode: Mapping[str, str] = field(default_factory=lambda: {"generalist": "blend 0.75 soft"})
    #: how an expert decodes when it colours a photo alone (see ``alone_share``): "blend" = as ``decode`` says,
    #: "manifest" = as its manifest says, i.e. exactly the expert alone (the generalist's own rule chose that
    #: decoding on its held-out photos, issue 17). Default "manifest" with ``alone_share`` 0.9, chosen by issue
    #: 18's rule (docs/tuning_alone_share.md: mean L2ab 13.49 vs 13.68 for "blend")
    decode_alone: str = "manifest"
    #: an expert colours a photo "alone" (for ``decode_alone``) when it carries at least this share of the
    #: photo's blend weight; 1.0 = only when no other expert has a region on it (composite.alone_experts)
    alone_share: float = 0.9
    max_batch: int = 8            #: crops per expert forward pass
    upsample: str = "guided"      #: "guided" (edge-aware, follows full-res L) or "bilinear"
    #: where the experts run (and the router's segmenter, unless ``router_backend`` says otherwise), one of
    #: :data:`BACKENDS`; fixed when the models load
    backend: str = "torch"
    #: where the router's segmenter runs: one of :data:`BACKENDS`, or "auto" = onnxruntime on CPU when it is
    #: installed, else ``backend``. The Lite0 FPN runs about 2x faster there on every machine measured while
    #: the experts run slower (bench/results/speed.md), so "auto" splits them; the converted graph is cached
    #: (:func:`.onnx_backend.cache_dir`). Fixed when the models load
    router_backend: str = "auto"
    threads: int | None = None    #: onnxruntime intra-op threads (None: one per core); torch's are process-wide


@dataclass
class ColorizeResult:
    """Everything one image produced. Tensors on CPU; ``rgb`` is full resolution in [0, 1]."""

    rgb: torch.Tensor
    L_work: torch.Tensor
    ab_work: torch.Tensor
    probs: torch.Tensor
    route_classes: tuple[str, ...]
    weights: dict[str, torch.Tensor]
    boxes: dict[str, Box]
    per_expert: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class FrameCarry(Protocol):
    """Hook for frame sequences (video): :meth:`Pipeline.colorize_batch` hands it each batch's router
    probabilities and blended ab, at working size and in frame order, and uses what it returns.

    Why a hook and not a video pipeline: carrying colour along motion (``video.FlowCarry``) needs the
    intermediate results, and everything else (routing, experts, the join with L) must stay this code.
    """

    def carry_probs(self, L_works: list[torch.Tensor], probs: list[torch.Tensor]) -> list[torch.Tensor]: ...

    def carry_ab(self, L_works: list[torch.Tensor], ab_works: list[torch.Tensor]) -> list[torch.Tensor]: ...


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; anything else as given (error if CUDA asked but absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return dev


def working_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) scaled so the long side is ``long_side`` (never upscaled beyond the original)."""
    s = min(1.0, long_side / max(h, w))
    return max(8, round(h * s)), max(8, round(w * s))


def _torch_expert(spec: ExpertSpec, device: torch.device, threads: int | None) -> nn.Module:
    # channels-last weights make the convolutions run channels-last whatever the input's layout: 1.5x faster
    # for resnet18-deconv on this CPU (bench/results/speed.md has the pipeline before/after)
    return spec.build().to(device, memory_format=torch.channels_last)


def _onnxruntime_expert(spec: ExpertSpec, device: torch.device, threads: int | None) -> nn.Module:
    from .onnx_backend import load_expert

    return load_expert(spec, device, threads)


def _torch_router(router: Router, device: torch.device, threads: int | None) -> Router:
    if isinstance(router.segmenter, nn.Module):
        router.segmenter.to(memory_format=torch.channels_last)  # as for the experts (~1.1x for the Lite0 FPN)
    return router


def _onnxruntime_router(router: Router, device: torch.device, threads: int | None) -> Router:
    from .onnx_backend import cache_dir, router_on_onnxruntime

    return router_on_onnxruntime(router, threads, device, cache=cache_dir())


#: backend -> (expert loader, router converter). A loaded model knows its backend; the code path is one.
BACKENDS = {"torch": (_torch_expert, _torch_router), "onnxruntime": (_onnxruntime_expert, _onnxruntime_router)}


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
            self._model = BACKENDS[self.backend][0](self.spec, self.device, self.threads)
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


class Pipeline:
    """Router + experts + compositor. Build with :meth:`load`; call :meth:`colorize` / :meth:`colorize_batch`."""

    def __init__(self, experts: dict[str, LoadedExpert], router: Router, device: torch.device,
                 options: PipelineOptions | None = None, scan: PluginScan | None = None) -> None:
        if not experts:
            raise ValueError("no usable experts: add plugin folders under experts/ or pass --experts DIR")
        self.experts, self.router, self.device = experts, router.to(device).eval(), device
        opt = options or PipelineOptions()
        if opt.decode_alone not in DECODE_ALONE:
            raise ValueError(f"unknown decode_alone {opt.decode_alone!r}; known: {', '.join(DECODE_ALONE)}")
        if not 0.0 < opt.alone_share <= 1.0:
            raise ValueError(f"alone_share must be in (0, 1], got {opt.alone_share}")
        self.options = replace(opt, decode=usable_decodings(experts, opt.decode))
        self.scan = scan

    @classmethod
    def load(cls, experts_dirs: Sequence[str | Path] = (), router: str = "embedded", device: str = "auto",
             options: PipelineOptions | None = None, enabled: Sequence[str] | None = None,
             use_shipped: bool = True, router_options: dict | None = None) -> Pipeline:
        """Discover plugins (shipped + ``$ENSEMBLE_COLOR_EXPERTS`` + ``experts_dirs``), load the router."""
        table = RoutingTable.load()
        path = expert_search_path(experts_dirs)
        if not use_shipped:
            path = path[1:]
        scan = discover(path, table.known_classes())
        scan.warn_skipped()
        dev = resolve_device(device)
        opt = options or PipelineOptions()
        if opt.backend not in BACKENDS:
            raise ValueError(f"unknown backend {opt.backend!r}; known: {', '.join(BACKENDS)}")
        if opt.router_backend not in (*BACKENDS, "auto"):
            raise ValueError(f"unknown router backend {opt.router_backend!r}; known: auto, {', '.join(BACKENDS)}")
        experts = {n: LoadedExpert(s, dev, opt.backend, opt.threads) for n, s in scan.experts.items()
                   if enabled is None or n in enabled}
        if enabled is not None and (unknown := set(enabled) - set(scan.experts)):
            raise ValueError(f"unknown expert(s) {sorted(unknown)}; installed: {sorted(scan.experts)}")
        generalist = experts.get("generalist")
        r = _load_router(router, table, opt, dev, (lambda: generalist.torch_model()) if generalist else None,
                         router_options or {})
        unserved = [c for c in r.route_classes if not any(c in e.spec.routes for e in experts.values())]
        if unserved and not any(e.spec.fallback for e in experts.values()):
            warnings.warn(f"route classes {unserved} have no expert; the fallback expert colours them", stacklevel=2)
        return cls(experts, r, dev, opt, scan)

    def with_options(self, **changes) -> Pipeline:
        """Same loaded models, other options (cheap: used by the app per request)."""
        fixed = sorted(k for k in ("backend", "router_backend", "threads")
                       if k in changes and changes[k] != getattr(self.options, k))
        if fixed:
            raise ValueError(f"{', '.join(fixed)} belong to the loaded models: pass them to Pipeline.load(options=…)")
        return Pipeline(self.experts, self.router, self.device, replace(self.options, **changes), self.scan)

    def subset(self, names: Sequence[str]) -> Pipeline:
        """Same models restricted to ``names`` (e.g. the app's expert checkboxes)."""
        return Pipeline({n: self.experts[n] for n in names}, self.router, self.device, self.options, self.scan)

    @property
    def routes(self) -> list[ExpertRoute]:
        return [e.route for e in self.experts.values()]

    def served_by(self) -> dict[str, str]:
        """Route class -> expert name(s) that colour it (the fallback for unclaimed classes)."""
        return served_by(self.router.route_classes, self.routes, self.options.assign)

    def colorize(self, image: LoadedImage | torch.Tensor, per_expert: bool = False) -> ColorizeResult:
        """Colourise one image (a :class:`LoadedImage` or an RGB/gray tensor (3|1, H, W) in [0, 1])."""
        return self.colorize_batch([image], per_expert=per_expert)[0]

    def colorize_each(self, images: Sequence[LoadedImage | torch.Tensor], per_expert: bool = False
                      ) -> list[ColorizeResult | Exception]:
        """:meth:`colorize_batch`, isolating failures: if the batch raises, each image runs alone, so one
        image that breaks the pipeline fails only itself. Any exception is caught on purpose and returned in
        that image's place, for the front end to report with the file's name (the run must go on)."""
        if not images:
            return []
        try:
            return list(self.colorize_batch(images, per_expert=per_expert))
        except Exception as err:  # returned, not swallowed: see the docstring
            if len(images) == 1:
                return [err]
        out: list[ColorizeResult | Exception] = []
        for im in images:
            try:
                out.append(self.colorize(im, per_expert=per_expert))
            except Exception as err:  # returned in the image's place
                out.append(err)
        return out

    @torch.inference_mode()
    def colorize_batch(self, images: Sequence[LoadedImage | torch.Tensor], per_expert: bool = False,
                       carry: FrameCarry | None = None) -> list[ColorizeResult]:
        """Colourise several images; each expert runs once per ``max_batch`` crops across all of them.

        ``carry``: the images are consecutive frames and this hook may replace their probabilities and
        ab (see :class:`FrameCarry`); ``probs`` and ``ab_work`` in the results are then the carried ones.
        """
        opt = self.options
        t0 = time.perf_counter()
        L_fulls = [_to_l(im) for im in images]
        L_works = [F.interpolate(L[None], size=working_size(*L.shape[-2:], opt.work_size), mode="bilinear",
                                 align_corners=False, antialias=True)[0] if max(L.shape[-2:]) > opt.work_size
                   else L for L in L_fulls]
        t1 = time.perf_counter()
        probs = [self.router(L.to(self.device)[None])[0].float().cpu() for L in L_works]
        if carry is not None:
            probs = carry.carry_probs(L_works, probs)
        t2 = time.perf_counter()
        fallback = choose_fallback(self.routes)
        multiple = max(e.descriptor.size_multiple for e in self.experts.values())
        classes = self.router.route_classes
        plans = [plan_regions(expert_weights(share_context(p, classes, opt.context), classes, self.routes,
                                             opt.assign),
                              fallback, opt.threshold, opt.margin, multiple, opt.min_fraction, opt.fallback_min,
                              opt.crop_quantile)
                 for p in probs]
        ab_layers = self._run_experts(L_works, [boxes for boxes, _ in plans],
                                      [alone_experts(weights, opt.alone_share) for _, weights in plans])
        t3 = time.perf_counter()
        ab_works = [blend(layers, weights) for layers, (_, weights) in zip(ab_layers, plans, strict=True)]
        if carry is not None:
            ab_works = carry.carry_ab(L_works, ab_works)
        results = []
        for i, (L_full, L_work) in enumerate(zip(L_fulls, L_works, strict=True)):
            boxes, weights = plans[i]
            ab_work = ab_works[i]
            rgb = compose(L_full, ab_work, opt.saturation, L_work if opt.upsample == "guided" else None)
            results.append(ColorizeResult(rgb=rgb.cpu(), L_work=L_work, ab_work=ab_work, probs=probs[i],
                                          route_classes=self.router.route_classes, weights=weights, boxes=boxes))
        t4 = time.perf_counter()
        if per_expert:
            for res in results:
                res.per_expert = self.full_frame_experts(res.L_work)
        n = len(images)
        for res in results:
            res.seconds = {"load_resize": (t1 - t0) / n, "router": (t2 - t1) / n, "experts": (t3 - t2) / n,
                           "compose": (t4 - t3) / n}
        return results

    def colorize_video(self, src: str | Path, dst: str | Path, **options) -> VideoReport:
        """Colourise a video file into ``dst``, temporally stable (see :func:`ensemble_color.video.colorize_video`)."""
        from .video import colorize_video

        return colorize_video(self, src, dst, **options)

    def _run_experts(self, L_works: list[torch.Tensor], boxes: list[dict[str, Box]], alone: list[set[str]]
                     ) -> list[dict[str, torch.Tensor]]:
        """For each expert, batch its same-sized crops over all images; paste results into ab layers.
        ``alone``: per image, the experts colouring it alone (their decoding, see ``_decoding``).

        Only crops of identical size share a forward pass, so a batch gives the same colours as one image
        at a time (padding to a common size would shift the border context), up to float rounding: CPU
        convolution kernels may differ by batch size (≤ 1e-4 ab measured on an AVX2-only CPU).
        """
        layers: list[dict[str, torch.Tensor]] = [{} for _ in L_works]
        for name, loaded in self.experts.items():
            groups: dict[tuple[str | None, int, int], list[tuple[int, Box]]] = {}
            for i, b in enumerate(boxes):
                if name in b:
                    box = b[name]
                    key = (self._decoding(name, alone=name in alone[i]), box.y1 - box.y0, box.x1 - box.x0)
                    groups.setdefault(key, []).append((i, box))
            for (decoding, _, _), jobs in groups.items():
                expert = loaded.with_decoding(decoding)
                for start in range(0, len(jobs), self.options.max_batch):
                    chunk = jobs[start:start + self.options.max_batch]
                    crops = torch.stack([L_works[i][:, box.slices[0], box.slices[1]] for i, box in chunk])
                    for (i, box), ab in zip(chunk, expert.run(crops).cpu(), strict=True):
                        layer = torch.zeros(2, *L_works[i].shape[-2:])
                        layer[:, box.slices[0], box.slices[1]] = ab
                        layers[i][name] = layer
        return layers

    def _decoding(self, name: str, alone: bool) -> str | None:
        """The named decoding expert ``name`` runs with (``None``: its manifest's); ``alone``: it colours the
        photo alone (see ``PipelineOptions.decode_alone`` and ``alone_share``)."""
        if alone and self.options.decode_alone == "manifest":
            return None
        return self.options.decode.get(name)

    def full_frame_experts(self, L_work: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each expert alone on the whole working image -> RGB (3, h, w); for galleries and comparisons."""
        out = {}
        with torch.inference_mode():
            for name, expert in self.experts.items():
                ab = expert.run(L_work[None].to(self.device))[0].cpu()
                out[name] = join_l_ab(L_work, ab)
        return out


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


def _load_router(spec: str, table: RoutingTable, opt: PipelineOptions, device: torch.device,
                 generalist: Callable[[], nn.Module] | None, router_options: dict) -> Router:
    """The router on the options' backend. An exported router folder (``model.onnx``) runs on onnxruntime
    (on either backend when it ships no torch weights); any other router loads in torch, then converts."""
    from .onnx_backend import is_onnx_router_folder

    folder = Path(spec)
    backend = router_backend(opt, device)
    exported = spec not in available_routers() and is_onnx_router_folder(folder)
    if exported and (backend == "onnxruntime" or not (folder / "model.safetensors").is_file()):
        from .onnx_backend import onnx_router

        return onnx_router(folder, table, opt.threads, device, **router_options)
    r = load_router(spec, table, generalist=generalist, **router_options)
    from .onnx_backend import OnnxModelError

    try:
        return BACKENDS[backend][1](r, device, opt.threads)
    except (OnnxModelError, torch.onnx.errors.OnnxExporterError) as e:
        if opt.router_backend != "auto":  # asked for by name, a router that does not convert is an error
            raise
        warnings.warn(f"router {r.name} stays on torch (it did not convert to onnxruntime: {e})", stacklevel=3)
        return _torch_router(r, device, opt.threads)


def router_backend(opt: PipelineOptions, device: torch.device) -> str:
    """The backend ``opt.router_backend`` names, "auto" resolved (onnxruntime on CPU when installed)."""
    if opt.router_backend != "auto":
        return opt.router_backend
    if device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime"
    return opt.backend


def _to_l(image: LoadedImage | torch.Tensor) -> torch.Tensor:
    """Full-resolution L (1, H, W) of an input; colour is discarded here, once, for every front end."""
    rgb = image.rgb if isinstance(image, LoadedImage) else image
    if rgb.dim() != 3 or rgb.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor (1|3, H, W), got shape {tuple(rgb.shape)}")
    if rgb.shape[0] == 1 or (torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])):
        return gray_to_l(rgb[:1].float())  # the photos this product colours: one gamma curve, not three
    return rgb_to_l(rgb.float()[None])[0]
