"""Route-label masks of the data packs: where they are, which to trust, and a mask for any photo.

Both packs keep ``route/masks/<category>/<split>/<stem>.png`` (uint8: 0 background, 1 person,
2 bird, 3 animal, 255 ignore) beside ``colorize/<category>/<split>/<stem>.jpg``. Scenes have no
mask files: they are all background, except the photos ``route/scenes_with_people.csv`` lists.
Shared by the router and generalist trainers so both read the labels the same way.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .composites import IGNORE, LABELS, scene_paths
from .images import read_rgb


def read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("L"), dtype=np.uint8)


def unreliable_masks(data_root: str | Path) -> set[str]:
    """Mask paths (relative to the data root) the data README advises against training on.

    Dropped: ``empty`` (whole mask 255: nothing to learn), fallback teachers (half of them are
    wrong or partial), and images where a human face was found (a person was cut out of an animal
    mask, so the rest of the mask is less trustworthy). ``full`` faces masks are kept: they are
    mostly right (big hair, several people).
    """
    path = Path(data_root) / "route" / "mask_stats.csv"
    if not path.exists():
        return set()
    bad = set()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if (
                row["status"] == "empty"
                or "fallback" in row["teacher"]
                or row.get("human_face", "0") not in ("0", "")
            ):
                bad.add(row["mask"])
    return bad


def scenes_with_people(data_root: str | Path) -> set[str]:
    """Scenes photos (paths relative to the data root) with visible people: their 'all background' would lie."""
    path = Path(data_root) / "route" / "scenes_with_people.csv"
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {row["image"] for row in csv.DictReader(f)}


def mask_path(data_root: Path, category: str, split: str, stem: str) -> Path:
    return data_root / "route" / "masks" / category / split / f"{stem}.png"


def route_labels(data_root: Path, image: Path, category: str, split: str, shape: tuple[int, int],
                 people: set[str], unreliable: set[str]) -> np.ndarray:
    """The label mask of one photo at ``shape`` (H, W): its mask file (nearest-resized), all background
    for a scenes photo without people, all ignore when there is no trustworthy mask."""
    if category == "scenes":
        rel = str(image.relative_to(data_root)) if image.is_relative_to(data_root) else ""
        return np.full(shape, IGNORE if rel in people else 0, np.uint8)
    path = mask_path(data_root, category, split, image.stem)
    if not path.exists() or str(path.relative_to(data_root)) in unreliable:
        return np.full(shape, IGNORE, np.uint8)
    mask = read_mask(path)
    if mask.shape != shape:
        mask = np.array(Image.fromarray(mask).resize((shape[1], shape[0]), Image.NEAREST))
    return mask


#: label index -> name, the data pack's convention (also the ``ensemble`` backend's labels)
CLASS_NAMES: tuple[str, ...] = tuple(sorted(LABELS, key=LABELS.get))
N_CLASSES = len(CLASS_NAMES)
MASK_CATEGORIES = ("faces", "people", "birds", "animals")


@dataclass
class MaskedImages:
    """Images with their label masks (uint8, same size), plus the category of each and the index of the data
    root it came from (0 = the first ``--data`` root, the main pack)."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    categories: list[str]
    origins: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        """Images per category, for the config (never the images themselves)."""
        return {c: self.categories.count(c) for c in dict.fromkeys(self.categories)}

    def extend(self, other: MaskedImages) -> MaskedImages:
        self.images += other.images
        self.masks += other.masks
        self.categories += other.categories
        self.origins += other.origins
        return self


def load_masked(
    data_root: str | Path,
    split: str,
    categories: tuple[str, ...] = MASK_CATEGORIES,
    limit: int | None = None,
    clean: bool = True,
    origin: int = 0,
) -> MaskedImages:
    """``colorize/<cat>/<split>`` images + ``route/masks``; ``limit`` per category (evenly spaced); ``origin``
    is recorded on each image (see :class:`RouterSampler`'s ``main_share``).

    A category without masks in this root is skipped (the main pack has no ``people``, the extension
    pack no ``faces`` masks). With ``clean``, masks with under 1 % labelled pixels are dropped too: the
    extension pack marks "teacher found nothing" as all-ignore, which teaches nothing.
    """
    data_root = Path(data_root)
    bad = unreliable_masks(data_root) if clean else set()
    out = MaskedImages([], [], [])
    for cat in categories:
        masks = sorted((data_root / "route" / "masks" / cat / split).glob("*.png"))
        masks = [m for m in masks if str(m.relative_to(data_root)) not in bad]
        if limit is not None and len(masks) > limit:
            masks = [masks[i] for i in np.linspace(0, len(masks) - 1, limit).round().astype(int)]
        for m in masks:
            img = data_root / "colorize" / cat / split / (m.stem + ".jpg")
            if not img.exists():
                raise FileNotFoundError(f"{m}: its image {img} is missing")
            mask = read_mask(m)
            if clean and (mask != IGNORE).mean() < 0.01:
                continue
            rgb = read_rgb(img)
            if rgb.shape[:2] != mask.shape:
                raise ValueError(f"{m}: mask size {mask.shape} differs from its image {rgb.shape[:2]}")
            out.images.append(rgb)
            out.masks.append(mask)
            out.categories.append(cat)
            out.origins.append(origin)
    return out


def load_scenes(
    data_root: str | Path, split: str, limit: int | None = None, max_short_side: int = 320
) -> list[np.ndarray]:
    """Scenes photos without listed people (all background), short side capped (they are up to 384 px).

    ``limit`` takes that many evenly spaced over the sorted files (the extension pack's 29k scenes are
    sorted by source, so the first ones would all be one source).
    """
    paths = scene_paths(data_root, split)
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return [read_rgb(p, max_short_side) for p in paths]
