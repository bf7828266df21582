"""Copy-paste composites: cut-outs of people, birds and animals pasted on scene photos.

Why: the category photos each show one centred subject, but real photos mix subjects. Composites
give the router multi-object training images with known labels, and give evaluation images where
several experts must cooperate *with known ground-truth colours* (the composite itself).

Label convention = ``../shared/data/route`` (0 background, 1 person, 2 bird, 3 animal, 255 ignore).
Train composites use ``route/cutouts/`` (made from train images only); val composites use
foregrounds cut from the val images with their val masks, so no train content leaks into them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .images import list_images

#: route class index per data category / cut-out folder (the data pack's label convention)
LABELS = {"background": 0, "person": 1, "bird": 2, "animal": 3}
CATEGORY_LABEL = {"faces": 1, "people": 1, "birds": 2, "animals": 3}
CUTOUT_LABEL = {"person": 1, "bird": 2, "animal": 3}
IGNORE = 255


@dataclass
class Cutout:
    """Straight-alpha RGBA foreground (uint8, H x W x 4), its route label and the index of the data root it
    came from (0 = the first ``--data`` root, the main pack)."""

    rgba: np.ndarray
    label: int
    origin: int = 0


def load_cutouts(root: str | Path) -> list[Cutout]:
    """Every RGBA PNG in ``root/{person,bird,animal}/`` (nested folders allowed)."""
    out = []
    for folder, label in CUTOUT_LABEL.items():
        for p in list_images(Path(root) / folder):
            with Image.open(p) as im:
                out.append(Cutout(np.array(im.convert("RGBA")), label))
    if not out:
        raise FileNotFoundError(f"no cut-outs under {root}")
    return out


def cutouts_from_masks(data_root: str | Path, split: str, categories=("faces", "people", "birds", "animals"),
                       limit_per_category: int | None = None, min_fg: float = 0.05,
                       exclude: frozenset[str] | set[str] = frozenset(), origin: int = 0) -> list[Cutout]:
    """Foregrounds cut from ``colorize/<cat>/<split>`` images with their masks (alpha = label pixels).

    ``exclude``: mask paths relative to ``data_root`` to skip (e.g. the ones ``mask_stats.csv`` marks unreliable).
    ``origin``: the data root's index, recorded on each cut-out (see :func:`balanced_picker`).
    """
    data_root = Path(data_root)
    out = []
    for cat in categories:
        label = CATEGORY_LABEL[cat]
        masks = sorted((data_root / "route" / "masks" / cat / split).glob("*.png"))
        masks = [m for m in masks if str(m.relative_to(data_root)) not in exclude]
        taken = 0
        for mpath in masks:
            if limit_per_category is not None and taken >= limit_per_category:
                break
            cut = cutout_from_mask(data_root / "colorize" / cat / split / (mpath.stem + ".jpg"), mpath, label,
                                   min_fg)
            if cut is not None:
                cut.origin = origin
                out.append(cut)
                taken += 1
    return out


def cutout_from_mask(img_path: Path, mask_path: Path, label: int, min_fg: float = 0.05) -> Cutout | None:
    """The ``label`` pixels of one photo, cut to their bounding box; None when the subject covers under
    ``min_fg`` or over 90 % of the photo (too small to paste, or no background left to replace) or the
    photo is missing."""
    mask = np.array(Image.open(mask_path))
    fg = mask == label
    if fg.mean() < min_fg or fg.mean() > 0.9 or not img_path.exists():
        return None
    ys, xs = np.nonzero(fg)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb = np.array(Image.open(img_path).convert("RGB"))
    rgba = np.dstack([rgb, fg.astype(np.uint8) * 255])[y0:y1, x0:x1]
    return Cutout(np.ascontiguousarray(rgba), label)


def paste(scene: np.ndarray, labels: np.ndarray, cut: Cutout, rng: np.random.Generator,
          size_range: tuple[float, float] = (0.25, 0.7)) -> None:
    """Paste ``cut`` in place at a random scale/position; label opaque pixels, ignore the soft edge."""
    h, w = scene.shape[:2]
    ch, cw = cut.rgba.shape[:2]
    target = rng.uniform(*size_range) * min(h, w)
    s = target / max(ch, cw)
    nh, nw = max(4, min(h, round(ch * s))), max(4, min(w, round(cw * s)))
    rgba = np.array(Image.fromarray(cut.rgba).resize((nw, nh), Image.BILINEAR))
    if rng.random() < 0.5:
        rgba = rgba[:, ::-1]
    y0 = int(rng.integers(0, h - nh + 1))
    x0 = int(rng.integers(0, w - nw + 1))
    a = rgba[..., 3:4].astype(np.float32) / 255
    region = scene[y0:y0 + nh, x0:x0 + nw].astype(np.float32)
    scene[y0:y0 + nh, x0:x0 + nw] = (a * rgba[..., :3] + (1 - a) * region + 0.5).astype(np.uint8)
    lab = labels[y0:y0 + nh, x0:x0 + nw]
    a2 = a[..., 0]
    lab[a2 >= 0.5] = cut.label
    lab[(a2 > 0.1) & (a2 < 0.5)] = IGNORE


def balanced_picker(cutouts: list[Cutout], main_share: dict[int, float] | None = None
                    ) -> Callable[[np.random.Generator], Cutout]:
    """Draw a label uniformly, then one of its cut-outs: rare classes (animals) are pasted as often as common ones.

    ``main_share`` (label -> fraction): that label's cut-outs come from origin 0 (the main pack) this often,
    whatever the two roots' sizes: the main pack's 356 animals would otherwise be 1 in 10 of the animal
    cut-outs beside the extension pack's 3,000 spaniels, cats and dogs, and its rarer species barely seen.
    """
    by_label: dict[int, list[Cutout]] = {}
    for c in cutouts:
        by_label.setdefault(c.label, []).append(c)
    labels = sorted(by_label)
    split = {k: origin_split([c.origin for c in by_label[k]]) for k in labels}
    share = main_share or {}

    def pick(rng: np.random.Generator) -> Cutout:
        label = labels[int(rng.integers(len(labels)))]
        group = by_label[label]
        return group[draw_index(rng, len(group), split[label], share.get(label))]

    return pick


def origin_split(origins: list[int]) -> tuple[list[int], list[int]]:
    """(indices of the items of origin 0, the main pack; indices of the others), computed once per list."""
    return [i for i, o in enumerate(origins) if o == 0], [i for i, o in enumerate(origins) if o != 0]


def draw_index(rng: np.random.Generator, n: int, split: tuple[list[int], list[int]],
               main_share: float | None = None) -> int:
    """A uniform index below ``n``; with ``main_share``, one of ``split``'s origin-0 indices that often (when
    both origin 0 and other origins are present), else one of the others.

    Shared by the cut-out picker and the router's real-sample draw, so both weigh the main pack the same way;
    without a share it makes the same single ``rng`` call as a plain uniform draw (older recipes reproduce).
    """
    main, rest = split
    if main_share is not None and main and rest:
        pool = main if rng.random() < main_share else rest
        return pool[int(rng.integers(len(pool)))]
    return int(rng.integers(n))


def make_composite(scene: np.ndarray, cutouts: list[Cutout], rng: np.random.Generator, size: int,
                   n_range: tuple[int, int] = (1, 3), size_range: tuple[float, float] = (0.25, 0.7),
                   pick: Callable[[np.random.Generator], Cutout] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop of ``scene`` with 1..3 random cut-outs pasted: (RGB uint8, labels uint8).

    ``pick`` chooses each cut-out (default: uniformly over ``cutouts``; the seeded val composites rely on
    that default never changing).
    """
    h, w = scene.shape[:2]
    s = size / min(h, w)
    im = Image.fromarray(scene).resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    arr = np.array(im)
    y0 = int(rng.integers(0, arr.shape[0] - size + 1))
    x0 = int(rng.integers(0, arr.shape[1] - size + 1))
    out = np.ascontiguousarray(arr[y0:y0 + size, x0:x0 + size])
    labels = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(n_range[0], n_range[1] + 1))):
        cut = pick(rng) if pick is not None else cutouts[int(rng.integers(len(cutouts)))]
        paste(out, labels, cut, rng, size_range)
    return out, labels


def scene_paths(data_root: str | Path, split: str) -> list[Path]:
    """Scenes images of ``split`` minus those listed with visible people (their labels would lie)."""
    data_root = Path(data_root)
    skip = set()
    csv = data_root / "route" / "scenes_with_people.csv"
    if csv.exists():
        skip = {line.split(",")[0] for line in csv.read_text().splitlines()[1:] if line}
    return [p for p in list_images(data_root / "colorize" / "scenes" / split)
            if str(p.relative_to(data_root)) not in skip]


def val_composites(data_root: str | Path, n: int = 100, size: int = 256, seed: int = 0, split: str = "val"
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed, seeded evaluation composites: val foregrounds pasted on val scenes.

    Same ``(data, n, size, seed)`` -> the same images, on any machine: every method in
    ``bench/compare.py`` and ``evaluate`` is measured on exactly these. ``split="train"`` builds the same
    recipe from train data (does the router miss what it was trained on too? ``weights/router/README.md``, v4).
    """
    rng = np.random.default_rng(seed)
    scenes = scene_paths(data_root, split)
    cuts = cutouts_from_masks(data_root, split, limit_per_category=80)
    out = []
    for i in range(n):
        scene = np.array(Image.open(scenes[i % len(scenes)]).convert("RGB"))
        out.append(make_composite(scene, cuts, rng, size))
    return out


def single_subject_composites(data_root: str | Path, category: str, n: int = 60, size: int = 256, seed: int = 0,
                             exclude: frozenset[str] | set[str] = frozenset()
                             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded "one subject pasted on a landscape" images: n val cut-outs of ``category`` (evenly spaced over
    the sorted val masks), the i-th on val scene i.

    Why besides :func:`val_composites`: those paste 1-3 random cut-outs that may hide each other (a face over
    half a bird), which is a harder question than "is a bird on a landscape routed to the birds expert".
    ``exclude`` removes unreliable val masks (shredded or fallback machine masks would make the "bird" region
    mostly water or twigs). Same arguments -> the same images on any machine.
    """
    rng = np.random.default_rng(seed)
    scenes = scene_paths(data_root, "val")
    cuts = cutouts_from_masks(data_root, "val", categories=(category,), exclude=exclude)
    if len(cuts) > n:  # evenly spaced: val files are sorted by species, the first n would be a few species
        cuts = [cuts[i] for i in np.linspace(0, len(cuts) - 1, n).round().astype(int)]
    out = []
    for i, cut in enumerate(cuts):
        scene = np.array(Image.open(scenes[i % len(scenes)]).convert("RGB"))
        out.append(make_composite(scene, [cut], rng, size, n_range=(1, 1)))
    return out
