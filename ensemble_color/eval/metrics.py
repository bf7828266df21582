"""Colourisation metrics, all on tensors: PSNR/SSIM on RGB, ab error, AuC, colourfulness.

Conventions (so numbers are comparable across the project):
* ``l2ab``: mean over pixels of the Euclidean ab distance, in Lab units.
* ``auc``: area under the cumulative ab-error curve for thresholds 0..150 (Zhang et al. 2016),
  normalised to [0, 1]; 1 means every pixel within 0 of ground truth.
* PSNR on 8-bit-quantised RGB, capped at :data:`PSNR_CAP` dB (identical images would be +inf).
* colourfulness: Hasler & Süsstrunk (2003) on RGB in 0..255.
"""

from __future__ import annotations

import kornia.metrics
import torch

PSNR_CAP = 100.0
AUC_THRESHOLDS = torch.arange(0, 151, dtype=torch.float32)


def ab_error(ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
    """Per-pixel Euclidean ab distance, (B, H, W)."""
    return torch.linalg.vector_norm(ab_pred.float() - ab_true.float(), dim=-3)


def l2ab(ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean ab error per image, (B,)."""
    return ab_error(ab_pred, ab_true).flatten(1).mean(1)


def cumulative_curve(err: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels with error <= t for each t in AUC_THRESHOLDS, per image: (B, 151).

    For an integer t, e <= t exactly when ceil(e) <= t, so the curve is the cumulative histogram
    of ceil(e): O(pixels), instead of a (pixels x 151) comparison table per image.
    """
    flat = err.flatten(1).float()
    n_t = len(AUC_THRESHOLDS)
    bins = torch.ceil(flat).clamp(0, n_t).long()  # n_t collects every error above the last threshold
    counts = torch.zeros(flat.shape[0], n_t + 1, device=err.device).scatter_add_(1, bins, torch.ones_like(flat))
    return counts.cumsum(1)[:, :n_t] / flat.shape[1]


def auc(err: torch.Tensor) -> torch.Tensor:
    """Normalised area under the cumulative error curve (trapezoid rule), per image, (B,)."""
    curve = cumulative_curve(err)
    return torch.trapezoid(curve, dx=1.0, dim=1) / (AUC_THRESHOLDS[-1] - AUC_THRESHOLDS[0])


def quantize(rgb: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels (what is saved), back in [0, 1]."""
    return torch.round(rgb.clamp(0, 1) * 255) / 255


def psnr(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image on 8-bit RGB, capped at PSNR_CAP."""
    mse = (quantize(rgb_pred) - quantize(rgb_true)).pow(2).flatten(1).mean(1)
    out = 10 * torch.log10(1.0 / mse.clamp_min(1e-20))
    return out.clamp(max=PSNR_CAP)


def ssim(rgb_pred: torch.Tensor, rgb_true: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (11x11 Gaussian window, sigma 1.5, on 8-bit-quantised RGB in [0, 1])."""
    smap = kornia.metrics.ssim(quantize(rgb_pred), quantize(rgb_true), window_size=11)
    return smap.flatten(1).mean(1)


def colorfulness(rgb: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Hasler & Süsstrunk colourfulness per image, RGB (B, 3, H, W) in [0, 1]. ``eps`` inside the square roots
    keeps the gradient finite on a gray image (for a loss; the metric uses 0)."""
    r, g, b = (rgb.float() * 255).unbind(-3)
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    std = torch.sqrt(rg.var(1, unbiased=False) + yb.var(1, unbiased=False) + eps)
    mean = torch.sqrt(rg.mean(1) ** 2 + yb.mean(1) ** 2 + eps)
    return std + 0.3 * mean


def palette_distance(ab_pred: torch.Tensor, ab_true: torch.Tensor, directions: int = 64, samples: int = 4096,
                     seed: int = 0) -> float:
    """Are these the right colours at all, wherever they are? Sliced Wasserstein-1 distance (Lab units) between
    the two images' ab pixel distributions, placement ignored: the mean over ``directions`` evenly spaced
    projections of the 1-D Wasserstein distance between the projected (sub-sampled, seeded) pixels.

    Why: L2ab rewards the brownish average (it is lowest for the least committed colours); a palette
    distance is 0 only when the output uses the truth's colours in the truth's proportions. Network-free.
    ``ab_*``: (2, H, W) (any two sizes)."""
    g = torch.Generator().manual_seed(seed)
    a = ab_pred.reshape(2, -1).float()
    b = ab_true.reshape(2, -1).float()
    a = a[:, torch.randint(a.shape[1], (samples,), generator=g)]
    b = b[:, torch.randint(b.shape[1], (samples,), generator=g)]
    return float(sliced_wasserstein(a, b, torch.arange(directions, dtype=torch.float32) * (torch.pi / directions)))


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Mean over the projections on the directions ``angles`` (radians, (D,)) of the 1-D Wasserstein-1 distance
    between two equally sized point sets in the ab plane, ``a`` and ``b`` (..., 2, S); the mean also runs over the
    leading dimensions. Shared by :func:`palette_distance` and the training term ``train.losses.palette_gap``."""
    axes = torch.stack([torch.cos(angles), torch.sin(angles)], 1).to(a)  # (D, 2)
    pa, _ = torch.sort(axes @ a, dim=-1)
    pb, _ = torch.sort(axes @ b, dim=-1)
    return (pa - pb).abs().mean()
