"""The router: L image -> per-pixel probabilities over route classes.

A router is a segmentation *backend* (anything producing logits over its own labels) plus a row of
the routing table (``weights/router/routing_table.json``) that sums label probabilities into route classes.
Backends: ``embedded`` (our trained grayscale smp model in ``weights/router/``, the default), any smp
checkpoint folder, torchvision's VOC-label segmenters (online weights), ``generalist`` (the
generalist expert's segmentation head) and ``background`` (honest placeholder: all background).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kornia.filters
import torch
import torch.nn.functional as F
from torch import nn

from .color import l_to_gray_unit
from .weights import router_dir

BACKGROUND = "background"


@dataclass(frozen=True)
class RoutingTable:
    """Backend labels -> route classes, read from a JSON data file."""

    route_classes: tuple[str, ...]
    backends: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: str | Path | None = None) -> RoutingTable:
        path = Path(path) if path is not None else router_dir() / "routing_table.json"
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(tuple(data["route_classes"]), data["backends"])

    def known_classes(self) -> set[str]:
        """Every route class some backend can produce (what a plugin may claim)."""
        out = set(self.route_classes)
        for b in self.backends.values():
            out |= set(b.get("map", {}).values()) | {b.get("default", BACKGROUND)}
        return out

    def classes_of(self, backend: str) -> tuple[str, ...]:
        """Route classes that ``backend`` predicts, in table order then new ones."""
        b = self.backends[backend]
        produced = set(b.get("map", {}).values()) | {b.get("default", BACKGROUND)}
        ordered = [c for c in self.route_classes if c in produced]
        return tuple(ordered + sorted(produced - set(ordered)))

    def matrix(self, backend: str) -> tuple[torch.Tensor, tuple[str, ...]]:
        """(n_labels, n_routes) 0/1 matrix summing label probabilities into route probabilities."""
        b = self.backends[backend]
        classes = self.classes_of(backend)
        m = torch.zeros(len(b["labels"]), len(classes))
        for i, label in enumerate(b["labels"]):
            m[i, classes.index(b.get("map", {}).get(label, b.get("default", BACKGROUND)))] = 1.0
        return m, classes


class Router(nn.Module):
    """Segmenter + label map: ``forward(L)`` -> (B, R, H, W) probabilities summing to 1 per pixel.

    ``temperature`` > 1 softens the segmenter's decisions (wider blends at region borders);
    ``feather`` is the sigma (in working pixels) of a Gaussian blur on the probabilities, so experts'
    colours cross-fade instead of meeting at a seam.
    ``logit_bias`` (route class -> offset) is added to the logits of every label routed to that class before
    the softmax: a prior shift that calibrates a trained router without retraining it (the embedded router's
    config carries the one chosen by ``bench/router_select.py``; ``weights/router/README.md``).
    """

    def __init__(self, name: str, segmenter: Callable[[torch.Tensor], torch.Tensor], label_to_route: torch.Tensor,
                 route_classes: tuple[str, ...], input_size: int = 320, size_multiple: int = 32,
                 temperature: float = 1.0, feather: float = 0.0,
                 logit_bias: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.name = name
        self.segmenter = segmenter
        self.register_buffer("label_to_route", label_to_route, persistent=False)
        self.route_classes = route_classes
        self.input_size, self.size_multiple = input_size, size_multiple
        self.temperature, self.feather = temperature, feather
        self.logit_bias = validate_logit_bias(logit_bias or {}, route_classes)

    def with_segmenter(self, segmenter: Callable[[torch.Tensor], torch.Tensor], name: str) -> Router:
        """The same router (table, sizes, temperature, feather, bias) around another segmenter (a converted one)."""
        return Router(name, segmenter, self.label_to_route, self.route_classes, input_size=self.input_size,
                      size_multiple=self.size_multiple, temperature=self.temperature, feather=self.feather,
                      logit_bias=self.logit_bias)

    def _label_bias(self, like: torch.Tensor) -> torch.Tensor | None:
        """``logit_bias`` in the segmenter's label space, shaped to add to (B, labels, h, w) logits."""
        if not any(self.logit_bias.values()):
            return None
        per_route = torch.tensor([self.logit_bias.get(c, 0.0) for c in self.route_classes], dtype=like.dtype)
        return (self.label_to_route.to(like) @ per_route.to(like.device))[None, :, None, None]

    def _segmenter_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.input_size / max(h, w)
        m = self.size_multiple
        return max(m, round(h * s / m) * m), max(m, round(w * s / m) * m)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        h, w = L.shape[-2:]
        x = F.interpolate(L.float(), size=self._segmenter_size(h, w), mode="bilinear", align_corners=False,
                          antialias=True)
        logits = self.segmenter(x).float() / self.temperature
        if (bias := self._label_bias(logits)) is not None:
            logits = logits + bias
        probs = torch.softmax(logits, dim=1)
        routed = torch.einsum("blhw,lr->brhw", probs, self.label_to_route.to(probs))
        routed = F.interpolate(routed, size=(h, w), mode="bilinear", align_corners=False)
        if self.feather > 0:
            k = 2 * round(3 * self.feather) + 1
            routed = kornia.filters.gaussian_blur2d(routed, (k, k), (self.feather, self.feather),
                                                    border_type="replicate")
        return routed / routed.sum(1, keepdim=True).clamp_min(1e-6)


def validate_logit_bias(bias: Mapping[str, Any], route_classes: tuple[str, ...]) -> dict[str, float]:
    """A ``logit_bias`` mapping checked against the router's classes (``ValueError`` naming the problem)."""
    if not isinstance(bias, Mapping):
        raise ValueError(f"router logit_bias must map route classes to numbers, got {type(bias).__name__}")
    unknown = sorted(set(bias) - set(route_classes))
    if unknown:
        raise ValueError(f"router logit_bias names unknown route class(es) {unknown}; known: {list(route_classes)}")
    bad = [k for k, v in bias.items() if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) > 20]
    if bad:
        raise ValueError(f"router logit_bias for {bad} must be numbers within ±20")
    return {k: float(v) for k, v in bias.items()}


class _AllBackground(nn.Module):
    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return torch.zeros(L.shape[0], 1, *L.shape[-2:], device=L.device)


def background_router() -> Router:
    """Honest placeholder: every pixel is background (served by the scenes or generalist expert)."""
    return Router("background", _AllBackground(), torch.ones(1, 1), (BACKGROUND,), input_size=64)


class _LToUnit(nn.Module):
    """Wraps a 1-channel segmenter: L (Lab units) -> its input scale before the network (model owns normalisation).

    ``mapping`` is one of :data:`INPUT_MAPPINGS`: ``l_unit`` (L/50 - 1, our from-scratch routers) or
    ``gray_unit`` (the sRGB gray value, normalised as ImageNet EfficientNet-Lite expects, for routers whose
    encoder starts from those weights: the summed stem then sees what it saw in ImageNet training).
    """

    def __init__(self, net: nn.Module, mapping: str = "l_unit") -> None:
        super().__init__()
        if mapping not in INPUT_MAPPINGS:
            raise ValueError(f"unknown router input mapping {mapping!r}; known: {', '.join(INPUT_MAPPINGS)}")
        self.net, self.mapping = net, mapping

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.net(INPUT_MAPPINGS[self.mapping](L))


def _l_unit(L: torch.Tensor) -> torch.Tensor:
    return L / 50.0 - 1.0


#: router input mappings by the name a router's config gives (``ensemble_color.input_mapping``)
INPUT_MAPPINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"l_unit": _l_unit, "gray_unit": l_to_gray_unit}


class RouterConfigError(ValueError):
    """A router folder whose ``config.json`` cannot be used; the message names the folder and says why."""


def read_router_config(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A router folder's ``config.json`` and its ``ensemble_color`` block, checked to be JSON objects (the
    folder may come from anywhere: ``--router PATH``)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RouterConfigError(f"router {folder}: config.json is unreadable ({err})") from None
    extra = config.get("ensemble_color", {}) if isinstance(config, dict) else None
    if not isinstance(extra, dict):
        raise RouterConfigError(f"router {folder}: config.json needs to be an object, its 'ensemble_color' one too")
    return config, extra


def router_settings(folder: Path, extra: Mapping[str, Any], table: RoutingTable
                    ) -> tuple[torch.Tensor, tuple[str, ...], dict[str, Any]]:
    """What every router folder format (smp weights, exported ONNX) reads from its config's ``ensemble_color``
    block, read and checked in one place: the label -> route matrix and route classes of its routing-table
    backend, and the :class:`Router` options it sets (``input_size``, ``logit_bias``)."""
    backend, input_size = extra.get("backend", "ensemble"), extra.get("input_size", 320)
    if backend not in table.backends:
        raise RouterConfigError(f"router {folder}: routing-table backend {backend!r} is unknown; "
                                f"known: {', '.join(table.backends)}")
    if not (isinstance(input_size, int) and 16 <= input_size <= 4096):
        raise RouterConfigError(f"router {folder}: input_size {input_size!r} is not an integer in 16..4096")
    matrix, classes = table.matrix(backend)
    return matrix, classes, {"input_size": input_size, "logit_bias": extra.get("logit_bias")}


def _build_smp(folder: Path, config: Mapping[str, Any]) -> nn.Module:
    """The network of an smp checkpoint folder (``config.json`` as written by smp's save_pretrained +
    safetensors)."""
    import segmentation_models_pytorch as smp

    if not isinstance(config.get("_model_class"), str):
        raise RouterConfigError(f"router {folder}: config.json names no smp '_model_class'")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k != "ensemble_color"}
    kwargs["encoder_weights"] = None  # weights come from the folder, never from a hub
    net = smp.create_model(config["_model_class"], **kwargs)
    load_smp_weights(net, folder)
    return net.eval()


def load_smp_weights(net: nn.Module, folder: Path) -> None:
    """Load ``folder/model.safetensors`` (fp16 or fp32, never pickle) into ``net``, strictly, as fp32."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    net.load_state_dict({k: v.float() for k, v in state.items()})


def smp_router(folder: str | Path, table: RoutingTable, **options: Any) -> Router:
    """Load an smp segmenter folder; its config names the table backend (default ``ensemble``)."""
    folder = Path(folder)
    config, extra = read_router_config(folder)
    matrix, classes, settings = router_settings(folder, extra, table)
    net = _build_smp(folder, config)
    in_ch = net.encoder._in_channels if hasattr(net.encoder, "_in_channels") else 1
    mapping = extra.get("input_mapping", "l_unit")
    seg: nn.Module = _LToUnit(net, mapping) if in_ch == 1 else _GrayToRGB(net, None, None)
    return Router(f"smp:{folder.name}", seg, matrix, classes, **(settings | options))


class _GrayToRGB(nn.Module):
    """Replicates L as gray RGB, applies the backend's own normalisation, returns its logits."""

    def __init__(self, net: nn.Module, mean: list[float] | None, std: list[float] | None) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean or [0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or [0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        from .color import lab_to_rgb

        gray = lab_to_rgb(torch.cat([L, torch.zeros_like(L).expand(-1, 2, -1, -1)], 1))
        out = self.net((gray - self.mean) / self.std)
        return out["out"] if isinstance(out, dict) else out


#: torchvision segmenters with COCO-with-VOC-labels weights: name -> (builder, weights enum name).
TORCHVISION_BACKENDS = {
    "lraspp": ("lraspp_mobilenet_v3_large", "LRASPP_MobileNet_V3_Large_Weights"),
    "deeplabv3": ("deeplabv3_mobilenet_v3_large", "DeepLabV3_MobileNet_V3_Large_Weights"),
}


def torchvision_router(name: str, table: RoutingTable, pretrained: bool = True, **options: Any) -> Router:
    """A torchvision VOC-label segmenter as router. ``pretrained`` downloads weights (online only)."""
    import torchvision.models.segmentation as seg

    builder_name, weights_name = TORCHVISION_BACKENDS[name]
    weights = getattr(seg, weights_name).COCO_WITH_VOC_LABELS_V1
    if pretrained:
        net = getattr(seg, builder_name)(weights=weights)
    else:  # same graph, random weights: for tests and offline machines
        n_labels = len(weights.meta["categories"])
        net = getattr(seg, builder_name)(weights=None, weights_backbone=None, num_classes=n_labels)
    table_labels = table.backends["voc"]["labels"]
    if list(weights.meta["categories"]) != list(table_labels):
        raise ValueError(f"{name}: weight categories differ from the routing table's 'voc' labels")
    tf = weights.transforms()
    matrix, classes = table.matrix("voc")
    opts = {"input_size": 320, "size_multiple": 16, **options}
    return Router(f"torchvision:{name}", _GrayToRGB(net.eval(), list(tf.mean), list(tf.std)), matrix, classes, **opts)


def embedded_router(table: RoutingTable, **options: Any) -> Router:
    """Our trained grayscale router shipped in ``weights/router/``; the background placeholder if absent."""
    folder = router_dir()
    if not (folder / "model.safetensors").exists():
        return background_router()
    return smp_router(folder, table, **options)


def available_routers() -> list[str]:
    """Names accepted by :func:`load_router` (besides an smp folder path)."""
    return ["embedded", "background", "generalist", *TORCHVISION_BACKENDS]


def load_router(spec: str = "embedded", table: RoutingTable | None = None,
                generalist: Callable[[], nn.Module] | None = None, **options: Any) -> Router:
    """Router by name or smp folder path. ``generalist`` builds the generalist expert when asked for."""
    table = table or RoutingTable.load()
    if spec == "embedded":
        return embedded_router(table, **options)
    if spec in ("background", "none"):
        return background_router()
    if spec in TORCHVISION_BACKENDS:
        return torchvision_router(spec, table, **options)
    if spec == "generalist":
        if generalist is None:
            raise ValueError("router 'generalist' needs the generalist expert, which is not installed")
        model = generalist()
        matrix, classes = table.matrix("ensemble")
        return Router("generalist", model.segment, matrix, classes, input_size=options.pop("input_size", 256),
                      size_multiple=model.descriptor.size_multiple, **options)
    path = Path(spec)
    if path.is_dir() and (path / "config.json").exists():
        return smp_router(path, table, **options)
    raise ValueError(f"unknown router {spec!r}: use one of {', '.join(available_routers())} or an smp folder")
