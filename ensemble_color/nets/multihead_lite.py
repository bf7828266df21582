"""``multihead-lite``: the generalist on an ImageNet encoder (after Nguyen-Quynh, Kim & Do, 2020).

The seed paper's generalist is a U-Net whose encoder was *pretrained* and fine-tuned by scene-context
classification; ours trained from scratch picked wrong hues. This one keeps the four heads of
:class:`~ensemble_color.nets.multihead_unet.MultiHeadUNet` but its encoder is timm's
``tf_efficientnet_liteN`` (features at strides 2, 4, 8, 16, 32) with a one-channel stem, which the
trainer initialises from the ImageNet weights (:func:`ensemble_color.nets.imagenet.load_pretrained`).

* input: L in Lab units, mapped to the normalised gray the ImageNet weights expect
  (:func:`~ensemble_color.color.l_to_gray_unit`, exact for a summed stem);
* ``scene``: logits over the teacher's 1,000 ImageNet classes, and ``category``: logits over the
  source categories; both from the pooled bottleneck, whose hidden vector is also broadcast into
  the decoder (the paper's global scene-context fusion);
* ``soft`` (313 bins) and ``seg`` (route classes) at 1/4 resolution, ``reg`` (ab) at 1/2, upsampled.

The model owns its normalisation: ``forward(L)`` returns ab in Lab units (decoding as in
:class:`~ensemble_color.nets.multihead_unet.MultiHeadBase`). H and W must be multiples of 32.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from .. import softencode
from ..color import l_to_gray_unit
from .multihead_unet import DECODES, HEADS, ROUTE_CLASSES, MultiHeadBase, _conv, _up
from .registry import ModelDescriptor, register_architecture

VARIANTS = ("lite0", "lite1", "lite2")
CATEGORIES = ("scenes", "people", "birds", "animals")  #: the ``category`` head's classes (route order)


class MultiHeadLite(MultiHeadBase):
    """U-Net over an EfficientNet-Lite encoder with regression, soft, segmentation and context heads."""

    def __init__(self, variant: str = "lite0", decoder: tuple[int, int, int, int] = (96, 64, 48, 32),
                 scene_hidden: int = 256, n_scene_classes: int = 1000, n_categories: int = len(CATEGORIES),
                 n_seg_classes: int = len(ROUTE_CLASSES), decode: str = "soft", T: float = softencode.DEFAULT_T,
                 blend_w: float = 0.5, input_size: int = 160, reg_gain: float = 1.0) -> None:
        super().__init__()
        import timm  # a dependency of segmentation-models-pytorch, so present wherever the router runs

        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self._init_decoding(decode, T, blend_w, reg_gain)
        self.variant = variant
        self.encoder = timm.create_model(f"tf_efficientnet_{variant}", features_only=True, in_chans=1,
                                         pretrained=False)
        f1, f2, f3, f4, f5 = self.encoder.feature_info.channels()
        d4, d3, d2, d1 = decoder
        self.scene_fc1 = nn.Linear(f5, scene_hidden)
        self.scene_fc2 = nn.Linear(scene_hidden, n_scene_classes)
        self.category_fc = nn.Linear(scene_hidden, n_categories)
        self.fuse = _conv(f5 + scene_hidden, d4)
        self.dec4 = _conv(d4 + f4, d4)                                    # 1/16
        self.dec3 = _conv(d4 + f3, d3)                                    # 1/8
        self.dec2 = nn.Sequential(_conv(d3 + f2, d2), _conv(d2, d2))      # 1/4
        self.dec1 = _conv(d2 + f1, d1)                                    # 1/2
        self._init_heads(d2, d1, n_seg_classes)
        self.descriptor = ModelDescriptor("multihead-lite", size_multiple=32, supports_half=True,
                                          input_size=input_size,
                                          extra={"route_classes": ROUTE_CLASSES, "decodes": DECODES,
                                                 "categories": CATEGORIES[:n_categories],
                                                 "encoder": f"tf_efficientnet_{variant}"})

    def forward_heads(self, L: torch.Tensor, heads: Collection[str] = HEADS) -> dict[str, torch.Tensor]:
        """``heads`` of: ``reg`` (B,2,H,W) Lab units; ``soft`` (B,313,H/4,W/4), ``seg`` (B,C,H/4,W/4),
        ``scene`` (B,1000) and ``category`` (B,4) logits."""
        e1, e2, e3, e4, e5 = self.encoder(l_to_gray_unit(L))
        g = F.relu(self.scene_fc1(e5.float().mean((2, 3)).to(e5.dtype)))
        b = self.fuse(torch.cat([e5, g[:, :, None, None].expand(-1, -1, *e5.shape[-2:])], 1))
        x4 = self.dec4(torch.cat([_up(b, e4), e4], 1))
        x3 = self.dec3(torch.cat([_up(x4, e3), e3], 1))
        x2 = self.dec2(torch.cat([_up(x3, e2), e2], 1))
        out = self.quarter_heads(x2, heads)
        if "reg" in heads:
            out["reg"] = self.regression(self.dec1(torch.cat([_up(x2, e1), e1], 1)), L)
        if "scene" in heads:
            out["scene"] = self.scene_fc2(g)
        if "category" in heads:
            out["category"] = self.category_fc(g)
        return out


@register_architecture("multihead-lite", tiny_config={"decoder": (8, 8, 8, 8), "scene_hidden": 8,
                                                      "n_scene_classes": 10})
def multihead_lite(**config) -> MultiHeadLite:
    if "decoder" in config:
        config["decoder"] = tuple(config["decoder"])
    return MultiHeadLite(**config)
