"""Record what the shipped weights do to two fixed photos: ``python tests/make_golden.py`` -> tests/data/golden.json.

Run it after changing a shipped weight, the routing table or a default option, look at what moved, and commit
the new file with that change: ``tests/test_golden.py`` fails until then, so a change of weights or routing is
never silent. What is recorded (at the default options, CPU, torch backend everywhere so onnxruntime's
rounding is not in it): the sha256 of every shipped weight file, the share of pixels each route class wins,
and the mean ab of an 8x8 grid of the result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ensemble_color.color import rgb_to_lab
from ensemble_color.io import load_image
from ensemble_color.pipeline import Pipeline
from ensemble_color.weights import weights_root

HERE = Path(__file__).resolve().parent
PHOTOS = [HERE / "data" / "chelsea.jpg", HERE.parent / "examples" / "historical_woman_10.jpg"]
GOLDEN = HERE / "data" / "golden.json"


def weight_digests() -> dict[str, str]:
    root = weights_root()
    files = sorted([*root.rglob("*.safetensors"), *root.rglob("routing_table.json")])
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files}


def measure(pipe: Pipeline, photo: Path) -> dict:
    res = pipe.colorize(load_image(photo))
    wins = res.probs.argmax(0)
    shares = {c: round(float((wins == i).float().mean()), 4) for i, c in enumerate(res.route_classes)}
    ab = rgb_to_lab(res.rgb[None])[0, 1:]
    grid = torch.nn.functional.adaptive_avg_pool2d(ab[None], 8)[0]
    return {"route_shares": shares, "ab_grid": [[round(float(v), 2) for v in row.flatten()] for row in grid]}


def golden() -> dict:
    torch.set_num_threads(1)
    pipe = Pipeline.load(device="cpu", backend="torch", router_backend="torch", threads=1)
    return {"weights": weight_digests(), "photos": {p.name: measure(pipe, p) for p in PHOTOS}}


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(golden(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
