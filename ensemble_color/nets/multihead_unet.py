"""``multihead-unet``: the generalist expert (after Nguyen-Quynh, Kim & Do, IEEE Access 2020).

A small U-Net (stride-2 conv down blocks, bilinear-upsampling decoder with skip connections) with
four heads, so one network learns colour *and* what it is looking at:

* ``reg``   : ab regression (2 ch, tanh x AB_RANGE) at 1/2 resolution, upsampled;
* ``soft``  : logits over the 313 in-gamut ab bins (:mod:`ensemble_color.softencode`) at 1/4
  resolution (as Zhang et al.: colour varies slowly, and 313 full-resolution channels would not fit
  a CPU budget);
* ``seg``   : logits over the route classes (background, person, bird, animal) at 1/4 resolution,
  so the model can also act as a router (:meth:`MultiHeadUNet.segment`);
* ``scene`` : scene-context logits from the bottleneck (global average pool -> 2 dense layers);
  the first dense layer's output is also broadcast and fused into the bottleneck, so the decoder
  colours with the global context (the paper's "global scene-context style").

Contract: ``forward(L)`` takes L in Lab units (B, 1, H, W), H and W multiples of 16, and returns ab
in Lab units (B, 2, H, W), decoded as ``self.decode`` says: ``"soft"`` (annealed mean with
temperature ``self.T``), ``"mode"``, ``"mean"``, ``"regression"`` (times ``reg_gain``, clamped to the ab
range: the specialists' output gain, for a regression head that predicts a desaturated conditional mean) or
``"blend"`` (``blend_w`` x soft + (1 - ``blend_w``) x regression). Everything needed at inference (bin
centres, the empirical bin distribution and the rebalancing weights) is a persistent buffer, so it travels in
the plugin's ``model.safetensors``.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from .. import softencode
from ..color import AB_RANGE, checked_gain, gain_ab
from .registry import ModelDescriptor, register_architecture

DECODES = ("soft", "mode", "mean", "regression", "blend")
ROUTE_CLASSES = ("background", "person", "bird", "animal")
#: named decodings -> :meth:`MultiHeadBase.set_decoding` arguments: the candidates of the generalist's decode rule
#: (``eval.generalist``), the values of the pipeline's ``decode`` option and of the CLI's ``--decode``
DECODINGS: dict[str, dict] = {
    "soft T=0.2": {"decode": "soft", "T": 0.2},
    "soft T=0.38": {"decode": "soft", "T": 0.38},
    "soft T=0.6": {"decode": "soft", "T": 0.6},
    "soft T=1 (mean)": {"decode": "mean"},
    "regression": {"decode": "regression"},
    "blend 0.25 soft": {"decode": "blend", "T": 0.38, "blend_w": 0.25},
    "blend 0.5 soft": {"decode": "blend", "T": 0.38, "blend_w": 0.5},
    "blend 0.75 soft": {"decode": "blend", "T": 0.38, "blend_w": 0.75},
    "regression x1.25": {"decode": "regression", "reg_gain": 1.25},
    "regression x1.5": {"decode": "regression", "reg_gain": 1.5},
    "regression x1.75": {"decode": "regression", "reg_gain": 1.75},
    "regression x2": {"decode": "regression", "reg_gain": 2.0},
}
#: the decoding keys of a multi-head plugin's config (replaced together when a decoding is chosen)
DECODE_KEYS = ("decode", "T", "blend_w", "reg_gain")
#: every head :meth:`MultiHeadBase.forward_heads` can compute
HEADS = ("reg", "soft", "seg", "scene", "category")
#: decode -> the heads it reads: ``forward`` computes only these (regression alone skips the 313-bin head, the
#: soft decodings skip the half-resolution decoder stage and the regression head)
DECODE_HEADS: dict[str, tuple[str, ...]] = {"soft": ("soft",), "mode": ("soft",), "mean": ("soft",),
                                            "regression": ("reg",), "blend": ("reg", "soft")}


def with_decoding(config: dict, name: str) -> dict:
    """``config`` (a multi-head plugin's) with every decoding key replaced by named decoding ``name``: keys the
    decoding leaves out fall back to the model's defaults instead of the old decoding's values."""
    if name not in DECODINGS:
        raise ValueError(f"unknown decoding {name!r}; known: {', '.join(DECODINGS)}")
    return {**{k: v for k, v in config.items() if k not in DECODE_KEYS}, **DECODINGS[name]}


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class MultiHeadBase(nn.Module):
    """What every multi-head generalist shares: the soft-encoding buffers and the decoding of its heads.

    Subclasses implement :meth:`forward_heads` (L in Lab units -> ``reg``, ``soft``, ``seg``, ``scene``
    ...) and call :meth:`_init_decoding` in ``__init__``; ``forward``, ``decode_heads`` and
    ``segment`` are then the same contract for all of them (L in, ab out).
    """

    def _init_decoding(self, decode: str, T: float, blend_w: float, reg_gain: float = 1.0) -> None:
        bins = torch.zeros(softencode.N_BINS, 2)
        if bins.device.type != "meta":  # validation builds on "meta": no values needed there
            bins = softencode.ab_bins()
        self.register_buffer("ab_bins", bins)
        self.register_buffer("bin_prior", torch.full((softencode.N_BINS,), 1.0 / softencode.N_BINS))
        self.register_buffer("bin_weights", torch.ones(softencode.N_BINS))
        self.set_decoding(decode, T, blend_w, reg_gain)

    def set_decoding(self, decode: str, T: float | None = None, blend_w: float | None = None,
                     reg_gain: float = 1.0) -> None:
        """How :meth:`forward` decodes (the plugin's config; decode selection and tuning switch it). ``T`` and
        ``blend_w`` left out keep their values (a decoding that does not use them ignores them); the regression
        gain is 1 unless given, so switching to a candidate never inherits the previous one's."""
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        self.decode, self.reg_gain = decode, checked_gain(reg_gain, "reg_gain")
        if T is not None:
            self.T = float(T)
        if blend_w is not None:
            self.blend_w = float(blend_w)

    def quarter_heads(self, x: torch.Tensor, heads: Collection[str]) -> dict[str, torch.Tensor]:
        """The asked-for heads of ``soft`` and ``seg`` on the 1/4-resolution decoder features ``x``."""
        out = {}
        if "soft" in heads:
            out["soft"] = self.soft_head(x)
        if "seg" in heads:
            out["seg"] = self.seg_head(x)
        return out

    def regression(self, x: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
        """ab in Lab units at L's size from the 1/2-resolution decoder features ``x``."""
        reg = torch.tanh(self.reg_head(x).float()) * AB_RANGE
        return F.interpolate(reg, size=L.shape[-2:], mode="bilinear", align_corners=False)

    def _init_heads(self, quarter: int, half: int, n_seg_classes: int) -> None:
        """The soft-encoding and segmentation heads on the 1/4-resolution decoder features (``quarter``
        channels), the regression head on the 1/2-resolution ones (``half``)."""
        self.soft_head = nn.Sequential(_conv(quarter, 2 * quarter), nn.Conv2d(2 * quarter, softencode.N_BINS, 1))
        self.seg_head = nn.Conv2d(quarter, n_seg_classes, 1)
        self.reg_head = nn.Conv2d(half, 2, 3, padding=1)

    def forward_heads(self, L: torch.Tensor, heads: Collection[str] = HEADS) -> dict[str, torch.Tensor]:
        """The ``heads`` asked for (all by default, as training needs), computing nothing only others need."""
        raise NotImplementedError

    def decode_heads(self, heads: dict[str, torch.Tensor], decode: str | None = None,
                     size: tuple[int, int] | None = None, T: float | None = None,
                     blend_w: float | None = None, reg_gain: float | None = None) -> torch.Tensor:
        """ab (B, 2, H, W) from :meth:`forward_heads` output with ``decode`` (default ``self.decode``);
        ``T``, ``blend_w`` and ``reg_gain`` override the stored ones (decode selection scores every candidate
        on one forward pass). ``reg_gain`` left out is the stored gain when ``decode`` is too, else 1."""
        T = self.T if T is None else float(T)
        blend_w = self.blend_w if blend_w is None else float(blend_w)
        if reg_gain is None:
            reg_gain = self.reg_gain if decode is None else 1.0
        decode = decode or self.decode
        size = size or tuple(heads["reg"].shape[-2:])
        if decode == "regression":
            return gain_ab(heads["reg"].float(), reg_gain)
        if decode == "mode":
            ab = softencode.mode(heads["soft"], self.ab_bins)
        else:
            ab = softencode.annealed_mean(heads["soft"], self.ab_bins, 1.0 if decode == "mean" else T)
        ab = F.interpolate(ab, size=size, mode="bilinear", align_corners=False)
        if decode == "blend":
            ab = blend_w * ab + (1 - blend_w) * heads["reg"].float()
        elif decode not in ("soft", "mode", "mean"):
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        return ab

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.decode_heads(self.forward_heads(L, DECODE_HEADS[self.decode]), size=tuple(L.shape[-2:]))

    def segment(self, L: torch.Tensor) -> torch.Tensor:
        """Route-class logits (B, 4, H/4, W/4) in the order background, person, bird, animal."""
        return self.forward_heads(L, ("seg",))["seg"].float()


class MultiHeadUNet(MultiHeadBase):
    """U-Net generalist with regression, soft-encoding, segmentation and scene-context heads."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 256), n_scene_classes: int = 4,
                 scene_hidden: int = 128, n_seg_classes: int = len(ROUTE_CLASSES), decode: str = "soft",
                 T: float = softencode.DEFAULT_T, blend_w: float = 0.5, input_size: int = 128,
                 reg_gain: float = 1.0) -> None:
        super().__init__()
        self._init_decoding(decode, T, blend_w, reg_gain)
        c0, c1, c2, c3 = widths
        self.enc1 = nn.Sequential(_conv(1, c0, 2), _conv(c0, c0))        # 1/2
        self.enc2 = nn.Sequential(_conv(c0, c1, 2), _conv(c1, c1))       # 1/4
        self.enc3 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))       # 1/8
        self.enc4 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))       # 1/16 bottleneck
        self.scene_fc1 = nn.Linear(c3, scene_hidden)
        self.scene_fc2 = nn.Linear(scene_hidden, n_scene_classes)
        self.fuse = _conv(c3 + scene_hidden, c3)
        self.dec3 = _conv(c3 + c2, c2)                                    # 1/8
        self.dec2 = nn.Sequential(_conv(c2 + c1, c1), _conv(c1, c1))      # 1/4
        self.dec1 = _conv(c1 + c0, c0)                                    # 1/2
        self._init_heads(c1, c0, n_seg_classes)
        self.descriptor = ModelDescriptor("multihead-unet", size_multiple=16, supports_half=True,
                                          input_size=input_size,
                                          extra={"route_classes": ROUTE_CLASSES, "decodes": DECODES})

    def forward_heads(self, L: torch.Tensor, heads: Collection[str] = HEADS) -> dict[str, torch.Tensor]:
        """``heads`` of: ``reg`` (B,2,H,W) Lab units; ``soft`` (B,313,H/4,W/4), ``seg`` (B,C,H/4,W/4) and
        ``scene`` (B,S) logits."""
        x = (L - 50.0) / 50.0
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        g = F.relu(self.scene_fc1(e4.float().mean((2, 3)).to(e4.dtype)))
        scene = self.scene_fc2(g)
        b = self.fuse(torch.cat([e4, g[:, :, None, None].expand(-1, -1, *e4.shape[-2:])], 1))
        d3 = self.dec3(torch.cat([_up(b, e3), e3], 1))
        d2 = self.dec2(torch.cat([_up(d3, e2), e2], 1))
        out = self.quarter_heads(d2, heads) | {"scene": scene}
        if "reg" in heads:
            out["reg"] = self.regression(self.dec1(torch.cat([_up(d2, e1), e1], 1)), L)
        return {k: v for k, v in out.items() if k in heads}


@register_architecture("multihead-unet", tiny_config={"widths": (8, 8, 16, 16), "scene_hidden": 8})
def multihead_unet(**config) -> MultiHeadUNet:
    if "widths" in config:
        config["widths"] = tuple(config["widths"])
    return MultiHeadUNet(**config)
