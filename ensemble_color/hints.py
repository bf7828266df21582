"""Colour hints: "the coat was blue". A hint is a point or a painted stroke with a colour, in the photo's own pixel
coordinates; its colour spreads through pixels of similar lightness and the same routed object, fades across
strong edges, and never changes L.

Method: each hint's weight at a pixel falls off with an **edge-aware geodesic distance** from the hint on the
working-size grid (a step costs its length, times 1 + (dL / 1.5)^2 for lightness jumps above 2 units, plus the
change of the router's probabilities), full up to half the long side and fading over a tenth of that; the
hints' colours are blended into the automatic ab by those weights. So inside the hinted object the hint's
colour takes over, and behind a strong edge or in another routed region the automatic colour stays. Chosen by
``bench/hints.py``'s rule over a Levin-style screened-Poisson reach (Levin, Lischinski & Weiss 2004): on 32 val
photos with ground-truth hints, L2ab 11.32 vs 11.83 at 5 hints and 8.67 vs 10.93 at 20, at 0.36 vs 1.6 s per
update (docs/experiments.md; today's figures in ``bench/results/hints.md`` and docs/hints.md). Why not a network
that takes hint channels (Zhang et al. 2017): this needs no training and obeys edges by construction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .color import rgb_to_lab

OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
HINT_METHODS = ("geodesic",)
#: lightness steps (L units, between neighbours of the smoothed working L) too small to be an object's edge
NOISE_L = 2.0
#: lightness range (L units, around the pixel under a hint's point) of the pixels its brush disc paints
BRUSH_L = 12.0
_HINT_RE = re.compile(r"^\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*=\s*(#?[0-9a-fA-F]{6})\s*(?::\s*([\d.]+))?\s*$")


class HintError(ValueError):
    """A hint that cannot be used; ``str(err)`` is one line naming the hint."""


@dataclass(frozen=True)
class Hint:
    """A colour at a point, or along a stroke (several points, painted with ``radius``), in the photo's pixel
    coordinates (x to the right, y down, any image size)."""

    points: tuple[tuple[float, float], ...]
    color: str                 #: "#rrggbb" (sRGB)
    radius: float = 3.0        #: brush radius, photo pixels

    def __post_init__(self) -> None:
        if not self.points:
            raise HintError("a hint needs at least one point")
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", self.color):
            raise HintError(f"hint colour {self.color!r} is not #RRGGBB")
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise HintError(f"hint radius {self.radius!r} must be a positive number")

    @classmethod
    def parse(cls, text: str) -> Hint:
        """``X,Y=#RRGGBB`` or ``X,Y=#RRGGBB:R`` (the CLI's ``--hint``)."""
        m = _HINT_RE.match(text)
        if not m:
            raise HintError(f"--hint {text!r}: expected X,Y=#RRGGBB[:RADIUS]")
        color = m.group(3) if m.group(3).startswith("#") else "#" + m.group(3)
        return cls(((float(m.group(1)), float(m.group(2))),), color.lower(),
                   float(m.group(4)) if m.group(4) else 3.0)

    def ab(self) -> tuple[float, float]:
        """The hint colour's (a, b) in Lab units (its L is not used: the photo keeps its own)."""
        rgb = torch.tensor([int(self.color[i:i + 2], 16) / 255 for i in (1, 3, 5)]).view(1, 3, 1, 1)
        lab = rgb_to_lab(rgb)[0, :, 0, 0]
        return float(lab[1]), float(lab[2])

    def to_json(self) -> dict:
        return {"points": [list(p) for p in self.points], "color": self.color, "radius": self.radius}

    @classmethod
    def from_json(cls, data: dict) -> Hint:
        try:
            return cls(tuple((float(x), float(y)) for x, y in data["points"]), str(data["color"]).lower(),
                       float(data.get("radius", 3.0)))
        except (KeyError, TypeError, ValueError) as err:
            raise HintError(f"hint {data!r}: {err}") from None


def check_hints(hints: Sequence[Hint], width: int, height: int) -> None:
    """Raise :class:`HintError` naming the first hint with a point outside a ``width`` x ``height`` photo."""
    for h in hints:
        for x, y in h.points:
            if not (0 <= x < width and 0 <= y < height):
                raise HintError(f"hint at ({x:g}, {y:g}) {h.color} is outside the {width}x{height} image")


def save_hints(path: str | Path, hints: Sequence[Hint], size: tuple[int, int]) -> None:
    """Write hints (and the photo size they refer to) as JSON, to be loaded again with :func:`load_hints`."""
    from .io import atomic_write_bytes

    data = {"image_size": list(size), "hints": [h.to_json() for h in hints]}
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def load_hints(path: str | Path) -> list[Hint]:
    """Hints from a JSON file written by :func:`save_hints` (or by hand: ``{"hints": [{"points": [[x, y]],
    "color": "#1f4e9a", "radius": 4}]}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        items = data["hints"] if isinstance(data, dict) else data
        return [Hint.from_json(d) for d in items]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise HintError(f"{path}: not a hints file ({err})") from None


def hint_targets(hints: Sequence[Hint], full: tuple[int, int], work: tuple[int, int], saturation: float = 1.0,
                 L: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rasterise hints onto the working grid, one channel per colour: (masks (K, h, w) in {0, 1}, target ab
    (K, 2)). A later hint wins a pixel two colours paint. Targets are divided by ``saturation`` so that the
    output, scaled by it, shows the hint's colour.

    With the working ``L`` (h, w) the brush respects edges: a disc keeps only the pixels whose lightness is
    within :data:`BRUSH_L` of the lightness under its point, so a hint placed near an object's border does not
    also seed the other side (a maroon scarf hint at the edge of a pale wall would turn the wall pink)."""
    H, W = full
    h, w = work
    sy, sx = h / H, w / W
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5,
                            indexing="ij")
    colors = list(dict.fromkeys(hint.color for hint in hints))
    masks = torch.zeros(len(colors), h, w)
    targets = torch.zeros(len(colors), 2)
    for hint in hints:
        r = max(0.75, hint.radius * min(sx, sy))
        painted = torch.zeros(h, w, dtype=torch.bool)
        for x, y in hint.points:
            disc = (xx - x * sx) ** 2 + (yy - y * sy) ** 2 <= r * r
            if L is not None:
                centre = L[min(h - 1, int(y * sy)), min(w - 1, int(x * sx))]
                disc &= (L - centre).abs() <= BRUSH_L
            painted |= disc
        if not painted.any():  # a hint smaller than a working pixel still marks the pixel it falls in
            painted[min(h - 1, int(hint.points[0][1] * sy)), min(w - 1, int(hint.points[0][0] * sx))] = True
        k = colors.index(hint.color)
        masks[:, painted] = 0.0
        masks[k][painted] = 1.0
        targets[k] = torch.tensor(hint.ab()) / max(saturation, 1e-3)
    return masks, targets


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x at p + (dy, dx), zero beyond the border; x (..., h, w)."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    return xp[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _edge_costs(L: torch.Tensor, probs: torch.Tensor | None, edge: float, route: float
                ) -> dict[tuple[int, int], torch.Tensor]:
    """Cost of the step from p + (dy, dx) to p, for each of the 8 offsets: its length times
    ``1 + (max(0, |dL| - NOISE_L) / edge)^2`` (grain and print texture below NOISE_L are not edges),
    plus ``route`` x the change of route probabilities."""
    out = {}
    for dy, dx in OFFSETS:
        jump = ((L - _shifted(L, dy, dx)).abs() - NOISE_L).clamp_min(0)
        step = math.hypot(dy, dx) * (1 + (jump / edge) ** 2)
        if probs is not None:
            step = step + route * (probs - _shifted(probs, dy, dx)).abs().sum(0)
        out[(dy, dx)] = step
    return out


def _row_pass(d: torch.Tensor, cost_left: torch.Tensor, cost_right: torch.Tensor) -> torch.Tensor:
    """Exact 1-D distance along rows in both directions: d[x] = min_j (d[j] + path cost j -> x), by cumulative
    sums and cumulative minima (``cost_left[x]``: the step from x - 1 to x; ``cost_right[x]``: from x + 1)."""
    cost_left, cost_right = cost_left.clone(), cost_right.clone()
    cost_left[..., 0] = 0  # no step enters the first pixel from the left: keeps the sums small (float32)
    cost_right[..., -1] = 0
    s = torch.cumsum(cost_left, -1)
    d = torch.minimum(d, s + torch.cummin(d - s, -1).values)
    r = torch.flip(torch.cumsum(torch.flip(cost_right, [-1]), -1), [-1])
    return torch.minimum(d, r + torch.flip(torch.cummin(torch.flip(d - r, [-1]), -1).values, [-1]))


def geodesic(L: torch.Tensor, masks: torch.Tensor, probs: torch.Tensor | None = None, edge: float = 1.5,
             route: float = 40.0, sweeps: int = 2) -> torch.Tensor:
    """Edge-aware distance (working pixels) from each hint's mask, (K, h, w): crossing a 10-unit lightness edge
    costs as much as walking 26 flat pixels (:func:`_edge_costs`). Fast sweeping: rows top-down and bottom-up
    (each row from the previous one's three neighbours, then exactly along the row), then the same on columns,
    ``sweeps`` times; a path that turns more often than that is over-estimated, which only shortens a reach."""
    L = L.reshape(L.shape[-2:]).float()
    big = 1e6
    d = torch.where(masks > 0, torch.zeros_like(masks), torch.full_like(masks, big))

    def vertical(d: torch.Tensor, costs: dict, h: int) -> torch.Tensor:
        rows = list(d.unbind(-2))
        for order, dy in ((range(1, h), -1), (range(h - 2, -1, -1), 1)):
            for y in order:
                prev = rows[y + dy]
                cand = rows[y]
                for dx in (-1, 0, 1):
                    cand = torch.minimum(cand, _shifted(prev[..., None, :], 0, dx)[..., 0, :] + costs[(dy, dx)][y])
                rows[y] = _row_pass(cand, costs[(0, -1)][y], costs[(0, 1)][y])
        return torch.stack(rows, -2)

    costs = _edge_costs(L, probs, edge, route)
    costs = {k: torch.where(_shifted(torch.ones_like(L), *k) > 0, v, torch.full_like(v, big)) for k, v in costs.items()}
    t_costs = {(dx, dy): v.T for (dy, dx), v in costs.items()}
    for _ in range(sweeps):
        d = vertical(d, costs, L.shape[0])
        d = vertical(d.transpose(-1, -2), t_costs, L.shape[1]).transpose(-1, -2)
    return d


def _geodesic_half(L: torch.Tensor, masks: torch.Tensor, probs: torch.Tensor | None) -> torch.Tensor:
    """:func:`geodesic` on a half-size grid (4x fewer pixels: the web demo's update stays well under a second),
    distances scaled back to working pixels and resized to L's grid."""
    if max(L.shape) <= 160:
        return geodesic(L, masks, probs)
    half = F.avg_pool2d(L[None, None], 2, ceil_mode=True)[0, 0]
    m = F.max_pool2d(masks[None], 2, ceil_mode=True)[0]
    p = None if probs is None else F.avg_pool2d(probs[None], 2, ceil_mode=True)[0]
    d = geodesic(half, m, p) * 2.0
    return F.interpolate(d[None], size=L.shape, mode="bilinear", align_corners=False)[0]


def propagate(ab: torch.Tensor, L: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor,
              probs: torch.Tensor | None = None, method: str = "geodesic", reach_px: float = 0.5) -> torch.Tensor:
    """The hinted ab (2, h, w): each hint's colour blended in by its reach ``R_k`` (full up to ``reach_px`` of the
    long side in edge-aware geodesic distance, :func:`geodesic`, fading over a tenth of that),
    ``U = A + sum_k R_k (c_k - A) / max(1, sum_k R_k)``. The automatic ``ab`` (A) is untouched where no hint
    reaches, so nothing is smoothed that the hints do not concern. ``masks`` (K, h, w) and ``targets``
    (K, 2) from :func:`hint_targets`; ``L`` the working L (it sets the edge costs and is never changed)."""
    if masks.numel() == 0 or not bool(masks.any()):
        return ab
    if method not in HINT_METHODS:
        raise ValueError(f"unknown hint method {method!r}; known: {', '.join(HINT_METHODS)}")
    d = _geodesic_half(L.reshape(L.shape[-2:]).float(), masks, probs)
    d0 = reach_px * max(L.shape[-2:])
    R = torch.sigmoid((d0 - d) / (0.1 * d0))
    total = R.sum(0).clamp_min(1.0)
    ab = ab.float()
    delta = sum(R[k] * (targets[k].view(2, 1, 1) - ab) for k in range(len(R)))
    return ab + delta / total


def paint_routes(probs: torch.Tensor, route_classes: Sequence[str], strokes: Sequence[tuple[Hint, str]],
                 full: tuple[int, int]) -> torch.Tensor:
    """Route painting: where a stroke (its points and radius; its colour unused) says "this is a person/bird/...",
    the route probabilities become that class, whatever the router said. ``probs`` (R, h, w)."""
    if not strokes:
        return probs
    out = probs.clone()
    for stroke, route in strokes:
        if route not in route_classes:
            raise HintError(f"route painting: {route!r} is not a route class ({', '.join(route_classes)})")
        masks, _ = hint_targets([stroke], full, tuple(probs.shape[-2:]))
        k = route_classes.index(route)
        painted = masks[0] > 0
        out[:, painted] = 0.0
        out[k, painted] = 1.0
    return out
