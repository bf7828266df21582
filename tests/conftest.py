"""Shared fixtures: tiny random experts in tmp folders, sample images, the shared data location."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ensemble_color.nets import create_model, tiny_config
from ensemble_color.plugins import export_expert

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def make_expert(root: Path, name: str, routes: list[str], arch: str = "resnet18-deconv", seed: int = 0,
                **manifest_extra) -> Path:
    """Export a tiny random expert plugin folder ``root/name`` and return it."""
    import torch

    torch.manual_seed(seed)
    config = tiny_config(arch)
    model = create_model(arch, **config)
    manifest = {"name": name, "architecture": arch, "config": config, "routes": routes, "version": "test",
                **manifest_extra}
    return export_expert(model, root / name, json.loads(json.dumps(manifest)))


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory: pytest.TempPathFactory):
    """Converted routers are cached in a folder of this test session, never in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("ENSEMBLE_COLOR_CACHE", str(tmp_path_factory.mktemp("onnx_cache")))
        yield


@pytest.fixture
def tiny_experts(tmp_path: Path) -> Path:
    """A plugin folder with four tiny random experts covering the shipped route classes."""
    root = tmp_path / "experts"
    for i, (name, routes) in enumerate([("scenes", ["background"]), ("faces", ["person"]), ("birds", ["bird"]),
                                        ("animals", ["animal"])]):
        make_expert(root, name, routes, seed=i)
    return root


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A small smooth colour photo-like PNG (gradients + a disc)."""
    h, w = 96, 128
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x / w * 255, y / h * 255, ((x - 64) ** 2 + (y - 48) ** 2 < 600) * 200 + 30], -1)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return path



@pytest.fixture
def contexts_used(monkeypatch: pytest.MonkeyPatch) -> list:
    """The ``options.context`` of every pipeline run from now on (``colorize`` goes through
    ``colorize_batch``), so front-end tests can check which context ramp a setting reaches."""
    from ensemble_color.pipeline import Pipeline

    seen: list = []
    colorize_batch = Pipeline.colorize_batch

    def spy(self, *args, **kwargs):
        seen.append(self.options.context)
        return colorize_batch(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "colorize_batch", spy)
    return seen

requires_data = pytest.mark.skipif(not (DATA / "colorize").is_dir(),
                                   reason="../shared/data is absent (training data lives beside the repo)")


def tiny_router_pack(root: Path) -> Path:
    """A miniature data pack: 3 images per category and split, box masks with an ignore band, cut-outs."""
    rng = np.random.default_rng(0)
    labels = {"faces": 1, "birds": 2, "animals": 3}
    for split in ("train", "val"):
        for cat in ("faces", "birds", "animals", "scenes"):
            (root / "colorize" / cat / split).mkdir(parents=True)
            for i in range(3):
                img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
                Image.fromarray(img).save(root / "colorize" / cat / split / f"{cat}{i}.jpg")
                if cat == "scenes":
                    continue
                mask = np.zeros((48, 64), np.uint8)
                mask[10:38, 16:48] = 255
                mask[12:36, 18:46] = labels[cat]
                (root / "route" / "masks" / cat / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "route" / "masks" / cat / split / f"{cat}{i}.png")
    for folder in ("person", "bird", "animal"):
        (root / "route" / "cutouts" / folder).mkdir(parents=True)
        rgba = (rng.random((20, 16, 4)) * 255).astype(np.uint8)
        rgba[..., 3] = 255
        Image.fromarray(rgba, "RGBA").save(root / "route" / "cutouts" / folder / "c.png")
    return root
