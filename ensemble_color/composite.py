"""The compositor: route probabilities -> per-expert weights -> crops -> blended ab -> full-res RGB.

Design choices (and why):
* Weights are the router's soft probabilities summed over each expert's route classes, so two
  experts cross-fade where the router is unsure: no seams by construction.
* A class with no expert, and anything left outside the specialists' crops, goes to the fallback
  expert (the generalist if installed, else the background expert): weights always sum to 1.
* Experts only run on the bounding box (+ margin) of their region, and only when it has mass.
* ab is computed at the working resolution and upsampled to full size by a fast guided filter that follows
  the full-resolution L's edges (bilinear as an option; never nearest); L is always the original
  full-resolution L, so detail and tone are untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .color import by_bands, join_l_ab


@dataclass(frozen=True)
class ExpertRoute:
    """Which route classes an expert serves; ``fallback`` takes all unclaimed mass."""

    name: str
    routes: tuple[str, ...]
    fallback: bool = False


@dataclass(frozen=True)
class Box:
    """A crop, half-open pixel ranges at working resolution."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def choose_fallback(experts: Sequence[ExpertRoute]) -> str:
    """The expert for unclaimed classes: a declared fallback, else whoever serves ``background``."""
    for e in experts:
        if e.fallback:
            return e.name
    for e in experts:
        if "background" in e.routes:
            return e.name
    if not experts:
        raise ValueError("no experts installed")
    return experts[0].name


def served_by(route_classes: Sequence[str], experts: Sequence[ExpertRoute],
              assign: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Route class -> the expert(s) that colour it ('a + b' when shared; the fallback when unclaimed)."""
    return {c: " + ".join(owners_of(c, experts, assign)) for c in route_classes}


def owners_of(cls: str, experts: Sequence[ExpertRoute], assign: Mapping[str, Sequence[str]] | None = None
              ) -> list[str]:
    """Experts that colour route class ``cls``: an explicit ``assign`` entry (user's choice) wins over the
    manifests' claims; a class nobody claims goes to the fallback. Assigned names not installed are ignored."""
    installed = {e.name for e in experts}
    chosen = [n for n in (assign or {}).get(cls, ()) if n in installed]
    return chosen or [e.name for e in experts if cls in e.routes] or [choose_fallback(experts)]


def expert_weights(probs: torch.Tensor, route_classes: Sequence[str], experts: Sequence[ExpertRoute],
                   assign: Mapping[str, Sequence[str]] | None = None) -> dict[str, torch.Tensor]:
    """(R, H, W) route probabilities -> {expert: (H, W) weight}; weights sum to 1 at every pixel.

    A class served by several experts is shared equally between them; a class served by none goes
    to the fallback expert; ``assign`` (class -> expert names) overrides the manifests.
    """
    weights = {e.name: torch.zeros_like(probs[0]) for e in experts}
    for i, cls in enumerate(route_classes):
        owners = owners_of(cls, experts, assign)
        for name in owners:
            weights[name] = weights[name] + probs[i] / len(owners)
    return weights


#: The ramp measured in docs/results.md ("routed + context"): fixed before measuring, not tuned. On by
#: default (``PipelineOptions.context``; docs/tuning.md chose it on held-out photos): it wins on
#: single-subject photos and loses a little on multi-subject composites. Off with ``--no-context``
#: (or the app's "One main subject" box unticked).
SUBJECT_CONTEXT_RAMP: tuple[float, float] = (0.2, 0.5)


def share_context(probs: torch.Tensor, route_classes: Sequence[str], ramp: tuple[float, float] | None,
                  background: str = "background") -> torch.Tensor:
    """Hand part of the background to the subject classes when subjects fill much of the frame.

    Why: a specialist also learned its subject's usual surroundings (the birds expert: CUB's foliage,
    bark, sky and water; the faces expert: LFW's studio and street backgrounds). On a photo *of* a bird
    the scenes expert colours that background worse than the birds expert does, while on a landscape
    with a small bird the scenes expert is right. So the share of background moved grows linearly with
    the subjects' total area, from 0 at ``ramp[0]`` to all of it at ``ramp[1]``, and is split between
    the subject classes in proportion to their areas. It is one number per image, so weights stay
    smooth inside the image (no seams) and still sum to 1. ``ramp=None`` (or no background class) is a no-op.
    """
    if ramp is None or background not in route_classes:
        return probs
    lo, hi = ramp
    b = list(route_classes).index(background)
    subjects = [i for i in range(len(route_classes)) if i != b]
    area = probs[subjects].mean(dim=(-2, -1))
    total = float(area.sum())
    if total <= 0.0:
        return probs
    moved_share = min(1.0, max(0.0, (total - lo) / max(hi - lo, 1e-6)))
    if moved_share == 0.0:
        return probs
    moved = probs[b] * moved_share
    out = probs.clone()
    out[b] = probs[b] - moved
    for j, i in enumerate(subjects):
        out[i] = probs[i] + moved * (float(area[j]) / total)
    return out


def region_box(weight: torch.Tensor, threshold: float, margin: int, multiple: int, quantile: float = 0.0
               ) -> Box | None:
    """Box around ``weight > threshold``, grown by ``margin`` and to a multiple of ``multiple``.

    With ``quantile`` q > 0 the box spans the q..1-q quantiles of that weight's mass along each axis
    instead of its extreme pixels: a few scattered false-positive specks (segmenters make them) no
    longer stretch a specialist's crop to the whole frame. Returns None when no pixel passes.
    """
    h, w = weight.shape
    kept = torch.where(weight > threshold, weight, torch.zeros((), dtype=weight.dtype))
    rows, cols = kept.sum(1), kept.sum(0)
    if float(rows.sum()) <= 0.0:
        return None
    (y0, y1), (x0, x1) = _mass_span(rows, quantile), _mass_span(cols, quantile)
    y0, y1 = max(0, y0 - margin), min(h, y1 + margin)
    x0, x1 = max(0, x0 - margin), min(w, x1 + margin)
    return Box(*_grow_to_multiple(y0, y1, h, multiple), *_grow_to_multiple(x0, x1, w, multiple))


def _mass_span(mass: torch.Tensor, quantile: float) -> tuple[int, int]:
    """[first, last + 1) index range holding all but ``quantile`` of ``mass`` at each end."""
    nz = torch.nonzero(mass > 0).flatten()
    if quantile <= 0.0:
        return int(nz[0]), int(nz[-1]) + 1
    cdf = mass.cumsum(0) / mass.sum()
    lo = int(torch.searchsorted(cdf, torch.tensor(quantile, dtype=cdf.dtype)))
    hi = int(torch.searchsorted(cdf, torch.tensor(1.0 - quantile, dtype=cdf.dtype)))
    return lo, min(len(mass), max(hi, lo) + 1)


def _union(a: Box | None, b: Box, limit: tuple[int, int], multiple: int) -> Box:
    if a is None:
        return b
    y0, y1 = _grow_to_multiple(min(a.y0, b.y0), max(a.y1, b.y1), limit[0], multiple)
    x0, x1 = _grow_to_multiple(min(a.x0, b.x0), max(a.x1, b.x1), limit[1], multiple)
    return Box(y0, y1, x0, x1)


def _grow_to_multiple(a: int, b: int, limit: int, multiple: int) -> tuple[int, int]:
    """Widen [a, b) to a multiple of ``multiple`` when the image allows (fewer padded pixels)."""
    need = (-(b - a)) % multiple
    b2 = min(limit, b + need)
    a2 = max(0, a - (need - (b2 - b)))
    return a2, b2


def plan_regions(weights: dict[str, torch.Tensor], fallback: str, threshold: float, margin: int,
                 multiple: int, min_fraction: float, fallback_min: float = 0.0, quantile: float = 0.0
                 ) -> tuple[dict[str, Box], dict[str, torch.Tensor]]:
    """Decide which experts run on which crop and the final blend weights.

    Specialists whose region covers less than ``min_fraction`` of the image are dropped; a
    specialist's weight outside its crop (see :func:`region_box` for ``quantile``) is zero. The
    fallback takes what is left over where that exceeds ``fallback_min``: cutting soft weights at
    crop borders leaves a thin, low leftover everywhere, and running a full-frame model for it is
    what made routing no faster than running every expert. The fallback's crop always covers every
    pixel where nothing else was kept, and weights are renormalised, so they sum to one at every pixel.
    """
    boxes: dict[str, Box] = {}
    final: dict[str, torch.Tensor] = {}
    claimed = torch.zeros_like(next(iter(weights.values())))
    for name, w in weights.items():
        if name == fallback or float(w.mean()) < min_fraction:
            continue
        box = region_box(w, threshold, margin, multiple, quantile)
        if box is None:
            continue
        masked = torch.zeros_like(w)
        masked[box.slices] = w[box.slices]
        boxes[name], final[name] = box, masked
        claimed = claimed + masked
    rest = (1.0 - claimed).clamp_min(0.0)
    box = region_box(rest, max(threshold, fallback_min), margin, multiple, quantile)
    orphans = claimed < 1e-3  # nothing kept here: renormalising would divide by ~0
    if box is not None:
        orphans[box.slices] = False
    if bool(orphans.any()):
        box = _union(box, region_box(orphans.float(), 0.5, margin, multiple), tuple(rest.shape), multiple)
    if box is not None:
        masked = torch.zeros_like(rest)
        masked[box.slices] = rest[box.slices]
        boxes[fallback], final[fallback] = box, masked
    total = sum(final.values())
    return boxes, {k: v / total.clamp_min(1e-6) for k, v in final.items()}


#: values of ``PipelineOptions.decode_alone``: how an expert colouring a photo alone decodes
DECODE_ALONE = ("blend", "manifest")


def alone_experts(weights: Mapping[str, torch.Tensor], share: float = 1.0) -> set[str]:
    """Experts that colour a photo alone, by its blend ``weights`` (:func:`plan_regions`'s, summing to one at
    every pixel): the only expert with a region, or, with ``share`` < 1, one carrying at least that share of
    the photo's weight. Why a share: a scene with one small person in it is, for its background's expert, a
    photo it colours nearly alone, and decodes best as such (``PipelineOptions.alone_share``)."""
    if len(weights) == 1:
        return set(weights)
    if share >= 1.0:
        return set()
    return {n for n, w in weights.items() if float(w.mean()) >= share}


def blend(ab_layers: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_e w_e · ab_e over experts; (2, H, W)."""
    out = None
    for name, w in weights.items():
        term = ab_layers[name] * w
        out = term if out is None else out + term
    if out is None:
        raise ValueError("nothing to blend")
    return out


def upsample_ab(ab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of ab (..., 2, h, w) to ``size`` = (H, W)."""
    if tuple(ab.shape[-2:]) == tuple(size):
        return ab
    x = ab if ab.dim() == 4 else ab[None]
    out = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False,
                        antialias=size[0] < x.shape[-2])
    return out if ab.dim() == 4 else out[0]


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, edges handled by replicate padding; (B, C, H, W).

    Separable sums of shifted views (2r+1 rows, then 2r+1 columns) rather than ``F.avg_pool2d``, whose CPU
    kernel is slow for these few-channel working-size maps; the same means to float rounding. Its temporaries are
    ~1 MB, so its speed depends on the allocator: faster where glibc reuses heap memory, slower where every call
    gets fresh pages (``bench/conversions.py``, "guided A, B"; README, "Speed").
    """
    k = 2 * r + 1
    x = F.pad(x, (r, r, r, r), mode="replicate")
    h, w = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
    rows = x[..., :h, :].clone()
    for i in range(1, k):
        rows += x[..., i:i + h, :]
    out = rows[..., :w].clone()
    for j in range(1, k):
        out += rows[..., j:j + w]
    return out / (k * k)


#: window radius (working pixels) and regulariser of the guided upsampling
GUIDED_RADIUS, GUIDED_EPS = 2, 1e-3


def guided_coefficients(ab: torch.Tensor, L_low: torch.Tensor) -> torch.Tensor:
    """Fast guided filter (He & Sun 2015), its low-resolution half: fit ab/100 ≈ A·L/100 + B in every
    (2r+1)² window of the working image; the box-averaged A and B, stacked: (4, h, w)."""
    radius, eps = GUIDED_RADIUS, GUIDED_EPS
    guide, p = L_low[None].float() / 100.0, ab[None].float() / 100.0
    # one box pass over every map that needs its window mean: L, ab, L·ab, L²
    means = _box(torch.cat([guide, p, guide * p, guide * guide], dim=1), radius)
    mean_g, mean_p, mean_gp, mean_gg = means[:, :1], means[:, 1:3], means[:, 3:5], means[:, 5:]
    a = (mean_gp - mean_g * mean_p) / (mean_gg - mean_g * mean_g + eps)
    b = mean_p - a * mean_g
    return _box(torch.cat([a, b], dim=1), radius)[0]


def guided_upsample_ab(ab: torch.Tensor, L_low: torch.Tensor, L_full: torch.Tensor) -> torch.Tensor:
    """Edge-aware upsampling of working ab (2, h, w) to the full-res L's size (fast guided filter): colour
    edges follow the full-res lightness edges instead of being blurred by plain interpolation; where L is
    flat, A is 0 and the result is the bilinear upsampling of the (box-smoothed) ab.

    The full-resolution half is two whole-image bilinear resizes (torch's kernel) and a multiply-add,
    A·L + 100·B (B scaled at the working size), at the price of one 2-channel full-size temporary beside the
    result; ``bench/conversions.py`` times it against plain bilinear upsampling.
    """
    size = tuple(L_full.shape[-2:])
    if tuple(ab.shape[-2:]) == size:
        return ab
    coefficients = guided_coefficients(ab, L_low)
    ab_full = upsample_ab(coefficients[:2], size).mul_(L_full.float())
    return ab_full.add_(upsample_ab(coefficients[2:] * 100.0, size))


def full_res_ab(L_full: torch.Tensor, ab_work: torch.Tensor, L_work: torch.Tensor | None = None) -> torch.Tensor:
    """Working ab (2, h, w) upsampled to the full-res L's size: edge-aware with ``L_work`` (the working-size L
    the experts saw, :func:`guided_upsample_ab`), otherwise bilinear."""
    ab_work = ab_work.to(L_full.device)
    if L_work is None:
        return upsample_ab(ab_work, tuple(L_full.shape[-2:]))
    return guided_upsample_ab(ab_work, L_work.to(L_full.device), L_full)


def compose_lab(L_full: torch.Tensor, ab_work: torch.Tensor, saturation: float = 1.0,
                L_work: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample working ab to the full-res L's size (:func:`full_res_ab`) and stack: (1, H, W) + (2, h, w) ->
    Lab (3, H, W). Channel 0 *is* the input L tensor's values: the compositor never touches lightness."""
    return torch.cat([L_full.float(), full_res_ab(L_full, ab_work, L_work).float() * saturation], dim=0)


def compose(L_full: torch.Tensor, ab_work: torch.Tensor, saturation: float = 1.0,
            L_work: torch.Tensor | None = None, guide: torch.Tensor | None = None) -> torch.Tensor:
    """Full-resolution RGB (3, H, W) in [0, 1] from full-res L and working-res ab: :func:`compose_lab`
    joined to sRGB, the saturation and Lab -> sRGB steps band by band of rows (``color.by_bands``), so that a
    large photo holds only its L, the upsampled ab and the result at full size.

    ``guide``: the full-resolution L the edge-aware upsampling follows (default ``L_full``): the L the experts saw
    before it was shrunk, which for a halftone print is the descreened L. The guided filter fits ab ≈ A·L + B on
    the working L; applied to the original, screened L, A turns every halftone dot into a dot of colour
    (``bench/halftone_chroma.py``: a median 6.6x the high-frequency chroma on the 21 screened historical
    portraits). The result still keeps ``L_full``'s lightness."""
    ab = full_res_ab(L_full if guide is None else guide, ab_work, L_work)
    return by_bands(lambda L, ab: join_l_ab(L, ab.float() * saturation), 3, L_full, ab)
