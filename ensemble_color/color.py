"""Colour maths: sRGB <-> CIE Lab (D65), batched torch, any device.

Everything in the package speaks *Lab units*: L in [0, 100], a/b roughly in [-110, 110].
The conversions are kornia's (maintained, differentiable); this module only pins the
conventions (channel-first, float32 maths even under autocast, gamut clipping on the way back).
"""

from __future__ import annotations

import kornia.color
import torch

#: Largest |a|, |b| an sRGB colour reaches in Lab (about 98 for a, 108 for b); used to scale heads.
AB_RANGE = 110.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3, H, W) -> Lab (..., 3, H, W) in Lab units."""
    return kornia.color.rgb_to_lab(rgb.float().clamp(0.0, 1.0))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab (..., 3, H, W) -> sRGB in [0, 1]; out-of-gamut colours are clipped per channel."""
    return kornia.color.lab_to_rgb(lab.float(), clip=True)


def rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) -> L (..., 1, H, W); the only part of a photo the colourizer sees."""
    return rgb_to_lab(rgb)[..., :1, :, :]


def gray_to_l(gray: torch.Tensor) -> torch.Tensor:
    """Gray sRGB values in [0, 1], shape (..., 1, H, W) -> L; identical to rgb_to_l of R=G=B."""
    return rgb_to_l(gray.expand(*gray.shape[:-3], 3, *gray.shape[-2:]))


def l_to_gray(L: torch.Tensor) -> torch.Tensor:
    """L (..., 1, H, W) -> the sRGB gray value in [0, 1] with that lightness (inverse of :func:`gray_to_l`).

    Closed form (gray has Y = linear value, a = b = 0), so ImageNet models that expect RGB can be fed
    exactly what the gray photo replicated to three channels would give them.
    """
    t = (L.float() + 16.0) / 116.0
    delta = 6.0 / 29.0
    y = torch.where(t > delta, t**3, 3 * delta**2 * (t - 4.0 / 29.0)).clamp(0.0, 1.0)
    return torch.where(y > 0.0031308, 1.055 * y.clamp_min(1e-12) ** (1 / 2.4) - 0.055, 12.92 * y).clamp(0.0, 1.0)


def l_to_gray_unit(L: torch.Tensor) -> torch.Tensor:
    """L -> the gray value scaled to [-1, 1] ((g - 0.5) / 0.5): the input ImageNet EfficientNet-Lite expects."""
    return l_to_gray(L) * 2.0 - 1.0


def join_l_ab(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Join L (..., 1, H, W) and ab (..., 2, H, W) into sRGB in [0, 1] (gamut clipped)."""
    return lab_to_rgb(torch.cat([L.float(), ab.float()], dim=-3))


#: upper bound on a model's output gain (``ab_gain``, ``reg_gain``: manifests are untrusted input)
MAX_AB_GAIN = 3.0


def checked_gain(value: object, name: str) -> float:
    """A manifest's output gain as a float, or ValueError naming ``name`` unless it is a number in (0, 3]."""
    if not isinstance(value, int | float) or not 0.0 < value <= MAX_AB_GAIN:
        raise ValueError(f"{name} must be a number in (0, {MAX_AB_GAIN}], got {value!r}")
    return float(value)


def gain_ab(ab: torch.Tensor, gain: float) -> torch.Tensor:
    """A regressor's ab times its output gain, clamped to the ab range: an MSE prediction is the desaturated
    conditional mean, and the gain (chosen on held-out photos) scales it back towards the photos' chroma."""
    return ab if gain == 1.0 else (ab * gain).clamp(-AB_RANGE, AB_RANGE)


def saturate_ab(ab: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale chroma by ``factor`` (1 = unchanged); regression models under-saturate, users like a knob."""
    return ab * factor if factor != 1.0 else ab
