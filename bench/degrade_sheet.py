"""Contact sheet of the old-photo degradations beside real old prints: do the degraded photos look like them?

    python bench/degrade_sheet.py [--data ../shared/data] [--out docs/figures/degradations.png]

Rows: val photos of the main pack (faces, birds, animals, scenes); columns: the clean gray photo, then each
preset of ``ensemble_color.train.degrade`` (halftone, grain, fading, three draws of the mixed chain), all at the
router's training crop size (224 px). The last row shows crops of real historical portraits at the same size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ensemble_color.color import l_to_gray, rgb_to_l
from ensemble_color.data.images import list_images, random_resized_crop, read_rgb
from ensemble_color.io import load_image, save_image, to_pil
from ensemble_color.train.degrade import degrade_rgb
from ensemble_color.visualize import contact_sheet, fit_square

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ("halftone", "grain", "fading", "mixed", "mixed", "mixed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--historical", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "degradations.png")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for cat in ("faces", "birds", "animals", "scenes"):
        path = list_images(args.data / "colorize" / cat / "val")[7]
        rgb, _ = random_resized_crop(read_rgb(path, 256), args.size, rng, (0.8, 1.0))
        rgb8 = (rgb.permute(1, 2, 0) * 255).round().byte().numpy()
        clean = l_to_gray(rgb_to_l(rgb)).expand(3, -1, -1)
        rows.append([clean] + [torch.from_numpy(degrade_rgb(rgb8, rng, p)).permute(2, 0, 1).float() / 255
                               for p in COLUMNS])
    historical = list_images(args.historical)
    picks = [h for h in historical if h.stem in ("face_woman_107", "face_woman_115", "face_man_105", "face_man_1",
                                                   "face_woman_1", "face_man_10", "face_woman_10")]
    rows.append([fit_square(load_image(p).rgb, args.size) for p in picks][: len(COLUMNS) + 1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(to_pil(contact_sheet(rows)), args.out)
    names = ", ".join(p.stem for p in picks)
    print(f"{args.out}: columns clean | {' | '.join(COLUMNS)}; last row: real prints ({names})")


if __name__ == "__main__":
    main()
