"""bench/router_calibration.py's person-bias rule: the bias that segments the calibration masks best wins."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble_color.data.masks import LABELS
from ensemble_color.routing import Router, RoutingTable

BENCH = Path(__file__).parent.parent / "bench"


@pytest.fixture
def calibration():
    spec = importlib.util.spec_from_file_location("router_calibration", BENCH / "router_calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shy_router(logit_bias):
    """A segmenter that sees the person (bright L) but scores it 0.6 below the background, and the
    background (dark L) 1.8 below: person biases 1 and 1.5 segment perfectly (0.75 misses the resized edges),
    2 makes everything a person."""
    matrix, classes = RoutingTable.load().matrix("ensemble")

    def segmenter(x):
        person = torch.where(x > 50, -0.6, -1.8)  # x is L, 0..100
        others = torch.full_like(x, -10.0)
        logits = {"background": torch.zeros_like(x), "person": person, "bird": others, "animal": others}
        return torch.cat([logits[c] for c in classes], dim=1)

    return Router("shy", segmenter, matrix, classes, input_size=64, logit_bias=logit_bias)


def _pairs(n=3):
    out = []
    for i in range(n):
        rgb = np.full((48, 64, 3), 30, np.uint8)
        labels = np.full((48, 64), LABELS["background"], np.uint8)
        rgb[8 + i: 40, 16: 48 - i] = 220
        labels[8 + i: 40, 16: 48 - i] = LABELS["person"]
        out.append((rgb, labels))
    return out


def test_the_smallest_bias_that_segments_best_is_chosen_and_the_others_are_kept(calibration, monkeypatch):
    monkeypatch.setattr(calibration, "load_spec", lambda spec, options: _shy_router(options["logit_bias"]))
    pairs = _pairs()
    cal = calibration.calibrate_person("shy", {"bird": 0.0, "animal": 1.0}, {"clean": pairs, "mixed": pairs})
    by_bias = {t["person"]: t["miou"] for t in cal["tried"]}
    assert list(by_bias) == list(calibration.PERSON_BIASES)
    assert by_bias[1.0] == by_bias[1.5] == 1.0 and max(by_bias[0.0], by_bias[2.0]) < 0.5
    assert cal["chosen"] == {"bird": 0.0, "animal": 1.0, "person": 1.0}  # the tie to the smaller bias


def test_a_tie_goes_to_the_smaller_bias(calibration):
    tried = [{"person": 1.0, "miou": 0.80001}, {"person": 0.5, "miou": 0.80003}, {"person": 0.25, "miou": 0.7}]
    assert calibration.best_person_bias(tried) == 0.5
    tried[0]["miou"] = 0.81
    assert calibration.best_person_bias(tried) == 1.0
