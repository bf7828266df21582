"""Route-label masks of the data packs: where they are, which to trust, and a mask for any photo.

Both packs keep ``route/masks/<category>/<split>/<stem>.png`` (uint8: 0 background, 1 person,
2 bird, 3 animal, 255 ignore) beside ``colorize/<category>/<split>/<stem>.jpg``. Scenes have no
mask files: they are all background, except the photos ``route/scenes_with_people.csv`` lists.
Shared by the router and generalist trainers so both read the labels the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from .composites import IGNORE


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
