"""``resnet18-deconv-ctx``: the specialist that knows what it colours and can choose a colour.

The ``resnet18-deconv`` path stays (ResNet-18 ``conv1 … layer2``, three upsampling stages, a regression head),
and gains two things:

* **global context** (Iizuka et al. 2016 style fusion): the pooled embedding of a frozen ImageNet
  EfficientNet-Lite1/Lite2 run on the whole gray crop (:mod:`.context`), projected, broadcast over the encoder's
  stride-8 map, concatenated and fused by a 1x1 convolution. The fusion starts as the identity on the encoder's
  channels and zero on the context's, so a warm start from a shipped ``resnet18-deconv`` begins exactly there;
* **a distributional head** (Zhang et al. 2016): 313 ab-bin logits at stride 4, trained with rebalanced soft
  cross-entropy, decoded by the annealed mean. A pixel loss paints the average of all plausible colours; the
  annealed mean of a distribution picks near its mode.

``decode`` (config) says what :meth:`forward` returns: ``"regression"`` (times ``ab_gain``), ``"soft"`` (annealed
mean at temperature ``T``) or ``"blend"`` (``blend_w`` x soft + the rest regression). The trainer chooses it on
held-out train photos (``train.expert.choose_decoding``).

The frozen branch is held outside ``state_dict`` (in a tuple, so the module tree does not register it): plugin
files carry only trained tensors and the branch ships once (``weights/context``). :meth:`_apply` still moves and
casts it with the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..color import AB_RANGE, gain_ab
from ..softencode import DEFAULT_T, N_BINS, ab_bins, annealed_mean
from .context import GlobalContext, load_context_weights
from .registry import register_architecture
from .resnet_deconv import ResNetDeconv

DECODES = ("regression", "soft", "blend")


class ResNetDeconvContext(ResNetDeconv):
    """``resnet18-deconv`` + frozen global context + 313-bin head (module docstring)."""

    def __init__(self, decoder_widths: tuple[int, int, int] = (128, 64, 32), input_size: int = 160,
                 ab_gain: float = 1.0, context: str = "lite1", context_size: int = 192, context_dim: int = 128,
                 context_init: str = "shipped", decode: str = "regression", T: float = DEFAULT_T,
                 blend_w: float = 0.5) -> None:
        super().__init__(tuple(decoder_widths), imagenet_init=False, input_size=input_size, ab_gain=ab_gain)
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {', '.join(DECODES)}, got {decode!r}")
        if not 0.0 < float(T) <= 1.0 or not 0.0 <= float(blend_w) <= 1.0:
            raise ValueError(f"T must be in (0, 1] and blend_w in [0, 1], got T={T!r}, blend_w={blend_w!r}")
        self.decode, self.T, self.blend_w = decode, float(T), float(blend_w)
        branch = GlobalContext(context, context_size)
        # "imagenet" is not here: the trainer fills the branch (the ImageNet package is training-only)
        if context_init not in ("shipped", "none"):
            raise ValueError(f"context_init must be 'shipped' or 'none', got {context_init!r}")
        if context_init == "shipped" and context != "tiny":  # the tiny test branch has no weights
            load_context_weights(branch)
        self._context = (branch,)
        enc = 128
        self.context_proj = nn.Sequential(nn.Linear(branch.features, context_dim), nn.ReLU(inplace=True))
        self.fuse = nn.Conv2d(enc + context_dim, enc, kernel_size=1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.weight[:, :enc, 0, 0].copy_(torch.eye(enc))
            self.fuse.bias.zero_()
        self.bins_head = nn.Conv2d(decoder_widths[0], N_BINS, kernel_size=1)
        bins = torch.zeros(N_BINS, 2)
        if bins.device.type != "meta":  # validation builds on "meta": no values needed there
            bins = ab_bins()
        self.register_buffer("ab_bins", bins, persistent=False)
        self.descriptor.extra.update(context=context, decode=decode)

    @property
    def context(self) -> GlobalContext:
        return self._context[0]

    def _apply(self, fn, recurse: bool = True):  # .to(), .half(), channels-last reach the hidden branch too
        super()._apply(fn, recurse)
        self._context[0]._apply(fn, recurse)
        return self

    def heads(self, L: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(regression ab at full size, 313-bin logits at stride 4), before any decoding or gain."""
        feats = self.encoder((L - 50.0) / 50.0)
        ctx = self.context_proj(self.context(L).to(feats.dtype))
        feats = self.fuse(torch.cat([feats, ctx[:, :, None, None].expand(-1, -1, *feats.shape[-2:])], 1))
        first = self.decoder[0](feats)
        rest = self.decoder[2](self.decoder[1](first))
        return torch.tanh(self.head(rest)) * AB_RANGE, self.bins_head(first)

    def decode_heads(self, reg: torch.Tensor, logits: torch.Tensor, decode: str | None = None,
                     T: float | None = None, gain: float | None = None, blend_w: float | None = None
                     ) -> torch.Tensor:
        """ab from the two heads as ``decode`` says (the stored choice by default; the trainer scores others)."""
        decode = decode or self.decode
        reg = gain_ab(reg.float(), self.ab_gain if gain is None else gain)
        if decode == "regression":
            return reg
        soft = annealed_mean(logits, self.ab_bins, self.T if T is None else T)
        soft = F.interpolate(soft, size=reg.shape[-2:], mode="bilinear", align_corners=False)
        if decode == "soft":
            return soft
        w = self.blend_w if blend_w is None else blend_w
        return w * soft + (1 - w) * reg

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.decode_heads(*self.heads(L))


@register_architecture("resnet18-deconv-ctx",
                       tiny_config={"decoder_widths": (16, 8, 8), "context": "tiny", "context_size": 32,
                                    "context_dim": 8, "decode": "blend"})
def resnet18_deconv_ctx(**config) -> ResNetDeconvContext:
    return ResNetDeconvContext(**config)
