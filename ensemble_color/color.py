"""Colour maths: sRGB <-> CIE Lab (D65), batched torch, any device.

Everything in the package speaks *Lab units*: L in [0, 100], a/b roughly in [-110, 110].
Full Lab of a colour photo (training targets, metrics) is kornia's (maintained, differentiable). The two
conversions every photo goes through at full resolution are written here with kornia's constants but only the
work they need: sRGB -> L computes the luminance Y alone (one cube root instead of three, and one gamma curve
instead of three for a gray photo), and both splice their curves' two pieces with clamps and adds
(:func:`_spliced`) instead of ``torch.where``, which costs several times an add on CPU. Both go through a large
photo in bands of rows (:func:`by_bands`), so that each band's temporaries stay in cache instead of a dozen
full-size buffers crossing memory. ``bench/conversions.py`` times them against kornia's whole-image calls;
tests hold them to kornia's results. Maths stay float32 under autocast.
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
    like = images[0]
    bands = band_rows(*like.shape[-2:])
    if len(bands) == 1 or (torch.is_grad_enabled() and any(x.requires_grad for x in images)):
        return fn(*images)
    out = torch.empty(*like.shape[:-3], channels, *like.shape[-2:], dtype=torch.float32, device=like.device)
    for band in bands:
        out[..., band, :] = fn(*(x[..., band, :] for x in images))
    return out


def band_rows(h: int, w: int) -> list[slice]:
    """The bands of rows :func:`by_bands` cuts an (h, w) image into (one band when it is small)."""
    rows = max(1, BAND_PIXELS // max(w, 1))
    if h <= 2 * rows:
        return [slice(0, h)]
    return [slice(top, min(top + rows, h)) for top in range(0, h, rows)]


def _spliced(x: torch.Tensor, knee: float, upper: Callable[[torch.Tensor], torch.Tensor],
             lower: Callable[[torch.Tensor], torch.Tensor], lower_at_knee: float) -> torch.Tensor:
    """``where(x > knee, upper(x), lower(x))`` for a curve whose two pieces meet at ``knee`` (sRGB gamma, CIE
    L*): ``upper(max(x, knee)) + lower(min(x, knee)) - lower(knee)``; on either side one piece sits at the knee,
    where the two agree (to ~1e-7; 4e-6 for sRGB's encoding curve, as kornia's constants have it). Why:
    elementwise clamps and adds vectorise, ``torch.where`` (and the comparison it needs) cost several times as
    much on CPU (``bench/conversions.py``)."""
    return upper(x.clamp(min=knee)) + lower(x.clamp(max=knee)) - lower_at_knee


#: the sRGB curve's knee (encoded and linear value) and CIE L*'s (relative luminance, and its cube root), kornia's
#: constants
_SRGB_KNEE, _LINEAR_KNEE, _Y_KNEE, _F_KNEE = 0.04045, 0.0031308, 0.008856, 0.2068966


def _linear(srgb: torch.Tensor) -> torch.Tensor:
    """sRGB gamma curve undone (kornia.color.rgb_to_linear_rgb)."""
    return _spliced(srgb, _SRGB_KNEE, lambda x: ((x + 0.055) / 1.055) ** 2.4, lambda x: x / 12.92,
                    _SRGB_KNEE / 12.92)


def _l_of_y(y: torch.Tensor) -> torch.Tensor:
    """CIE L* of relative luminance Y (white Y = 1), with kornia's threshold and linear segment."""
    f = _spliced(y, _Y_KNEE, lambda v: v ** (1.0 / 3.0), lambda v: 7.787 * v + 4.0 / 29.0,
                 7.787 * _Y_KNEE + 4.0 / 29.0)
    return 116.0 * f - 16.0


#: kornia's D65 XYZ -> linear sRGB matrix with its reference white (0.95047, 1, 1.08883) folded into the columns
_XYZN_TO_RGB = tuple(tuple(m * w for m, w in zip(row, (0.95047, 1.0, 1.08883), strict=True)) for row in (
    (3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
    (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
    (0.0556466391351772, -0.2040413383665112, 1.0573110696453443)))


def lab_to_rgb(lab: torch.Tensor, keep_l: bool = False) -> torch.Tensor:
    """Lab (..., 3, H, W) -> sRGB in [0, 1], by bands; out-of-gamut colours are clipped per channel (kornia's
    maths, ``kornia.color.lab_to_rgb(clip=True)``, to 1e-5), or with ``keep_l`` first lose chroma at their L and
    hue until they fit (:func:`_keep_l`)."""
    matrix = torch.tensor(_XYZN_TO_RGB, device=lab.device)
    with torch.autocast(lab.device.type, enabled=False):  # float32 maths whatever the caller's autocast
        return by_bands(lambda band: _lab_to_rgb(band, matrix, keep_l), 3, lab)


def _lab_to_linear(lab: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Lab (..., 3, H, W) -> linear sRGB, unclipped (outside [0, 1] where the colour is out of gamut)."""
    L, a, b = lab.float().unbind(-3)
    fy = (L + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, (fy - b / 200.0).clamp(min=0.0)], dim=-3)
    xyz = _spliced(f, _F_KNEE, lambda v: v * v * v, lambda v: (v - 4.0 / 29.0) / 7.787,
                   (_F_KNEE - 4.0 / 29.0) / 7.787)
    return torch.einsum("oi,...ihw->...ohw", matrix, xyz)


#: tolerance of the gamut test in linear sRGB (the clip afterwards absorbs it: far below one 8-bit step)
_GAMUT_EPS = 1e-4
#: bisection steps of the chroma scale (1/256 of the chroma: under 0.5 ab units)
_GAMUT_STEPS = 8


def _in_gamut(linear: torch.Tensor) -> torch.Tensor:
    return ((linear >= -_GAMUT_EPS) & (linear <= 1 + _GAMUT_EPS)).all(-3)


def _keep_l(lab: torch.Tensor, linear: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """``linear`` (:func:`_lab_to_linear` of ``lab``) with each out-of-gamut pixel replaced by its colour with the
    chroma scaled down (hue and L kept) until it is in gamut; only those pixels are converted again.

    Why: clipping R, G and B one by one changes the lightness (a saturated yellow-green hint can move L by 8),
    and the product promises the photo's own L; shrinking the chroma towards the gray of the same L cannot
    leave the gamut, since every gray with L in [0, 100] is in it."""
    bad = ~_in_gamut(linear)
    if not bool(bad.any()):
        return linear
    px = lab.movedim(-3, -1)[bad].T[:, :, None]  # (3, N, 1): the out-of-gamut pixels as a 3 x N x 1 image
    lo, hi = torch.zeros_like(px[0]), torch.ones_like(px[0])
    for _ in range(_GAMUT_STEPS):
        mid = (lo + hi) / 2
        ok = _in_gamut(_lab_to_linear(torch.cat([px[:1], px[1:] * mid]), matrix))
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    out = linear.movedim(-3, -1).clone()
    out[bad] = _lab_to_linear(torch.cat([px[:1], px[1:] * lo]), matrix).squeeze(-1).T
    return out.movedim(-1, -3)


def _lab_to_rgb(lab: torch.Tensor, matrix: torch.Tensor, keep_l: bool = False) -> torch.Tensor:
    linear = _lab_to_linear(lab, matrix)
    if keep_l:
        linear = _keep_l(lab, linear, matrix)
    linear = linear.clamp(max=1.0)  # the curve maps 1 to 1: clip first
    srgb = _spliced(linear, _LINEAR_KNEE, lambda v: 1.055 * v ** (1 / 2.4) - 0.055, lambda v: 12.92 * v,
                    12.92 * _LINEAR_KNEE)
    return srgb.clamp(0.0, 1.0)


def rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (..., 3, H, W) -> L (..., 1, H, W); the only part of a photo the colourizer sees."""
    if rgb.shape[-3] != 3:
        raise ValueError(f"expected RGB (..., 3, H, W), got shape {tuple(rgb.shape)}")
    return by_bands(_rgb_to_l, 1, rgb)


def _rgb_to_l(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = _linear(rgb.float().clamp(0.0, 1.0)).unbind(-3)
    y = r * _RGB_TO_Y[0] + g * _RGB_TO_Y[1] + b * _RGB_TO_Y[2]  # float32: the channels are, whatever autocast
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
    """Join L (..., 1, H, W) and ab (..., 2, H, W) into sRGB in [0, 1]. An out-of-gamut colour keeps its L and hue
    and loses chroma until it fits (:func:`_keep_l`), so the photo's lightness survives whatever ab says."""
    return lab_to_rgb(torch.cat([L.float(), ab.float()], dim=-3), keep_l=True)


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
