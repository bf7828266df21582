"""The shipped router on pasted subjects: what users see of it, through the API and the CLI's saved masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, requires_data
from PIL import Image

from ensemble_color.data import masks
from ensemble_color.eval import router as router_eval
from ensemble_color.routing import (
    load_router,
    router_dir,
)

shipped = pytest.mark.skipif(not (router_dir() / "model.safetensors").exists(),
                             reason="the shipped router weights are absent (train with scripts/train_router.sh)")


@pytest.mark.data
@requires_data
@shipped
def test_shipped_router_routes_pasted_birds_to_bird() -> None:
    """Birds among other subjects: of the visible pasted birds (>= 1 % of the image) in the first 40 seed-0 val
    composites, at least 80 % routed mostly to ``bird``. Measured: the soup 19 of 21, soup19 and soup20 18 of 21
    (their birds lean to ``animal`` a little more: their calibrated bird bias is 0 where the soup's was 0.5)."""
    from ensemble_color.data.composites import LABELS, val_composites

    router = load_router("embedded").eval()
    assert router.name.startswith("smp:")
    checked = []
    for rgb, labels in val_composites(DATA, n=40, size=256, seed=0):
        region = labels == LABELS["bird"]
        if region.mean() >= 0.01:  # a visible pasted bird
            checked.append(router_eval.routed_fraction(router, rgb, region, "bird"))
    assert len(checked) >= 15
    assert sum(f > 0.5 for f in checked) >= 0.8 * len(checked), checked


@pytest.fixture(scope="module")
def seed0_single_birds() -> list[tuple[np.ndarray, np.ndarray]]:
    """60 seed-0 "one clean val bird pasted on a val scene" composites (see ``single_subject_composites``)."""
    from ensemble_color.data.composites import single_subject_composites

    return single_subject_composites(DATA, "birds", n=60, size=256, seed=0,
                                     exclude=masks.unreliable_masks(DATA))


@pytest.mark.data
@requires_data
@shipped
def test_shipped_router_routes_most_birds_pasted_on_a_landscape_to_bird(seed0_single_birds) -> None:
    """The router's acceptance floor, 54 of 60 (soup20 and soup19 measure 57, the soup 58, v11 59, v8 58, v6 55,
    v3 40): one clean val bird pasted on a val scene (seed 0), routed more than half to ``bird`` (the composite's own
    L)."""
    from ensemble_color.data.composites import LABELS

    router = load_router("embedded").eval()
    fractions = [router_eval.routed_fraction(router, rgb, labels == LABELS["bird"], "bird")
                 for rgb, labels in seed0_single_birds]
    assert len(fractions) == 60
    assert sum(f > 0.5 for f in fractions) >= 54, sorted(fractions)


@pytest.mark.data
@requires_data
@shipped
def test_shipped_router_routes_pasted_animals_to_animal() -> None:
    """The acceptance bar for the weak class: one clean val animal pasted on a val scene (seed 0; 45 clean val
    animals), routed more than half to ``animal`` in at least 34 composites (three quarters). The soup of v11 and
    v15 measured 34 here, soup19 36, the shipped soup20 35; v11 with its animal bias 0.75 measured 37 on this set,
    which its development looked at throughout, and 31 on the fresh seed-11 set where the soup routes 34
    (``bench/results/router_oldphotos_soup.md``); v11 without the bias 32, v8 29, v6 21."""
    from ensemble_color.data.composites import LABELS, single_subject_composites

    router = load_router("embedded").eval()
    pairs = single_subject_composites(DATA, "animals", n=60, size=256, seed=0, exclude=masks.unreliable_masks(DATA))
    fractions = [router_eval.routed_fraction(router, rgb, labels == LABELS["animal"], "animal")
                 for rgb, labels in pairs]
    assert len(fractions) == 45
    assert sum(f > 0.5 for f in fractions) >= 34, sorted(fractions)


def _probs_from_overlay(overlay: np.ndarray, L: np.ndarray, route_classes: tuple[str, ...]) -> np.ndarray:
    """Invert ``visualize.routing_overlay``: per-pixel route probabilities from the saved PNG."""
    from ensemble_color.visualize import OVERLAY_ALPHA, route_color

    tint = (overlay.astype(np.float64) / 255 - (1 - OVERLAY_ALPHA) * (L[..., None] / 100)) / OVERLAY_ALPHA
    A = np.vstack([np.array([route_color(c) for c in route_classes], np.float64).T / 255,
                   np.ones(len(route_classes))])  # 3 colour rows + "probabilities sum to 1"
    rhs = np.concatenate([tint, np.ones((*tint.shape[:2], 1))], -1)
    return np.linalg.solve(A, rhs.reshape(-1, A.shape[0]).T).T.reshape(*tint.shape[:2], -1)


@pytest.mark.data
@requires_data
@shipped
def test_cli_saved_mask_shows_pasted_birds_routed_to_bird(tmp_path: Path, seed0_single_birds) -> None:
    """The issue's check end to end, as a user would make it: a bird pasted on a landscape (one clean val bird on
    a val scene, seed 0), saved as a *gray* photo, default CLI with --save-masks; the saved overlay, read back,
    must show more than half of each of the first five birds routed to ``bird``."""
    from ensemble_color.cli import main
    from ensemble_color.color import rgb_to_lab
    from ensemble_color.data.composites import LABELS

    pairs = seed0_single_birds[:5]
    for i, (rgb, _) in enumerate(pairs):
        Image.fromarray(rgb).convert("L").save(tmp_path / f"bird{i}.png")
    assert main([str(tmp_path / f"bird{i}.png") for i in range(5)] + ["-o", str(tmp_path / "out"),
                                                                       "--save-masks"]) == 0
    classes = load_router("embedded").route_classes
    bird = []
    for i, (_, labels) in enumerate(pairs):
        gray = np.array(Image.open(tmp_path / f"bird{i}.png").convert("RGB"))
        L = rgb_to_lab(torch.from_numpy(gray).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
        overlay = np.array(Image.open(tmp_path / "out" / f"bird{i}_routing.png").convert("RGB"))
        assert overlay.shape[:2] == labels.shape
        probs = _probs_from_overlay(overlay, L, classes)
        region = labels == LABELS["bird"]
        assert probs[..., classes.index("background")][labels == LABELS["background"]].mean() > 0.8, i
        bird.append(round(float(probs[..., classes.index("bird")][region].mean()), 3))
    assert all(f > 0.5 for f in bird), bird  # `pytest --runxfail -k cli_saved` shows the five fractions
