"""Halftone descreening: find a printing screen in the spectrum of L and low-pass the L the models see.

Why: a book or newspaper print is a grid of dots 3-8 px apart at a scan's resolution. Resized to the working
size, the grid aliases into moiré and a texture no training photo had, and the router stops seeing the face
under it. A screen is a periodic pattern, so it shows as sharp, isolated peaks in the 2-D spectrum of L, far
above the smooth power-law fall-off of a photo's own spectrum; a Gaussian blur a little wider than the screen's
period removes it and keeps the shapes. Only what the router and the experts see is descreened: the output
still joins the original full-resolution L, so the print's texture stays in the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: the screen frequencies looked for, in cycles per pixel (periods of about 2.2 to 10 px)
FREQ_RANGE = (0.1, 0.45)
#: a peak counts as a screen when it stands this many times above the median magnitude at its frequency
PEAK_RATIO = 18.0
#: side of the centre crop whose spectrum is examined (cheap at any image size)
PROBE = 256


@dataclass(frozen=True)
class Screen:
    """A detected halftone screen: its period (px at the image's resolution) and how strong its peak is."""

    period: float
    strength: float


def detect_screen(L: torch.Tensor, probe: int = PROBE, peak_ratio: float = PEAK_RATIO) -> Screen | None:
    """The halftone screen in L (1, H, W) or (H, W), or None. Looks at the centre crop's windowed spectrum: the
    strongest frequency in :data:`FREQ_RANGE` must exceed ``peak_ratio`` x the median magnitude of its ring."""
    x = L.reshape(L.shape[-2:]).float()
    h, w = x.shape
    if min(h, w) < 64:
        return None
    s = min(probe, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = x[y0:y0 + s, x0:x0 + s]
    window = torch.hann_window(s, periodic=False)
    spec = torch.fft.rfft2((crop - crop.mean()) * window[:, None] * window[None, :]).abs()
    fy = torch.fft.fftfreq(s)[:, None].abs()
    fx = torch.fft.rfftfreq(s)[None, :]
    radius = torch.sqrt(fy**2 + fx**2)
    band = (radius >= FREQ_RANGE[0]) & (radius <= FREQ_RANGE[1])
    if not band.any():
        return None
    masked = torch.where(band, spec, torch.zeros_like(spec))
    peak = int(masked.argmax())
    r_peak = float(radius.flatten()[peak])
    ring = band & ((radius - r_peak).abs() <= 1.5 / s)
    floor = float(spec[ring].median())
    strength = float(spec.flatten()[peak]) / max(floor, 1e-6)
    if strength < peak_ratio:
        return None
    return Screen(period=1.0 / r_peak, strength=strength)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def descreen(L: torch.Tensor, screen: Screen) -> torch.Tensor:
    """L (..., H, W) blurred by a Gaussian of sigma = 0.6 x the screen's period (separable, reflect-padded):
    the screen's fundamental is gone, edges a few periods wide survive."""
    k = _gaussian_kernel(0.6 * screen.period)
    pad = len(k) // 2
    shape = L.shape
    x = L.reshape(1, 1, *shape[-2:]).float()
    if min(shape[-2:]) <= pad:
        return L
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), k.view(1, 1, -1, 1))
    return x.reshape(shape).to(L.dtype)


def without_screen(L: torch.Tensor) -> torch.Tensor:
    """L (..., H, W) with its halftone screen blurred away (:func:`descreen`) when :func:`detect_screen` finds
    one, else L itself (the same tensor): what the pipeline shows its models, and what training may show them."""
    screen = detect_screen(L)
    return L if screen is None else descreen(L, screen)
