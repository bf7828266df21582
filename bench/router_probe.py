"""Router design probes: inference input size, flip and multi-scale averaging, and a class-prior shift.

    python bench/router_probe.py [--router embedded|PATH] [--n 100] [--out bench/results/router_probe]

All are measured on **seed-1** val composites (the reported router metrics use seed 0) and on
60 val masks per category, with the router's own resize/softmax path. Writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ensemble_color.routing import Router, load_router
from ensemble_color.train.composites import val_composites
from ensemble_color.train.router import load_masked, pasted_recall, segmentation_scores


class _Biased(nn.Module):
    """A segmenter with a constant offset added to its logits (a class-prior shift)."""

    def __init__(self, segmenter: nn.Module, bias: torch.Tensor) -> None:
        super().__init__()
        self.segmenter, self.bias = segmenter, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(x) + self.bias.view(1, -1, 1, 1)


class _FlipAveraged(nn.Module):
    """A segmenter whose class probabilities are averaged with those of the mirrored input (log returned,
    so the router's softmax gives back the average)."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.segmenter(x).float(), 1) + torch.softmax(self.segmenter(x.flip(-1)).float(), 1).flip(-1)
        return torch.log(p / 2)


class _MultiScale(nn.Module):
    """A segmenter whose class probabilities are averaged over the input and copies resized by ``factors``
    (multiples of 32 px), returned as log-probabilities like :class:`_FlipAveraged`."""

    def __init__(self, segmenter: nn.Module, factors: tuple[float, ...]) -> None:
        super().__init__()
        self.segmenter, self.factors = segmenter, factors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = torch.softmax(self.segmenter(x).float(), 1)
        for f in self.factors:
            size = (max(32, round(h * f / 32) * 32), max(32, round(w * f / 32) * 32))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            p = p + F.interpolate(torch.softmax(self.segmenter(xs).float(), 1), size=(h, w), mode="bilinear",
                                  align_corners=False)
        return torch.log(p / (1 + len(self.factors)))


def _wrapped(router: Router, segmenter: nn.Module) -> Router:
    """A new Router around ``segmenter`` with the caller's settings (the caller's router stays as it was)."""
    return Router(router.name, segmenter, router.label_to_route, router.route_classes,
                  router.input_size, router.size_multiple, router.temperature, router.feather)


def miou(router: Router, pairs, bias: torch.Tensor | None = None, recall: bool = False) -> dict:
    """mIoU and per-class IoU through the router's own path, optionally with shifted logits; with ``recall``
    also the share of pasted birds routed more than half to ``bird`` (what the pasted-bird test asks)."""
    if bias is not None:
        router = _wrapped(router, _Biased(router.segmenter, bias))
    r = segmentation_scores(router, pairs)
    ious = {f"iou_{k}": None if v is None else round(v, 4) for k, v in r["iou"].items()}
    out = {"miou": round(r["miou"], 4), **ious}
    if recall:
        out["bird_pasted_share_over_half"] = round(pasted_recall(router, pairs)["bird"]["share_over_half"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--router", default="embedded")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--sizes", type=int, nargs="+", default=[192, 256, 320, 384, 416])
    ap.add_argument("--out", default="bench/results/router_probe")
    args = ap.parse_args()
    comps = val_composites(args.data, n=args.n, size=256, seed=1)
    val = load_masked(args.data, "val", limit=60, clean=False)
    masks = list(zip(val.images, val.masks, strict=True))
    rows = []
    for size in args.sizes:
        router = load_router(args.router, input_size=size).eval()
        rows.append({"probe": "input_size", "value": size, "composites_seed1": miou(router, comps, recall=True),
                     "val_masks_60": miou(router, masks)})
        print(rows[-1], flush=True)
    router = load_router(args.router).eval()
    flipped = _wrapped(router, _FlipAveraged(router.segmenter))
    rows.append({"probe": "flip averaging", "value": router.input_size,
                 "composites_seed1": miou(flipped, comps, recall=True), "val_masks_60": miou(flipped, masks)})
    print(rows[-1], flush=True)
    for factors in ((1.25,), (1.5,)):
        multi = _wrapped(router, _MultiScale(router.segmenter, factors))
        rows.append({"probe": "multi-scale averaging", "value": [1.0, *factors],
                     "composites_seed1": miou(multi, comps, recall=True), "val_masks_60": miou(multi, masks)})
        print(rows[-1], flush=True)
    for b_bird, b_animal in itertools.product([0.0, 0.5, 1.0, 1.5], [0.0, 0.5, 1.0]):
        bias = torch.tensor([0.0, 0.0, b_bird, b_animal])  # ensemble labels: background, person, bird, animal
        rows.append({"probe": "logit_bias bird,animal", "value": [b_bird, b_animal],
                     "composites_seed1": miou(router, comps, bias)})
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"router": router.name, "rows": rows}, indent=1) + "\n")
    md = [f"# Router probes ({router.name})", "", f"Generated by `python bench/router_probe.py --n {args.n}`: "
          f"{args.n} seed-1 val composites; 60 val masks per category for the input-size rows.", "",
          "| probe | value | composites mIoU | bird | animal | pasted birds > 0.5 | val masks mIoU |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["composites_seed1"]
        m = r.get("val_masks_60", {}).get("miou", "")
        share = c.get("bird_pasted_share_over_half", "")
        md.append(f"| {r['probe']} | {r['value']} | {c['miou']:.4f} | {c['iou_bird']:.3f} | {c['iou_animal']:.3f} "
                  f"| {share} | {m} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
