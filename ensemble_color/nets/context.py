"""Global context for the specialists: what the whole crop shows, from a frozen ImageNet classifier.

Why: a specialist's ResNet-18 trunk stops at ``layer2`` (about 100 px of texture). It cannot tell a red tragopan
from a gray fulmar, so under a pixel loss it paints their average. Iizuka et al. (2016) fused a global
classification branch into the colour decoder; here the branch is a frozen ImageNet EfficientNet-Lite1 or Lite2
run on the gray crop, its pooled embedding broadcast over the decoder's input (``resnet_context``).

**Never Lite0**: EfficientNet-Lite0 is the judge (Fréchet distance and agree@1, ``eval.perceptual``); a model
conditioned on its judge proves nothing, so :func:`build_context` refuses it.

The frozen branch ships once, as its own weight (``ensemble_color/weights/context/<variant>-gray``), not inside
every expert: it is the same ImageNet network for all of them. It is held outside the expert's ``state_dict``
(see ``resnet_context``) so plugin files carry only what was trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..color import l_to_gray_unit

#: frozen context networks: variant -> (timm name, embedding width)
CONTEXT_VARIANTS: dict[str, tuple[str, int]] = {
    "lite1": ("tf_efficientnet_lite1", 1280),
    "lite2": ("tf_efficientnet_lite2", 1280),
}
#: the judge's network (``eval.perceptual``): never a context branch
JUDGE_VARIANT = "lite0"


class TinyContext(nn.Module):
    """A random four-layer stand-in with the same contract, for the registry's fast test models."""

    features = 16

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, stride=4), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=4),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GlobalContext(nn.Module):
    """L crop (B, 1, H, W, Lab units) -> pooled ImageNet embedding (B, features), frozen and in eval mode.

    The crop is resized to ``size`` x ``size`` and mapped to the normalised gray the classifier was trained on,
    so the embedding does not depend on the crop's size. Plain bilinear, not antialiased: ONNX has no
    antialiased resize, and the crops the pipeline gives (at most its 256 px working size) shrink by 1.33x at
    most.
    """

    def __init__(self, variant: str, size: int = 192) -> None:
        super().__init__()
        if variant == JUDGE_VARIANT:
            raise ValueError("lite0 judges the colours (eval.perceptual); a context branch may use lite1 or lite2")
        if variant == "tiny":
            self.net: nn.Module = TinyContext()
            self.features = TinyContext.features
        elif variant in CONTEXT_VARIANTS:
            import timm

            name, self.features = CONTEXT_VARIANTS[variant]
            self.net = timm.create_model(name, pretrained=False, in_chans=1, num_classes=0)
        else:
            raise ValueError(f"unknown context {variant!r}; known: {', '.join(CONTEXT_VARIANTS)}")
        self.variant, self.size = variant, int(size)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> GlobalContext:  # frozen: batch-norm statistics never move
        return super().train(False)

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = F.interpolate(L.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
            return self.net(l_to_gray_unit(x)).flatten(1)


def context_weights_file(variant: str) -> Path:
    """Where the shipped frozen branch of ``variant`` lives (package data)."""
    from ..weights import weights_root

    return weights_root() / "context" / f"{variant}-gray" / "model.safetensors"


def load_context_weights(context: GlobalContext, path: Path | None = None) -> None:
    """Fill ``context`` from its shipped safetensors (every tensor, shapes checked: ``strict``). A meta build
    (descriptors read without weights) has nothing to fill."""
    if any(p.is_meta for p in context.parameters()):
        return
    from safetensors.torch import load_file

    path = path or context_weights_file(context.variant)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {context.variant} context branch is not installed")
    state = load_file(str(path))
    own = context.net.state_dict()
    context.net.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}, strict=True)
