"""Contact sheets to judge colour by eye: the default pipeline now beside the weights shipped at an earlier commit.

    python bench/colour_sheets.py --before COMMIT [--ext $EXT] [--ddcolor DIR] [--per-category 6]

Writes ``docs/figures/sheets/<set>.jpg`` (JPEG at quality 88: about a fifth of the PNG's size, 1.2 vs 5.9 MB for
the 40 portraits, and no JPEG artefact a contact sheet's judgement depends on), one row per photo: gray input |
pipeline with the weights of ``COMMIT`` | pipeline now | the colour original (where there is one). Sets:

* ``val_<category>``: evenly spaced val photos of each category of the main pack (and the extension pack with
  ``--ext``);
* ``historical``: the 40 CC0 portraits of ``../shared/examples/historical`` (old prints: no colour original);
* ``ddcolor``: the test photos of DDColor's public repository (``--ddcolor``: its ``assets/test_images``, fetched
  from ``piddnad/DDColor``; the photos themselves are never committed, only these sheets of our results).

Both pipelines run with today's code and defaults, full resolution, on the gray photo only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from compare import load_before  # bench/ is this script's folder, hence on sys.path

from ensemble_color.color import l_to_gray, rgb_to_l
from ensemble_color.data.images import list_images
from ensemble_color.io import load_image, save_image, to_pil
from ensemble_color.pipeline import Pipeline
from ensemble_color.visualize import contact_sheet, fit_square

REPO = Path(__file__).resolve().parent.parent
CATEGORIES = ("scenes", "faces", "people", "birds", "animals")
CELL = 192


def evenly(paths: list[Path], n: int) -> list[Path]:
    return paths if len(paths) <= n else [paths[round(i * (len(paths) - 1) / (n - 1))] for i in range(n)]


def sheet(paths: list[Path], pipes: list[Pipeline], truth: bool) -> torch.Tensor:
    rows = []
    for p in paths:
        rgb = load_image(p).rgb
        gray = to_gray_rgb(rgb)  # what the pipeline is given: the gray photo
        with torch.inference_mode():
            outs = [pipe.colorize(gray).rgb for pipe in pipes]
        cells = [gray, *outs, *([rgb] if truth else [])]
        rows.append([fit_square(c, CELL) for c in cells])
    return contact_sheet(rows)


def to_gray_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """The photo as a user's black-and-white scan: the sRGB gray of its L, three equal channels."""
    return l_to_gray(rgb_to_l(rgb[None]))[0].expand(3, -1, -1).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, metavar="COMMIT", help="the weights to show beside today's")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--ext", type=Path, default=None, help="the extension pack (its val photos too)")
    ap.add_argument("--historical", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--ddcolor", type=Path, default=None, help="DDColor's assets/test_images (fetched)")
    ap.add_argument("--per-category", type=int, default=6)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "sheets")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    now = Pipeline.load(device="cpu")
    with tempfile.TemporaryDirectory(prefix="sheets_") as tmp:
        pipes = [load_before(args.before, Path(tmp)), now]
        sets: dict[str, tuple[list[Path], bool]] = {}
        for cat in CATEGORIES:
            paths = [p for root in (args.data, args.ext) if root is not None
                     for p in evenly(list_images(root / "colorize" / cat / "val"), args.per_category)
                     if (root / "colorize" / cat / "val").is_dir()]
            sets[f"val_{cat}"] = (paths, True)
        sets["historical"] = (list_images(args.historical), False)
        if args.ddcolor is not None:
            sets["ddcolor"] = (list_images(args.ddcolor), False)
        for name, (paths, truth) in sets.items():
            if paths:
                save_image(to_pil(sheet(paths, pipes, truth)), args.out / f"{name}.jpg", quality=88)
                print(f"{args.out / name}.jpg: {len(paths)} photos", flush=True)


if __name__ == "__main__":
    main()
