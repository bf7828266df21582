"""Pictures for people: the routing overlay with its legend, per-expert contact sheets.

Shared by the CLI (``--save-masks``), the web app and the benchmarks so they all show the same thing.
"""

from __future__ import annotations

import hashlib

import torch

#: Fixed colours for the shipped route classes; other classes get a stable colour from their name.
ROUTE_COLORS: dict[str, tuple[int, int, int]] = {
    "background": (70, 110, 200),
    "person": (240, 140, 40),
    "bird": (60, 190, 80),
    "animal": (200, 60, 200),
}


def route_color(name: str) -> tuple[int, int, int]:
    """Display colour of a route class (stable across runs for unknown classes)."""
    if name in ROUTE_COLORS:
        return ROUTE_COLORS[name]
    h = hashlib.sha1(name.encode()).digest()
    return 60 + h[0] % 180, 60 + h[1] % 180, 60 + h[2] % 180


#: weight of the route tint over the gray photo in :func:`routing_overlay` (what ``--save-masks`` writes)
OVERLAY_ALPHA = 0.55


def routing_overlay(L: torch.Tensor, probs: torch.Tensor, route_classes: tuple[str, ...] | list[str],
                    alpha: float = OVERLAY_ALPHA) -> torch.Tensor:
    """Gray image tinted by soft route probabilities: (1, h, w) L + (R, h, w) probs -> (3, h, w) RGB [0, 1]."""
    colors = torch.tensor([route_color(c) for c in route_classes], dtype=torch.float32) / 255
    tint = torch.einsum("rhw,rc->chw", probs.float(), colors)
    gray = (L.float() / 100).clamp(0, 1).expand(3, -1, -1)
    return ((1 - alpha) * gray + alpha * tint).clamp(0, 1)


def legend(route_classes: tuple[str, ...] | list[str], served_by: dict[str, str]) -> list[tuple[str, str]]:
    """[(label, '#rrggbb')] e.g. ('bird → birds', '#3cbe50'): which colour means which expert."""
    out = []
    for c in route_classes:
        r, g, b = route_color(c)
        out.append((f"{c} → {served_by.get(c, '?')}", f"#{r:02x}{g:02x}{b:02x}"))
    return out


def fit_square(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, size, size): short side to ``size``, centre crop (contact-sheet cells)."""
    h, w = rgb.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = torch.nn.functional.interpolate(rgb[None].float(), size=(nh, nw), mode="bilinear", antialias=True,
                                        align_corners=False)[0]
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return x[:, y0:y0 + size, x0:x0 + size].clamp(0, 1)


def contact_sheet(rows: list[list[torch.Tensor]], gap: int = 2) -> torch.Tensor:
    """A grid of equal-size (3, h, w) cells, one list per row, white gaps between cells: (3, H, W)."""
    h, w = rows[0][0].shape[-2:]
    ncol = max(len(r) for r in rows)
    sheet = torch.ones(3, len(rows) * (h + gap) - gap, ncol * (w + gap) - gap)
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            sheet[:, i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = cell
    return sheet
