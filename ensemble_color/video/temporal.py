"""Temporal stability: carry colour and routing along optical flow, find scene cuts, measure flicker.

Colourising each frame on its own flickers: small changes in the input (grain, compression noise, motion)
move the experts' colours and the router's decisions. A :class:`FlowCarry` is handed to the pipeline as its
per-batch hook: it computes Farneback optical flow between consecutive working-size lightness images, warps
the previous frame's router probabilities and ab along it and blends them into the current ones in
proportion to how reliable the flow is there (forward-backward consistent, same lightness after warping,
inside the frame). So colour follows motion, new or uncovered content gets fresh colour, and nothing is
copied from the pipeline. Scene cuts (a jump in the luminance histogram) reset the carried colour.
:func:`flicker` is the measure: mean |Δab| between consecutive frames after motion compensation (flow from the
*input* lightness, so every method is measured along the same motion).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..color import rgb_to_lab


@dataclass(frozen=True)
class TemporalOptions:
    """How colour is carried from frame to frame. Fixed by reasoning, not tuned on any measured clip."""

    carry: float = 0.85             #: share of the warped previous ab kept where the flow is fully reliable
    carry_probs: float = 0.85       #: the same for router probabilities (keeps expert choice steady)
    flow_tolerance: float = 1.0     #: forward-backward flow mismatch (px) at which reliability falls to 1/e
    lightness_tolerance: float = 6.0  #: L difference after warping (Lab units) at which it falls to 1/e
    cut_threshold: float = 0.25     #: luminance-histogram distance (0..1) that is always a cut
    cut_jump: float = 6.0           #: ... or this many times the shot's typical frame-to-frame distance,
    cut_floor: float = 0.08         #: ... if at least this (a static shot's tiny distances are noise)
    hist_bins: int = 32
    #: long side (px) optical flow is computed at, then scaled up (None: at the working size). Colour is
    #: smooth at this scale, and Farneback's cost grows with the pixel count (2 flows per frame).
    flow_size: int | None = 160


@dataclass(frozen=True)
class Link:
    """How frame t relates to frame t-1: flow t -> t-1 (px), per-pixel reliability in [0, 1], or a cut."""

    flow: np.ndarray | None
    reliability: np.ndarray | None
    cut: bool




def l_to_u8(L: torch.Tensor) -> np.ndarray:
    """L (1, h, w) in Lab units -> (h, w) uint8, the 8-bit image optical flow and histograms work on."""
    return np.ascontiguousarray((L[0].float().numpy() * 2.55).round().clip(0, 255).astype(np.uint8))


def scene_distance(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Half the L1 distance between two frames' normalised lightness histograms: 0 same, 1 disjoint.

    Why histograms: motion moves pixels but hardly changes the histogram, a cut to another shot does.
    """
    ha = np.bincount((a.ravel().astype(np.int32) * bins) >> 8, minlength=bins) / a.size
    hb = np.bincount((b.ravel().astype(np.int32) * bins) >> 8, minlength=bins) / b.size
    return 0.5 * float(np.abs(ha - hb).sum())


class CutDetector:
    """Scene cuts as jumps in the luminance histogram, frame by frame.

    A distance over ``cut_threshold`` is a cut; so is one ``cut_jump`` times the shot's typical
    distance (median of its last few), which catches cuts between shots of similar tone, while
    a shot's own motion, grain and lighting drift set what counts as typical.
    """

    def __init__(self, options: TemporalOptions, memory: int = 8) -> None:
        self.options, self.memory = options, memory
        self._recent: list[float] = []

    def __call__(self, prev: np.ndarray, cur: np.ndarray) -> bool:
        o = self.options
        if prev.shape != cur.shape:
            self._recent = []
            return True
        d = scene_distance(prev, cur, o.hist_bins)
        typical = float(np.median(self._recent)) if self._recent else None
        cut = d > o.cut_threshold or (typical is not None and d > max(o.cut_floor, o.cut_jump * typical))
        self._recent = [] if cut else [*self._recent, d][-self.memory:]
        return cut


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from ``a`` to ``b`` (h, w, 2): ``a[y, x] ≈ b[y + f[..., 1], x + f[..., 0]]``."""
    levels = max(1, min(4, int(math.log2(max(8, min(a.shape))) - 3)))  # coarsest level still >= ~8 px
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=levels, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def coarse_flow(a: np.ndarray, b: np.ndarray, long_side: int | None) -> np.ndarray:
    """:func:`farneback` on copies shrunk to ``long_side`` (if larger), scaled back to ``a``'s size in pixels."""
    h, w = a.shape
    if long_side is None or max(h, w) <= long_side:
        return farneback(a, b)
    s = long_side / max(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    small = farneback(*(cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b)))
    flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= w / size[0]
    flow[..., 1] *= h / size[1]
    return flow


def warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``x`` (h, w[, C]) at ``pixel + flow``: brings the previous frame onto the current one."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(x, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def link_frames(prev: np.ndarray, cur: np.ndarray, options: TemporalOptions, cut: bool = False) -> Link:
    """Flow from ``cur`` back to ``prev`` and where it can be trusted (``cut``: they are unrelated).

    Reliability is the product of three checks: following the flow back and then forward returns to
    the start (occlusions and wrong matches fail this), the lightness found there is the same, and the
    source lies inside the frame (content entering at the border has no past).
    """
    if cut or prev.shape != cur.shape:
        return Link(None, None, cut=True)
    back, fwd = coarse_flow(cur, prev, options.flow_size), coarse_flow(prev, cur, options.flow_size)
    mismatch = np.linalg.norm(back + warp(fwd, back), axis=-1)
    d_light = np.abs(cur.astype(np.float32) - warp(prev.astype(np.float32), back)) / 2.55
    h, w = cur.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sx, sy = gx + back[..., 0], gy + back[..., 1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    reliability = (np.exp(-(mismatch / options.flow_tolerance) ** 2)
                   * np.exp(-(d_light / options.lightness_tolerance) ** 2) * inside)
    return Link(back, reliability.astype(np.float32), cut=False)


def carry(prev: torch.Tensor | None, cur: torch.Tensor, link: Link, strength: float) -> torch.Tensor:
    """Blend ``prev`` (C, h, w), warped onto this frame, into ``cur`` where the flow is reliable.

    A convex combination per pixel, so probabilities still sum to one and ab stays in range.
    """
    if prev is None or link.cut or link.flow is None or prev.shape != cur.shape or strength <= 0:
        return cur
    warped = torch.from_numpy(warp(np.ascontiguousarray(prev.permute(1, 2, 0).numpy()), link.flow))
    if warped.dim() == 2:  # cv2 drops a single channel axis
        warped = warped[..., None]
    alpha = torch.from_numpy(link.reliability * strength)[None]
    return cur + alpha * (warped.permute(2, 0, 1) - cur)


class FlowCarry:
    """Carries router probabilities and ab along optical flow, frame to frame, resetting at scene cuts.

    The pipeline's sequence hook (``Pipeline.colorize_batch(..., carry=...)``): it calls
    :meth:`carry_probs` with each batch's router probabilities and :meth:`carry_ab` with its blended ab,
    both at working size and in frame order. One instance per video; it holds that video's state
    (the last frame's lightness, probabilities and ab), so batches may be of any size.
    """

    def __init__(self, options: TemporalOptions | None = None) -> None:
        self.options = options or TemporalOptions()
        self.cuts: list[int] = []     #: indices of frames that started a new shot (frame 0 excluded)
        self.frames = 0               #: frames linked so far
        self.seconds = 0.0            #: time spent on flow and blending
        self._cuts = CutDetector(self.options)
        self._prev_L: np.ndarray | None = None
        self._prev_probs: torch.Tensor | None = None
        self._prev_ab: torch.Tensor | None = None
        self._batch: list[torch.Tensor] | None = None
        self._links: list[Link] = []

    def _links_for(self, L_works: list[torch.Tensor]) -> list[Link]:
        """Links of this batch's frames (computed once per batch; both hooks use them)."""
        if L_works is self._batch:
            return self._links
        t0 = time.perf_counter()
        links = []
        for L in L_works:
            cur = l_to_u8(L)
            prev = self._prev_L
            link = Link(None, None, cut=False) if prev is None else link_frames(prev, cur, self.options,
                                                                                self._cuts(prev, cur))
            if link.cut:
                self.cuts.append(self.frames)
            links.append(link)
            self._prev_L = cur
            self.frames += 1
        self._batch, self._links = L_works, links
        self.seconds += time.perf_counter() - t0
        return links

    def carry_probs(self, L_works: list[torch.Tensor], probs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Router probabilities with the previous frames' carried in (decides experts and crops)."""
        return self._carry(L_works, probs, "_prev_probs", self.options.carry_probs)

    def carry_ab(self, L_works: list[torch.Tensor], ab_works: list[torch.Tensor]) -> list[torch.Tensor]:
        """Blended ab with the previous frames' carried in (what is joined with each frame's L)."""
        return self._carry(L_works, ab_works, "_prev_ab", self.options.carry)

    def _carry(self, L_works: list[torch.Tensor], values: list[torch.Tensor], state: str, strength: float
               ) -> list[torch.Tensor]:
        links = self._links_for(L_works)
        t0 = time.perf_counter()
        prev: torch.Tensor | None = getattr(self, state)
        out = []
        for link, value in zip(links, values, strict=True):
            prev = carry(prev, value, link, strength)
            out.append(prev)
        setattr(self, state, prev)
        self.seconds += time.perf_counter() - t0
        return out


def flicker(abs_: Sequence[np.ndarray], Ls: Sequence[np.ndarray], options: TemporalOptions | None = None,
            min_reliability: float = 0.5) -> float:
    """Mean |Δab| (Lab units) between consecutive frames after motion compensation.

    ``abs_``: per frame (h, w, 2) float ab; ``Ls``: the *input* frames' lightness as (h, w) uint8 (see
    :func:`l_to_u8`), so two colourisations of one clip are measured along the same flow. Frame t-1's
    ab is warped onto frame t; only pixels whose flow is reliable count, pairs across a cut are skipped.
    The flow is computed at full resolution unless ``options`` say otherwise.
    """
    options = options or TemporalOptions(flow_size=None)
    cuts = CutDetector(options)
    total, count = 0.0, 0
    for t in range(1, len(abs_)):
        link = link_frames(Ls[t - 1], Ls[t], options, cuts(Ls[t - 1], Ls[t]))
        if link.cut or link.flow is None or link.reliability is None:
            continue
        mask = link.reliability > min_reliability
        diff = np.linalg.norm(abs_[t] - warp(np.ascontiguousarray(abs_[t - 1], dtype=np.float32), link.flow),
                              axis=-1)
        total += float(diff[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


def ab_of(rgb: torch.Tensor) -> np.ndarray:
    """ab (h, w, 2) of an RGB result (3, H, W): what :func:`flicker` and L2ab are measured on."""
    return np.ascontiguousarray(rgb_to_lab(rgb[None])[0, 1:].permute(1, 2, 0).numpy())


