"""Quantised ab space for colourisation-as-classification (Zhang et al. 2016 style).

Why a classification head at all: a regression (L2) head averages the plausible colours of an
ambiguous object and comes out greyish; predicting a distribution over ab bins and decoding it
with an *annealed mean* keeps the vividness of the mode without its spatial noise.

**The 313 bins.** Grid of size 10: centres at integer multiples of 10 in a and b. We computed the
sRGB gamut's ab footprint ourselves (sRGB colours on a grid over the RGB cube, D65, converted to Lab)
and measured what natural criteria give (float64 numpy check, see the model card for the commands):

* centre is an in-gamut colour for some L (L sampled every 0.01): 229 bins;
* the bin's 10 x 10 cell contains the ab of some 8-bit sRGB colour (= rounding all 16.7 M 8-bit
  colours to the grid): 261 bins;
* the cell intersects the convex hull of the gamut's ab footprint: 269 bins.

None gives 313 (the number of Zhang et al.'s ``pts_in_hull``, whose set also reaches b = 100,
beyond sRGB's b_max of about 94, so it is not an sRGB gamut test either). The rule used here:
**a bin is kept when its centre lies within** :data:`GAMUT_MARGIN` **= 13.5 ab units (Euclidean)
of the ab of some sRGB colour**. That keeps all 261 cell-intersecting bins plus the ring of
neighbours the network needs to express saturated colours at the gamut edge, and yields exactly
313. The threshold sits in a gap of the distance distribution (313th bin: 13.40 from the footprint
sampled with 33 levels per channel, 13.29 with 65; 314th: 13.80 with both), so the set is the same
for 33, 65 and 129 levels; 33 is used (0.2 s, cached).
Bins outside the gamut are harmless: decoded colours are gamut-clipped by ``lab_to_rgb``.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .color import rgb_to_lab

GRID = 10.0
#: Euclidean distance (ab units) from a bin centre to the sRGB gamut's ab footprint for it to be kept.
GAMUT_MARGIN = 13.5
N_BINS = 313
SIGMA = 5.0
N_NEIGHBOURS = 5
DEFAULT_T = 0.38


def gamut_ab(levels: int = 33) -> torch.Tensor:
    """ab of every colour of a ``levels``^3 grid over the sRGB cube, (N, 2), duplicates removed."""
    v = torch.linspace(0, 1, levels, dtype=torch.float64)
    rgb = torch.stack(torch.meshgrid(v, v, v, indexing="ij"), 0).reshape(3, -1, 1).float()
    ab = rgb_to_lab(rgb)[1:].reshape(2, -1).T
    return torch.unique(torch.round(ab * 4) / 4, dim=0)


def distance_to_gamut(points: torch.Tensor, levels: int = 33) -> torch.Tensor:
    """Euclidean ab distance from each of ``points`` (N, 2) to the nearest sampled sRGB colour."""
    ref = gamut_ab(levels)
    return torch.cat([torch.cdist(chunk, ref).amin(1) for chunk in points.float().split(256)])


@lru_cache(maxsize=1)
def _bins_cached() -> torch.Tensor:
    r = torch.arange(-16, 17, dtype=torch.float32) * GRID
    grid = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    keep = distance_to_gamut(grid) <= GAMUT_MARGIN
    bins = grid[keep]
    if len(bins) != N_BINS:
        raise RuntimeError(f"gamut rule produced {len(bins)} bins, expected {N_BINS}")
    return bins


def ab_bins() -> torch.Tensor:
    """The 313 bin centres (313, 2) in Lab units, sorted by a then b (deterministic order)."""
    return _bins_cached().clone()


def soft_encode(ab: torch.Tensor, bins: torch.Tensor, sigma: float = SIGMA, k: int = N_NEIGHBOURS) -> torch.Tensor:
    """ab (B, 2, H, W) -> soft targets (B, Q, H, W): ``k`` nearest bins, Gaussian weights, sum 1."""
    B, _, H, W = ab.shape
    flat = ab.float().permute(0, 2, 3, 1).reshape(-1, 2)
    d2 = torch.cdist(flat, bins.float()).pow(2)
    near_d2, near_i = d2.topk(k, dim=1, largest=False)
    w = torch.exp(-(near_d2 - near_d2[:, :1]) / (2 * sigma**2))  # shift by the nearest: no underflow
    w = w / w.sum(1, keepdim=True)
    out = torch.zeros(flat.shape[0], bins.shape[0], dtype=w.dtype, device=ab.device)
    out.scatter_(1, near_i, w)
    return out.reshape(B, H, W, -1).permute(0, 3, 1, 2)


def nearest_bin(ab: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin per pixel, (B, H, W) long."""
    B, _, H, W = ab.shape
    flat = ab.float().permute(0, 2, 3, 1).reshape(-1, 2)
    return torch.cdist(flat, bins.float()).argmin(1).reshape(B, H, W)


def rebalancing_weights(prior: torch.Tensor, bins: torch.Tensor, lam: float = 0.5,
                        sigma: float = SIGMA) -> torch.Tensor:
    """Class-rebalancing weights w_q ∝ ((1-λ)·p̃_q + λ/Q)^-1 with E_p[w] = 1.

    ``p̃`` is the empirical distribution ``prior`` smoothed by a Gaussian of ``sigma`` ab units over
    the bin centres (mass-preserving); the weights are normalised so their expectation under the
    *empirical* ``prior`` (what the loss actually averages over) is exactly 1, so the loss scale does
    not depend on how rare the rare colours are.
    """
    d2 = torch.cdist(bins.float(), bins.float()).pow(2)
    kernel = torch.exp(-d2 / (2 * sigma**2))
    kernel = kernel / kernel.sum(1, keepdim=True)          # row r spreads p_r's mass over its neighbours
    smoothed = kernel.T @ prior.float()
    w = 1.0 / ((1 - lam) * smoothed + lam / bins.shape[0])
    return w / (prior.float() * w).sum()


def annealed_mean(logits: torch.Tensor, bins: torch.Tensor, T: float = DEFAULT_T) -> torch.Tensor:
    """Decode (B, Q, H, W) logits to ab (B, 2, H, W): mean of softmax(log p / T).

    T = 1 is the mean of the predicted distribution, T -> 0 its mode; T = 0 is treated as the mode.
    """
    if T <= 0:
        return mode(logits, bins)
    # softmax(log p / T) = softmax(logits / T): log_softmax only shifts every bin by the same constant. The bins
    # run along the last dimension, a view of the channels-last maps the head emits, not a 313-channel copy
    # (explicit permutations: the ONNX exporter writes movedim's as a Transpose with a negative axis)
    z = logits.float().permute(0, 2, 3, 1)
    p = torch.softmax(z / T, dim=-1)
    return (p @ bins.float().to(p.device)).permute(0, 3, 1, 2)


def mode(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """ab of the most likely bin per pixel, (B, 2, H, W)."""
    idx = logits.argmax(1)
    return bins.float().to(logits.device)[idx].permute(0, 3, 1, 2)
