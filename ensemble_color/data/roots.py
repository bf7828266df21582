"""Data roots: the main pack (``../shared/data``) and the extension pack, read the same way by every trainer.

A *data root* is a folder with ``colorize/<category>/<split>/`` images and optionally
``route/masks/<category>/<split>/<stem>.png`` (same stem, label convention 0 background, 1 person,
2 bird, 3 animal, 255 ignore) and ``manifest.csv`` (``path``, ``source`` columns). Trainers take
several (``--data ../shared/data --data $EXT``) and record per-root, per-category counts in what they
export, so a model card can say exactly what a weight saw.

``python -m ensemble_color data summary --data ...`` prints images and masks per
category/split/source and says what is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..naming import IMAGE_SUFFIXES
from .images import list_images

#: every category a pack may hold, and the route class its subject is served as
CATEGORY_ROUTE: dict[str, str] = {"scenes": "background", "faces": "person", "people": "person",
                                  "birds": "bird", "animals": "animal"}
SPLITS = ("train", "val")
#: categories whose photos show one subject the router should learn from masks
MASKED_CATEGORIES = ("faces", "people", "birds", "animals")


def is_data_root(path: str | Path) -> bool:
    """A pack root (has ``colorize/``), as opposed to a plain image folder."""
    return (Path(path) / "colorize").is_dir()


@dataclass(frozen=True)
class CategoryFolder:
    """``root/colorize/<category>/<split>`` of one data root."""

    root: Path
    category: str
    split: str

    @property
    def path(self) -> Path:
        return self.root / "colorize" / self.category / self.split

    @property
    def mask_dir(self) -> Path:
        return self.root / "route" / "masks" / self.category / self.split


def category_folders(roots: Iterable[str | Path], categories: Sequence[str], split: str) -> list[CategoryFolder]:
    """The existing ``colorize/<category>/<split>`` folders of ``roots``, root by root, in ``categories`` order."""
    out = []
    for root in roots:
        for cat in categories:
            folder = CategoryFolder(Path(root), cat, split)
            if folder.path.is_dir():
                out.append(folder)
    return out


@dataclass(frozen=True)
class Photo:
    """One photo of a data root, with where it came from."""

    path: Path
    root: Path
    category: str
    split: str


def list_photos(roots: list[Path], categories: tuple[str, ...], split: str) -> dict[str, list[Photo]]:
    """Every photo of ``categories`` in every root (sorted per root, roots in order)."""
    out: dict[str, list[Photo]] = {}
    for cat in categories:
        photos = [Photo(p, r, cat, split) for r in roots for p in list_images(r / "colorize" / cat / split)]
        if photos:
            out[cat] = photos
    return out


def hold_out(photos: dict[str, list[Photo]], per_category: int, per_root: bool = False
             ) -> tuple[dict[str, list[Photo]], list[Photo]]:
    """(training photos, held-out photos): ``per_category`` evenly spaced photos of each category leave
    the training stream (evenly spaced because sorted names cluster by source and class).

    The one definition of "held-out *train* photos": trainers choose checkpoints and decodings on them
    and the default tuning (``bench/tune_defaults.py``) measures on them, so val photos stay for reports.

    ``per_root``: ``per_category`` photos of each category *from each root*. Spread over the roots together
    (the default, what the shipped models were trained with), a small pack is barely held out: 1 of 40 held-out
    scenes came from the main pack's 638 next to the extension's 29,328, so defaults tuned on them never saw
    the main pack's scenes. A model trained one way has trained on the other way's photos, so the
    choice is recorded in its manifest (:func:`hold_out_record`) and checked by whoever measures on them.
    """
    train, held = {}, []
    for cat, items in photos.items():
        groups = [[p for p in items if p.root == r] for r in dict.fromkeys(p.root for p in items)] if per_root \
            else [items]
        out = []
        for group in groups:
            n = min(per_category, len(group) // 2)
            idx = set(np.linspace(0, len(group) - 1, n).round().astype(int).tolist()) if n else set()
            out += [group[i] for i in sorted(idx)]
        held += out
        chosen = set(out)
        train[cat] = [p for p in items if p not in chosen]
    return train, held


def hold_out_record(per_category: int | None, per_root: bool) -> dict[str, Any]:
    """The manifest keys (under ``data``) saying which train photos a model never trained on."""
    return {"holdout_per_category": per_category or None, "holdout_per_root": bool(per_category and per_root)}


def manifest_hold_out(manifest: dict[str, Any]) -> tuple[int, bool] | None:
    """(per_category, per_root) a trained model's manifest records, or None when it held nothing out.
    Manifests from before ``per_root`` existed were spread over the roots."""
    data = manifest.get("data") or {}
    n = data.get("holdout_per_category")
    return (int(n), bool(data.get("holdout_per_root", False))) if n else None


def required_hold_out(manifest: dict[str, Any], label: str, purpose: str = "") -> tuple[int, bool]:
    """:func:`manifest_hold_out` for commands that measure on those photos and cannot go on without them:
    exits with one line naming ``label`` (and ``purpose``, e.g. " to choose the decoding on")."""
    recorded = manifest_hold_out(manifest)
    if recorded is None:
        raise SystemExit(f"error: {label}: expert.json records no held-out train photos{purpose}")
    return recorded


def hold_out_mismatch(manifest: dict[str, Any], per_category: int, per_root: bool) -> str | None:
    """Why a model may have trained on the photos ``hold_out(…, per_category, per_root)`` holds out, or None
    when its manifest records exactly that hold-out (another count or spacing holds out other photos)."""
    recorded = manifest_hold_out(manifest)
    if recorded == (per_category, per_root):
        return None
    def describe(n: int, by_root: bool) -> str:
        return f"{n} per category{' per root' if by_root else ''}"
    held = "no train photos" if recorded is None else describe(*recorded)
    return f"trained holding out {held}, not {describe(per_category, per_root)}"


def expand_data(items: Sequence[str | Path], categories: Sequence[str] | None, split: str = "train") -> list[Path]:
    """``--data`` values -> image folders: a data root expands to its ``categories``' ``split`` folders,
    any other folder is taken as it is (the expert trainer's older form, kept for recipes)."""
    out: list[Path] = []
    for item in items:
        if is_data_root(item):
            if not categories:
                raise SystemExit(f"error: {item} is a data root: say which --categories to read from it")
            found = category_folders([item], categories, split)
            if not found:
                raise SystemExit(f"error: {item}: none of {', '.join(categories)} has a {split} split")
            out += [f.path for f in found]
        else:
            out.append(Path(item))
    return out


def counts_by_root(paths: Iterable[Path]) -> dict[str, dict[str, int]]:
    """{root: {category/split: images}} for image paths inside data roots ({folder: {"": n}} otherwise)."""
    out: dict[str, Counter] = {}
    for p in paths:
        parts = p.parts
        if "colorize" in parts and len(parts) - parts.index("colorize") >= 4:
            i = parts.index("colorize")
            root, key = str(Path(*parts[:i])), f"{parts[i + 1]}/{parts[i + 2]}"
        else:
            root, key = str(p.parent), ""
        out.setdefault(root, Counter())[key] += 1
    return {r: dict(sorted(c.items())) for r, c in out.items()}


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]


def _sources(root: Path) -> dict[str, Counter]:
    """{category/split: Counter(source)} from the root's ``manifest.csv`` (image rows only)."""
    manifest = root / "manifest.csv"
    out: dict[str, Counter] = {}
    if not manifest.exists():
        return out
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            parts = Path(row.get("path", "")).parts
            if len(parts) >= 4 and parts[0] == "colorize":
                source = row.get("source", "") or "unknown"
                source = "ImageNet sample" if "imagenet-sample" in source else source.split("@")[0]
                out.setdefault(f"{parts[1]}/{parts[2]}", Counter())[source] += 1
    return out


def summarize(root: str | Path) -> dict[str, Any]:
    """Images, masks and sources per category/split of one data root, plus what is missing."""
    root = Path(root)
    if not root.is_dir():
        return {"root": str(root), "missing": [f"{root}: no such folder"], "categories": {}}
    sources = _sources(root)
    cats: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    if not is_data_root(root):
        missing.append(f"{root}: no colorize/ folder (not a data pack)")
    if not (root / "manifest.csv").exists():
        missing.append(f"{root}: no manifest.csv (sources unknown)")
    for cat in CATEGORY_ROUTE:
        for split in SPLITS:
            folder = CategoryFolder(root, cat, split)
            images = _images(folder.path)
            masks = sorted(folder.mask_dir.glob("*.png")) if folder.mask_dir.is_dir() else []
            if not images and not masks:
                continue
            stems, mask_stems = {p.stem for p in images}, {m.stem for m in masks}
            orphans, unmasked = len(mask_stems - stems), len(stems - mask_stems)
            cats[f"{cat}/{split}"] = {"images": len(images), "masks": len(masks),
                                      "sources": dict(sources.get(f"{cat}/{split}", Counter()).most_common())}
            if orphans:
                missing.append(f"{cat}/{split}: {orphans} masks without their image")
            if cat in MASKED_CATEGORIES and images and not masks:
                missing.append(f"{cat}/{split}: no masks (the router cannot learn {CATEGORY_ROUTE[cat]} from it)")
            elif cat in MASKED_CATEGORIES and unmasked:
                missing.append(f"{cat}/{split}: {unmasked} of {len(images)} images without a mask")
        if f"{cat}/train" in cats and f"{cat}/val" not in cats:
            missing.append(f"{cat}: no val split")
    absent = [c for c in CATEGORY_ROUTE if not any(k.startswith(f"{c}/") for k in cats)]
    if absent and is_data_root(root):
        missing.append(f"categories absent: {', '.join(absent)}")
    return {"root": str(root), "categories": cats, "missing": missing}


def summary_markdown(summaries: Sequence[dict[str, Any]]) -> str:
    """Human-readable tables of :func:`summarize` results (what ``data summary`` prints)."""
    lines: list[str] = []
    for s in summaries:
        lines += [f"## {s['root']}", "", "| category/split | images | masks | sources |", "|---|---:|---:|---|"]
        for key, v in s["categories"].items():
            src = ", ".join(f"{k} {n}" for k, n in v["sources"].items()) or "-"
            lines.append(f"| {key} | {v['images']:,} | {v['masks']:,} | {src} |")
        lines += ["", "Missing: " + ("; ".join(s["missing"]) if s["missing"] else "nothing"), ""]
    return "\n".join(lines)


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True, help="data root; repeat for several")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")


def run_summary(args: argparse.Namespace) -> int:
    """Print the summary; exit 1 when a root does not exist or is not a data pack."""
    summaries = [summarize(r) for r in args.data]
    print(json.dumps(summaries, indent=1) if args.json else summary_markdown(summaries))
    return 1 if any(not is_data_root(s["root"]) for s in summaries) else 0


#: UTKFace's ethnicity codes 0-4, as its file names (``age_gender_race_date``) give them
UTKFACE_GROUPS = ("White", "Black", "Asian", "Indian", "Others")


def utkface_group(name: str) -> str | None:
    """The ethnicity group of an extension-pack UTKFace file (``utkface__<age>_<gender>_<race>_...``), or None."""
    m = re.match(r"utkface__\d+_\d+_(\d)_", name)
    return UTKFACE_GROUPS[int(m.group(1))] if m and int(m.group(1)) < len(UTKFACE_GROUPS) else None


def utkface_groups(photos: Sequence[Path], per_group: int) -> dict[str, list[Path]]:
    """Photos by UTKFace ethnicity group (one group ``all`` for other names), each evenly thinned to
    ``per_group``; only groups that have photos."""
    groups: dict[str, list[Path]] = {}
    for p in photos:
        groups.setdefault(utkface_group(p.name) or "all", []).append(p)
    return {g: [ps[i] for i in np.linspace(0, len(ps) - 1, per_group).round().astype(int)] if len(ps) > per_group
            else ps for g, ps in sorted(groups.items())}
