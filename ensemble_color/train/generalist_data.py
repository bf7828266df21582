"""The generalist's training stream: photos of every category of both packs, plus composites, read on the fly.

Why on the fly: both packs hold ~80k photos; decoded at 256 px they would take ~18 GB, while the
extension pack's photos are small (128-360 px) and decode in about a millisecond.

Each sample is a random-resized crop with its route labels (:mod:`ensemble_color.data.masks`)
and its source category (scenes, people, birds, animals; faces count as people). A composite
(1-3 cut-outs pasted on a scenes photo) carries its own labels and, as category target, the pixel
share of each class. The ImageNet scene-context target is made in the training step, by the
teacher looking at the colour crop (:mod:`ensemble_color.train.generalist`).

A held-out set of *train* photos (evenly spaced, never sampled for training, never used as a
cut-out) chooses the checkpoint and the decoding, so val photos stay for the reported figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.composites import IGNORE, balanced_picker, cutouts_from_masks, make_composite
from ..data.images import random_resized_crop, read_rgb
from ..data.masks import mask_path, route_labels, scenes_with_people, unreliable_masks
from ..data.roots import Photo
from ..nets.multihead_lite import CATEGORIES

#: data-pack category -> index of the ``category`` head (faces and people are both the person route)
CATEGORY_INDEX = {"scenes": 0, "faces": 1, "people": 1, "birds": 2, "animals": 3}
SOURCES = (*CATEGORY_INDEX, "composites")


def category_target(category: str) -> np.ndarray:
    """One-hot target of the ``category`` head for a photo of a data-pack category."""
    return np.eye(len(CATEGORIES), dtype=np.float32)[CATEGORY_INDEX[category]]


def held_out_masks(held: list[Photo]) -> dict[Path, set[str]]:
    """The held-out photos' mask files (relative to their root, by root), so no cut-out is made from them."""
    out: dict[Path, set[str]] = {}
    for p in held:
        out.setdefault(p.root, set()).add(str(mask_path(p.root, p.category, p.split, p.path.stem).relative_to(p.root)))
    return out


class GeneralistSampler:
    """Seeded, resumable batches: ``rgb`` (B,3,S,S) in [0,1], ``seg`` (B,S,S) labels, ``category`` (B,4)."""

    def __init__(self, photos: dict[str, list[Photo]], mix: dict[str, float], crop: int, seed: int,
                 scale: tuple[float, float] = (0.3, 1.0), cutouts_per_category: int = 600,
                 exclude_masks: dict[Path, set[str]] | None = None, max_side: int = 320) -> None:
        self.photos, self.crop, self.scale, self.max_side = photos, crop, scale, max_side
        roots = list(dict.fromkeys(p.root for items in photos.values() for p in items))
        self.people = {r: scenes_with_people(r) for r in roots}
        self.unreliable = {r: unreliable_masks(r) for r in roots}
        self.cutouts = []
        if mix.get("composites", 0) > 0 and "scenes" in photos:
            for r in roots:
                self.cutouts += cutouts_from_masks(r, "train", limit_per_category=cutouts_per_category,
                                                   exclude=self.unreliable[r] | (exclude_masks or {}).get(r, set()))
        # scenes photos minus those listed with people (what composites.scene_paths keeps), from the listing at hand
        self.composite_scenes = [p for p in photos.get("scenes", [])
                                 if str(p.path.relative_to(p.root)) not in self.people[p.root]]
        self.pick = balanced_picker(self.cutouts) if self.cutouts else None
        sources = [s for s, w in mix.items() if w > 0 and (s in photos or (s == "composites" and self.cutouts
                                                                              and self.composite_scenes))]
        if not sources:
            raise ValueError("no training source left (check --mix and the data roots)")
        probs = np.array([mix[s] for s in sources], np.float64)
        self.sources, self.probs = sources, probs / probs.sum()
        self.rng = np.random.default_rng(seed)

    def _read(self, photo: Photo) -> np.ndarray | None:
        try:
            return read_rgb(photo.path, self.max_side)
        except OSError as exc:
            print(f"warning: {photo.path}: {exc}; drawing another photo", file=sys.stderr)
            return None

    def _composite(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray] | None:
        scene = self.composite_scenes[int(self.rng.integers(len(self.composite_scenes)))]
        img = self._read(scene)
        if img is None:
            return None
        rgb, labels = make_composite(img, self.cutouts, self.rng, self.crop, pick=self.pick)
        valid = labels[labels != IGNORE]
        share = np.bincount(valid, minlength=len(CATEGORIES))[:len(CATEGORIES)].astype(np.float32)
        target = share / share.sum() if share.sum() else np.eye(len(CATEGORIES), dtype=np.float32)[0]
        return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, torch.from_numpy(labels), target

    def _photo(self, source: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray] | None:
        items = self.photos[source]
        photo = items[int(self.rng.integers(len(items)))]
        img = self._read(photo)
        if img is None:
            return None
        labels = route_labels(photo.root, photo.path, photo.category, photo.split, img.shape[:2],
                              self.people[photo.root], self.unreliable[photo.root])
        rgb, mask = random_resized_crop(img, self.crop, self.rng, self.scale, labels)
        return rgb, mask, category_target(source)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        while True:
            source = self.sources[int(self.rng.choice(len(self.sources), p=self.probs))]
            item = self._composite() if source == "composites" else self._photo(source)
            if item is not None:
                return item

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        items = [self.sample() for _ in range(n)]
        return {"rgb": torch.stack([x[0] for x in items]), "seg": torch.stack([x[1] for x in items]).long(),
                "category": torch.from_numpy(np.stack([x[2] for x in items]))}

    def summary(self) -> dict:
        """What the stream draws from (for the manifest): photos per category and root, cut-outs, mix."""
        counts: dict[str, dict[str, int]] = {}
        for cat, items in self.photos.items():
            for p in items:
                counts.setdefault(str(p.root), {}).setdefault(cat, 0)
                counts[str(p.root)][cat] += 1
        return {"photos": counts, "cutouts": len(self.cutouts), "composite_scenes": len(self.composite_scenes),
                "sources": dict(zip(self.sources, [round(float(x), 4) for x in self.probs], strict=True))}

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)
