"""Colour maths: sRGB <-> CIE Lab (D65), batched torch, any device.

Everything in the package speaks *Lab units*: L in [0, 100], a/b roughly in [-110, 110].
Full Lab of a colour photo (training targets, metrics) and the way back to sRGB are kornia's (maintained,
differentiable). sRGB -> L, which every photo goes through at full resolution, is written here with kornia's
constants but only the work it needs: the luminance Y alone (one cube root instead of three, and one gamma
curve instead of three for a gray photo). Both full-resolution conversions go through a large photo in bands
of rows (:func:`by_bands`), so that each band's temporaries stay in cache instead of a dozen full-size
buffers crossing memory. ``bench/conversions.py`` times them against kornia's whole-image calls; tests hold
them to kornia's results. Maths stay float32 under autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import kornia.color
import torch

#: Largest |a|, |b| an sRGB colour reaches in Lab (about 98 for a, 108 for b); used to scale heads.
AB_RANGE = 110.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (..., 3, H, W) -> Lab (..., 3, H, W) in Lab units."""
    with torch.autocast(rgb.device.type, enabled=False):  # as in lab_to_rgb
        return kornia.color.rgb_to_lab(rgb.float().clamp(0.0, 1.0))


#: kornia's D65 linear RGB -> Y (the middle row of its XYZ matrix; it sums to 1)
_RGB_TO_Y = (0.212671, 0.715160, 0.072169)


#: pixels per band of :func:`by_bands` (picked from throwaway timings of 16k-256k bands at 1 and 12 MP on 2 cores;
#: bench/conversions.py measures the result)
BAND_PIXELS = 65536


def by_bands(fn: Callable[..., torch.Tensor], channels: int, *images: torch.Tensor) -> torch.Tensor:
    """``fn`` (a per-pixel map of images (..., C_i, H, W) to one (..., channels, H, W)) applied band by band.

    Why: at full resolution each elementwise step of a conversion writes a full-size temporary, and a dozen
    of them crossing memory cost more than the maths; a band of rows keeps them in cache. Per-pixel maths
    do not care where a band ends, so the result is ``fn(*images)``'s. With autograd on (nothing in the
    package needs it, but callers may) the whole image goes through at once.
    """
    if len(band_rows(*images[0].shape[-2:])) == 1 or (torch.is_grad_enabled()
                                                      and any(x.requires_grad for x in images)):
        return fn(*images)
    return assemble_bands(lambda band: fn(*(x[..., band, :] for x in images)), channels, images[0])


def assemble_bands(fn: Callable[[slice], torch.Tensor], channels: int, like: torch.Tensor) -> torch.Tensor:
    """(..., channels, H, W) float32, assembled from ``fn(rows)`` for each band of rows (:func:`band_rows`) of
    ``like`` (..., C, H, W); for maps that need the rows themselves (the compositor's banded upsampling)."""
    out = torch.empty(*like.shape[:-3], channels, *like.shape[-2:], dtype=torch.float32, device=like.device)
    for band in band_rows(*like.shape[-2:]):
        out[..., band, :] = fn(band)
    return out


def band_rows(h: int, w: int) -> list[slice]:
    """The bands of rows :func:`by_bands` cuts an (h, w) image into (one band when it is small)."""
    rows = max(1, BAND_PIXELS // max(w, 1))
    if h <= 2 * rows:
        return [slice(0, h)]
    return [slice(top, min(top + rows, h)) for top in range(0, h, rows)]


def _linear(srgb: torch.Tensor) -> torch.Tensor:
    """sRGB gamma curve undone (kornia.color.rgb_to_linear_rgb)."""
    return torch.where(srgb > 0.04045, ((srgb + 0.055) / 1.055).clamp(min=0.0) ** 2.4, srgb / 12.92)


def _l_of_y(y: torch.Tensor) -> torch.Tensor:
    """CIE L* of relative luminance Y (white Y = 1), with kornia's threshold and linear segment."""
    f = torch.where(y > 0.008856, y.clamp(min=0.008856) ** (1.0 / 3.0), 7.787 * y + 4.0 / 29.0)
    return 116.0 * f - 16.0


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab (..., 3, H, W) -> sRGB in [0, 1]; out-of-gamut colours are clipped per channel. kornia's, by bands."""
    with torch.autocast(lab.device.type, enabled=False):  # kornia keeps fp32 input in fp32 only outside autocast
        return by_bands(lambda band: kornia.color.lab_to_rgb(band.float(), clip=True), 3, lab)


def rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) -> L (..., 1, H, W); the only part of a photo the colourizer sees."""
    if rgb.shape[-3] != 3:
        raise ValueError(f"expected RGB (..., 3, H, W), got shape {tuple(rgb.shape)}")
    return by_bands(_rgb_to_l, 1, rgb)


def _rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    linear = _linear(rgb.float().clamp(0.0, 1.0))
    with torch.autocast(rgb.device.type, enabled=False):
        y = torch.einsum("c,...chw->...hw", torch.tensor(_RGB_TO_Y, device=rgb.device), linear)
    return _l_of_y(y.unsqueeze(-3))


def gray_to_l(gray: torch.Tensor) -> torch.Tensor:
    """Gray sRGB values in [0, 1], shape (..., 1, H, W) -> L; rgb_to_l of R=G=B to float rounding, with one
    gamma curve instead of three (Y of a gray pixel is its linear value: the Y row sums to 1)."""
    if gray.shape[-3] != 1:
        raise ValueError(f"expected gray (..., 1, H, W), got shape {tuple(gray.shape)}")
    return by_bands(_gray_to_l, 1, gray)


def _gray_to_l(gray: torch.Tensor) -> torch.Tensor:
    return _l_of_y(_linear(gray.float().clamp(0.0, 1.0)))


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
