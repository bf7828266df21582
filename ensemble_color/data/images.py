"""In-memory image caches and batch samplers for training on a CPU.

JPEG decoding is the slowest step on two cores, so every image is decoded once (short side capped)
and kept as uint8; batches are random-resized crops + flips cut from that cache and converted to
Lab in one batched call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..color import rgb_to_lab
from ..naming import IMAGE_SUFFIXES


def list_images(root: str | Path) -> list[Path]:
    """Every image file below ``root`` (any nesting), sorted for determinism."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_rgb(path: Path, max_short_side: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8, Lanczos-shrunk so its short side is at most ``max_short_side``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        short = min(im.size)
        if max_short_side is not None and short > max_short_side:
            scale = max_short_side / short
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
        return np.array(im, dtype=np.uint8)


@dataclass
class ImageCache:
    """Decoded RGB uint8 images plus optional per-image label masks (uint8, 255 = ignore)."""

    images: list[np.ndarray]
    paths: list[Path]
    masks: list[np.ndarray | None]
    groups: list[int] = field(default_factory=list)  # index of the folder each image came from

    @classmethod
    def from_folders(cls, folders: Sequence[str | Path], max_short_side: int = 256, limit: int | None = None,
                     desc: str = "decode") -> ImageCache:
        tagged = [(p, g) for g, f in enumerate(folders) for p in list_images(f)]
        if not tagged:
            raise FileNotFoundError(f"no images found in {', '.join(map(str, folders))}")
        return cls.from_paths(tagged[:limit], max_short_side, desc)

    @classmethod
    def from_paths(cls, tagged: Sequence[tuple[Path, int]], max_short_side: int = 256,
                   desc: str = "decode") -> ImageCache:
        """Decode ``(path, group id)`` pairs in order."""
        paths = [p for p, _ in tagged]
        images = [read_rgb(p, max_short_side) for p in tqdm(paths, desc=desc, leave=False, mininterval=2)]
        return cls(images, paths, [None] * len(paths), [g for _, g in tagged])

    @classmethod
    def concat(cls, caches: Sequence[ImageCache]) -> ImageCache:
        """One cache of several (e.g. the same category from several data roots); group ids are kept."""
        if not caches:
            raise ValueError("nothing to concatenate")
        return cls([im for c in caches for im in c.images], [p for c in caches for p in c.paths],
                   [m for c in caches for m in c.masks], [g for c in caches for g in c.groups])

    def __len__(self) -> int:
        return len(self.images)

    def summary(self) -> dict:
        """What the data was, for the manifest (counts per top folder, never the images)."""
        folders: dict[str, int] = {}
        for p in self.paths:
            folders[str(p.parent)] = folders.get(str(p.parent), 0) + 1
        return {"images": len(self.paths), "folders": folders}


def random_resized_crop(img: np.ndarray, size: int, rng: np.random.Generator, scale: tuple[float, float],
                        mask: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random crop of area fraction in ``scale`` (aspect 3/4..4/3), resized to size x size, maybe flipped.

    Returns a float (3, size, size) RGB tensor in [0, 1] and, if given, the mask cut the same way
    (nearest-neighbour: labels must not be blended).
    """
    h, w = img.shape[:2]
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = round(min(h, np.sqrt(area / aspect)))
    cw = round(min(w, np.sqrt(area * aspect)))
    ch, cw = max(ch, 1), max(cw, 1)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    crop = torch.from_numpy(np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])).permute(2, 0, 1)[None].float() / 255
    crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    flip = rng.random() < 0.5
    if flip:
        crop = crop.flip(-1)
    out_mask = None
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask[y0:y0 + ch, x0:x0 + cw]))[None, None].float()
        out_mask = F.interpolate(m, size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
        if flip:
            out_mask = out_mask.flip(-1)
    return crop.clamp(0, 1), out_mask


def center_crop_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Deterministic validation batch: resize short side to ``size`` then centre crop; (B, 3, size, size)."""
    out = []
    for img in images:
        t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        h, w = t.shape[-2:]
        s = size / min(h, w)
        t = F.interpolate(t, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                          align_corners=False, antialias=True)
        h, w = t.shape[-2:]
        y0, x0 = (h - size) // 2, (w - size) // 2
        out.append(t[0, :, y0:y0 + size, x0:x0 + size])
    return torch.stack(out).clamp(0, 1)


class CropSampler:
    """Draws training batches (Lab) from an :class:`ImageCache` with a seeded, resumable generator."""

    def __init__(self, cache: ImageCache, crop: int, seed: int, scale: tuple[float, float] = (0.35, 1.0),
                 groups: Sequence[int] | None = None, group_weights: Sequence[float] | None = None) -> None:
        """``groups`` (one id per image) with ``group_weights`` (one per id) sets each group's share of the
        batches, whatever its size: e.g. a small target set mixed with a large related one."""
        self.cache, self.crop, self.scale = cache, crop, scale
        self.rng = np.random.default_rng(seed)
        self.members: list[np.ndarray] | None = None
        if group_weights is not None:
            if groups is None or len(groups) != len(cache):
                raise ValueError("group_weights needs one group id per image")
            ids = np.asarray(groups)
            self.members = [np.flatnonzero(ids == g) for g in range(len(group_weights))]
            if any(len(m) == 0 for m in self.members):
                raise ValueError("every weighted group needs at least one image")
            w = np.asarray(group_weights, dtype=np.float64)
            self.group_p = w / w.sum()

    def _indices(self, n: int) -> np.ndarray:
        if self.members is None:
            return self.rng.integers(0, len(self.cache), size=n)
        g = self.rng.choice(len(self.members), size=n, p=self.group_p)
        return np.array([self.members[k][self.rng.integers(len(self.members[k]))] for k in g])

    def batch_rgb(self, batch_size: int) -> torch.Tensor:
        idx = self._indices(batch_size)
        return torch.stack([random_resized_crop(self.cache.images[i], self.crop, self.rng, self.scale)[0]
                            for i in idx])

    def batch_lab(self, batch_size: int) -> torch.Tensor:
        return rgb_to_lab(self.batch_rgb(batch_size))

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)
