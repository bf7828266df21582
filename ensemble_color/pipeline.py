"""The one colourisation pipeline object shared by the CLI, the web app, the benchmarks and the tests.

    pipe = Pipeline.load()                      # shipped experts + embedded router, auto device
    result = pipe.colorize(load_image("photo.jpg"))
    to_pil(result.rgb).save("photo_colorized.png")

Flow: full-res L -> working-size L -> router probabilities -> expert weights and crops ->
each needed expert runs once per batch on its crops -> blend -> upsample ab -> join with full-res L.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .color import gray_to_l, join_l_ab, rgb_to_l
from .composite import (
    DECODE_ALONE,
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
from .descreen import without_screen
from .hints import HINT_METHODS, Hint, check_hints, hint_targets, paint_routes, propagate
from .io import LoadedImage
from .loading import LoadedExpert, _load_router, resolve_device, usable_decodings
from .options import BACKENDS, LoadOptions, PipelineOptions
from .plugins import PluginScan, discover, expert_search_path
from .routing import Router, RoutingTable
from .threads import configure_threads


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


def working_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(h, w) scaled so the long side is ``long_side`` (never upscaled beyond the original)."""
    s = min(1.0, long_side / max(h, w))
    return max(8, round(h * s)), max(8, round(w * s))


def seen_l(L: torch.Tensor, descreen: bool = True) -> torch.Tensor:
    """The full-resolution L the models see (shrunk by :func:`working_l`) and the upsampling follows: L (1, H, W)
    descreened if it carries a halftone screen (and ``descreen``), else L itself."""
    return without_screen(L) if descreen else L


def working_l(L: torch.Tensor, work_size: int) -> torch.Tensor:
    """What the router and the experts see: the seen L (:func:`seen_l`) shrunk (antialiased) so its long side is
    ``work_size``."""
    if max(L.shape[-2:]) <= work_size:
        return L
    return F.interpolate(L[None], size=working_size(*L.shape[-2:], work_size), mode="bilinear",
                         align_corners=False, antialias=True)[0]


class Pipeline:
    """Router + experts + compositor. Build with :meth:`load`; call :meth:`colorize` / :meth:`colorize_batch`."""

    def __init__(self, experts: dict[str, LoadedExpert], router: Router, device: torch.device,
                 options: PipelineOptions | None = None, scan: PluginScan | None = None,
                 load_options: LoadOptions | None = None) -> None:
        if not experts:
            raise ValueError("no usable experts: add plugin folders under experts/ or pass --experts DIR")
        self.experts, self.router, self.device = experts, router.to(device).eval(), device
        opt = options or PipelineOptions()
        if opt.decode_alone not in DECODE_ALONE:
            raise ValueError(f"unknown decode_alone {opt.decode_alone!r}; known: {', '.join(DECODE_ALONE)}")
        if opt.hint_method not in HINT_METHODS:
            raise ValueError(f"unknown hint_method {opt.hint_method!r}; known: {', '.join(HINT_METHODS)}")
        if not 0.0 < opt.alone_share <= 1.0:
            raise ValueError(f"alone_share must be in (0, 1], got {opt.alone_share}")
        self.options = replace(opt, decode=usable_decodings(experts, opt.decode))
        self.scan = scan
        self.load_options = load_options or LoadOptions()

    @classmethod
    def load(cls, experts_dirs: Sequence[str | Path] = (), options: PipelineOptions | None = None, *,
             load: LoadOptions | None = None, **load_fields: Any) -> Pipeline:
        """Discover plugins (shipped + ``$ENSEMBLE_COLOR_EXPERTS`` + ``experts_dirs``), load the router and the
        experts as ``load`` says (or its fields by keyword: ``router=``, ``device=``, ``enabled=``,
        ``use_shipped=``, ``router_options=``, ``backend=``, ``router_backend=``, ``threads=``). On CPU without
        ``threads``, torch and onnxruntime get the cores free of other work (:func:`.threads.configure_threads`):
        two threads on two cores with another job running are 5-10x slower than one."""
        load = replace(load or LoadOptions(), **load_fields)
        if experts_dirs:
            load = replace(load, experts_dirs=(*load.experts_dirs, *experts_dirs))
        table = RoutingTable.load()
        path = expert_search_path(load.experts_dirs)
        if not load.use_shipped:
            path = path[1:]
        scan = discover(path, table.known_classes())
        scan.warn_skipped()
        dev = resolve_device(load.device)
        if load.threads is None and dev.type == "cpu":  # the cores free of other work, for torch and onnxruntime
            load = replace(load, threads=configure_threads(None))
        if load.backend not in BACKENDS:
            raise ValueError(f"unknown backend {load.backend!r}; known: {', '.join(BACKENDS)}")
        if load.router_backend not in (*BACKENDS, "auto"):
            raise ValueError(f"unknown router backend {load.router_backend!r}; known: auto, {', '.join(BACKENDS)}")
        enabled = load.enabled
        experts = {n: LoadedExpert(s, dev, load.backend, load.threads) for n, s in scan.experts.items()
                   if enabled is None or n in enabled}
        if enabled is not None and (unknown := set(enabled) - set(scan.experts)):
            raise ValueError(f"unknown expert(s) {sorted(unknown)}; installed: {sorted(scan.experts)}")
        generalist = experts.get("generalist")
        r = _load_router(load.router, table, load, dev, (lambda: generalist.torch_model()) if generalist else None,
                         dict(load.router_options))
        unserved = [c for c in r.route_classes if not any(c in e.spec.routes for e in experts.values())]
        if unserved and not any(e.spec.fallback for e in experts.values()):
            warnings.warn(f"route classes {unserved} have no expert; the fallback expert colours them", stacklevel=2)
        return cls(experts, r, dev, options or PipelineOptions(), scan, load)

    def with_options(self, **changes) -> Pipeline:
        """Same loaded models, other options (cheap: used by the app per request)."""
        if fixed := sorted(set(changes) & {f.name for f in fields(LoadOptions)}):
            raise ValueError(f"{', '.join(fixed)} belong to the loaded models: pass them to Pipeline.load")
        return Pipeline(self.experts, self.router, self.device, replace(self.options, **changes), self.scan,
                        self.load_options)

    def subset(self, names: Sequence[str]) -> Pipeline:
        """Same models restricted to ``names`` (e.g. the app's expert checkboxes)."""
        return Pipeline({n: self.experts[n] for n in names}, self.router, self.device, self.options, self.scan,
                        self.load_options)

    @property
    def routes(self) -> list[ExpertRoute]:
        return [e.route for e in self.experts.values()]

    def served_by(self) -> dict[str, str]:
        """Route class -> expert name(s) that colour it (the fallback for unclaimed classes)."""
        return served_by(self.router.route_classes, self.routes, self.options.assign)

    def colorize(self, image: LoadedImage | torch.Tensor, per_expert: bool = False, hints: Sequence[Hint] = (),
                 routes: Sequence[tuple[Hint, str]] = ()) -> ColorizeResult:
        """Colourise one image (a :class:`LoadedImage` or an RGB/gray tensor (3|1, H, W) in [0, 1]).

        ``hints``: colours the user knows (:class:`~ensemble_color.hints.Hint`, photo pixel coordinates), spread
        through the object they touch. ``routes``: painted strokes that say which route class a region is
        (``(Hint, "person")``; the stroke's colour is unused), overriding the router there."""
        return self.colorize_batch([image], per_expert=per_expert, hints=[hints], routes=[routes])[0]

    def colorize_each(self, images: Sequence[LoadedImage | torch.Tensor], per_expert: bool = False,
                      hints: Sequence[Hint] = ()) -> list[ColorizeResult | Exception]:
        """:meth:`colorize_batch`, isolating failures: if the batch raises, each image runs alone, so one
        image that breaks the pipeline fails only itself. Any exception is caught on purpose and returned in
        that image's place, for the front end to report with the file's name (the run must go on)."""
        if not images:
            return []
        try:
            return list(self.colorize_batch(images, per_expert=per_expert, hints=[hints] * len(images)))
        except Exception as err:  # returned, not swallowed: see the docstring
            if len(images) == 1:
                return [err]
        out: list[ColorizeResult | Exception] = []
        for im in images:
            try:
                out.append(self.colorize(im, per_expert=per_expert, hints=hints))
            except Exception as err:  # returned in the image's place
                out.append(err)
        return out

    @torch.inference_mode()
    def colorize_batch(self, images: Sequence[LoadedImage | torch.Tensor], per_expert: bool = False,
                       carry: FrameCarry | None = None, hints: Sequence[Sequence[Hint]] | None = None,
                       routes: Sequence[Sequence[tuple[Hint, str]]] | None = None) -> list[ColorizeResult]:
        """Colourise several images; each expert runs once per ``max_batch`` crops across all of them.

        ``carry``: the images are consecutive frames and this hook may replace their probabilities and
        ab (see :class:`FrameCarry`); ``probs`` and ``ab_work`` in the results are then the carried ones.
        ``hints`` / ``routes``: per image, as :meth:`colorize` takes them (checked against the image's size).
        """
        opt = self.options
        t0 = time.perf_counter()
        L_fulls = [image_l(im) for im in images]
        L_seens = [seen_l(L, opt.descreen) for L in L_fulls]
        L_works = [working_l(L, opt.work_size) for L in L_seens]
        t1 = time.perf_counter()
        probs = [self.router(L.to(self.device)[None])[0].float().cpu() for L in L_works]
        if carry is not None:
            probs = carry.carry_probs(L_works, probs)
        for i, painted in enumerate(routes or []):
            if painted:
                check_hints([h for h, _ in painted], L_fulls[i].shape[-1], L_fulls[i].shape[-2])
                probs[i] = paint_routes(probs[i], self.router.route_classes, painted, tuple(L_fulls[i].shape[-2:]))
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
        for i, given in enumerate(hints or []):
            if given:
                check_hints(given, L_fulls[i].shape[-1], L_fulls[i].shape[-2])
                masks, targets = hint_targets(given, tuple(L_fulls[i].shape[-2:]), tuple(L_works[i].shape[-2:]),
                                              opt.saturation, L_works[i].reshape(L_works[i].shape[-2:]))
                ab_works[i] = propagate(ab_works[i], L_works[i], masks, targets, probs[i], method=opt.hint_method)
        results = []
        for i, (L_full, L_seen, L_work) in enumerate(zip(L_fulls, L_seens, L_works, strict=True)):
            boxes, weights = plans[i]
            ab_work = ab_works[i]
            rgb = compose(L_full, ab_work, opt.saturation, L_work if opt.upsample == "guided" else None,
                          guide=L_seen)
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


def image_l(image: LoadedImage | torch.Tensor) -> torch.Tensor:
    """Full-resolution L (1, H, W) of an input; colour is discarded here, once, for every front end."""
    rgb = image.rgb if isinstance(image, LoadedImage) else image
    if rgb.dim() != 3 or rgb.shape[0] not in (1, 3):
        raise ValueError(f"expected an image tensor (1|3, H, W), got shape {tuple(rgb.shape)}")
    if rgb.shape[0] == 1 or (torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2])):
        return gray_to_l(rgb[:1].float())  # the photos this product colours: one gamma curve, not three
    return rgb_to_l(rgb.float()[None])[0]
