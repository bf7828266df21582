"""Person masks for photos that have none, from a router's confident decisions on the clean photos.

Why: the extension pack's UTKFace faces cover five ethnicity groups but carry no masks, and the people the router
trains on with masks are mostly light-skinned. On the clean faces the router already finds the person (recall
>= 0.995 in every group, ``bench/router_oldphotos.py``); among the old portraits it misses, two are dark-skinned
men. Its confident pixels on the clean photo become the mask, and training shows the same face as an old print
(the degradations touch the input only): the router learns to find on a print what it finds on the clean photo
(self-training, as in Noisy Student, Xie et al. 2020). What the router gets wrong on the clean photo is taught
too: headwear it takes for background (a turban) is labelled background.

    python -m ensemble_color train pseudo-masks --data $EXT --category faces --per-group 500 \\
        --router ensemble_color/weights/router --out $PSEUDO

A pixel is labelled when the router's most likely route class has probability >= ``--confidence`` and is
``person`` or ``background``; every other pixel is ignore (255). A photo is kept when at least ``--min-person``
of its pixels are labelled person. Writes the packs' layout, so that ``train router --data $PSEUDO`` reads it as
one more root: ``OUT/colorize/<category>/train/<name>`` (a link to the photo, never a copy or a change of it),
``OUT/route/masks/<category>/train/<stem>.png``, and ``OUT/pseudo_masks.json`` (command, router, counts).
"""

from __future__ import annotations

import argparse
import io
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.composites import IGNORE, LABELS
from ..data.images import list_images, read_rgb
from ..data.roots import utkface_groups
from ..eval.router import route_probs
from ..io import atomic_write_bytes, atomic_write_json
from ..routing import load_router


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="the pack whose photos get masks")
    p.add_argument("--category", default="faces", help="colorize/<category>/train of --data")
    p.add_argument("--router", default="embedded", help="the router whose decisions become masks")
    p.add_argument("--per-group", type=int, default=500,
                   help="photos per UTKFace ethnicity group (evenly spaced); other names form one group")
    p.add_argument("--confidence", type=float, default=0.9, help="probability a labelled pixel needs")
    p.add_argument("--min-person", type=float, default=0.2, help="share of person pixels a kept photo needs")
    p.add_argument("--out", type=Path, required=True, help="the new root (a new folder, not --data)")
    p.add_argument("--threads", type=int, default=2)


def confident_labels(probs: torch.Tensor, route_classes: tuple[str, ...], confidence: float) -> np.ndarray:
    """(H, W) uint8 data labels from (R, H, W) route probabilities: person or background where the most likely
    class reaches ``confidence``, ignore everywhere else (uncertain pixels, and birds or animals, which a
    person photo's mask should not teach)."""
    conf, idx = probs.max(0)
    labels = np.full(idx.shape, IGNORE, np.uint8)
    for name in ("person", "background"):
        labels[((idx == route_classes.index(name)) & (conf >= confidence)).numpy()] = LABELS[name]
    return labels


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    if args.out.resolve() == args.data.resolve():
        raise SystemExit(f"error: {args.out}: would write into the pack it reads")
    torch.set_num_threads(args.threads)
    photos = list_images(args.data / "colorize" / args.category / "train")
    if not photos:
        raise SystemExit(f"error: {args.data}: no photos in colorize/{args.category}/train")
    router = load_router(args.router).eval()
    img_dir = args.out / "colorize" / args.category / "train"
    mask_dir = args.out / "route" / "masks" / args.category / "train"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for group, paths in utkface_groups(photos, args.per_group).items():
        kept = 0
        for path in paths:
            labels = confident_labels(route_probs(router, read_rgb(path)), router.route_classes, args.confidence)
            if (labels == LABELS["person"]).mean() < args.min_person:
                continue
            link = img_dir / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
            png = mask_dir / (path.name.rsplit(".", 1)[0] + ".png")
            buf = io.BytesIO()
            Image.fromarray(labels).save(buf, format="PNG")
            atomic_write_bytes(png, buf.getvalue())
            kept += 1
        counts[group] = {"photos": len(paths), "kept": kept}
        print(f"pseudo-masks {group}: {kept} of {len(paths)} kept", flush=True)
    command = "python -m ensemble_color train pseudo-masks " + shlex.join(argv if argv is not None else sys.argv[3:])
    atomic_write_json(args.out / "pseudo_masks.json", {
        "command": command, "router": args.router, "category": args.category, "confidence": args.confidence,
        "min_person": args.min_person, "groups": counts, "how": "ensemble_color.train.pseudo_masks (docstring)"})
    atomic_write_bytes(args.out / "README.md", (
        f"Pseudo-masked {args.category} photos of {args.data} (links, not copies), written by `{command}`; "
        "see pseudo_masks.json.\n").encode())
    return args.out
