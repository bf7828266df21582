"""The README's hints figure: a photo as given, coloured automatically, and coloured with a few hints (marked).

    python bench/hints_figure.py ../shared/examples/historical/face_woman_1.jpg \\
        --hint 60,420=#7a1f35:8 --hint 310,480=#7a1f35:8 --out docs/figures/hints_example.png

The third panel is exactly what ``python -m ensemble_color PHOTO --hint ...`` writes with the same hints (the same
``Pipeline.colorize(hints=...)``); each hint is marked by a white ring on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import ImageDraw

from ensemble_color.hints import Hint
from ensemble_color.io import load_image, to_pil
from ensemble_color.pipeline import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("photo", type=Path)
    ap.add_argument("--hint", action="append", required=True, help="X,Y=#RRGGBB[:R], as the CLI takes it")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    pipe = Pipeline.load(device="cpu")
    image = load_image(args.photo)
    hints = [Hint.parse(h) for h in args.hint]
    with torch.inference_mode():
        plain = pipe.colorize(image).rgb
        hinted = pipe.colorize(image, hints=hints).rgb
    panels = [to_pil(image.rgb).convert("RGB"), to_pil(plain), to_pil(hinted)]
    draw = ImageDraw.Draw(panels[2])
    for hint in hints:
        for x, y in hint.points:
            r = hint.radius + 3
            draw.ellipse((x - r, y - r, x + r, y + r), outline="white", width=2)
    w, h = panels[0].size
    sheet = panels[0].copy().resize((3 * w + 8, h))
    sheet.paste((255, 255, 255), (0, 0, *sheet.size))
    for i, p in enumerate(panels):
        sheet.paste(p, (i * (w + 4), 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: gray | automatic | {len(hints)} hints")


if __name__ == "__main__":
    main()
