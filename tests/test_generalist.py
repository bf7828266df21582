"""The generalist expert: ab bins, soft-encoding, decoding, rebalancing, and a tiny end-to-end run.

Fast and data-free: the end-to-end test builds a miniature data pack in ``tmp_path``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_color import softencode
from ensemble_color.nets import create_model, tiny_config
from ensemble_color.train import generalist


@pytest.fixture(scope="module")
def bins() -> torch.Tensor:
    return softencode.ab_bins()


def test_313_bins_on_the_grid_and_within_gamut(bins):
    assert bins.shape == (softencode.N_BINS, 2) == (313, 2)
    assert torch.equal(bins, torch.round(bins / 10) * 10), "centres must lie on the 10-grid"
    assert len({tuple(b.tolist()) for b in bins}) == 313
    # every centre is within the margin of a real sRGB colour (finer sampling than the rule uses) ...
    assert softencode.distance_to_gamut(bins, levels=65).max() <= softencode.GAMUT_MARGIN
    # ... and every bin that an sRGB colour falls into (nearest centre) is in the set
    occupied = {tuple(x) for x in (torch.round(softencode.gamut_ab(65) / 10) * 10).tolist()}
    assert occupied <= {tuple(b) for b in bins.tolist()}
    assert len(occupied) < 313  # the margin really adds bins beyond the occupied ones (documented: 261)


def test_soft_encoding_of_a_centre_peaks_on_that_bin(bins):
    idx = torch.tensor([0, 17, 100, 156, 250, 312])
    ab = bins[idx].T.reshape(1, 2, 1, -1)  # (1, 2, 1, 6): one pixel per chosen centre
    q = softencode.soft_encode(ab, bins)[0, :, 0, :].T  # (6, 313)
    assert torch.equal(q.argmax(1), idx)
    torch.testing.assert_close(q.sum(1), torch.ones(len(idx)))
    assert ((q > 0).sum(1) == softencode.N_NEIGHBOURS).all()
    # a point between two bins splits its mass between them
    mid = ((bins[100] + bins[101]) / 2).reshape(1, 2, 1, 1)
    qm = softencode.soft_encode(mid, bins)[0, :, 0, 0]
    if (bins[100] - bins[101]).norm() == 10:
        torch.testing.assert_close(qm[100], qm[101])


def test_annealed_mean_limits(bins):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 313, 3, 4, generator=g) * 3
    mode = softencode.mode(logits, bins)
    torch.testing.assert_close(softencode.annealed_mean(logits, bins, T=1e-3), mode, atol=1e-3, rtol=0)
    p = torch.softmax(logits, 1)
    mean = torch.stack([(p * bins[:, k].view(1, -1, 1, 1)).sum(1) for k in range(2)], 1)  # E_p[a], E_p[b]
    torch.testing.assert_close(softencode.annealed_mean(logits, bins, T=1.0), mean, atol=1e-3, rtol=1e-4)
    # intermediate T lies between: more saturated than the mean
    mid = softencode.annealed_mean(logits, bins, T=0.38)
    assert mid.norm(dim=1).mean() > mean.norm(dim=1).mean()


def test_rebalancing_weights_expectation_one(bins):
    g = torch.Generator().manual_seed(1)
    prior = torch.rand(313, generator=g) ** 6
    prior[::3] = 0  # unseen bins exist in real data
    prior = prior / prior.sum()
    w = softencode.rebalancing_weights(prior, bins, lam=0.5)
    torch.testing.assert_close((prior * w).sum(), torch.tensor(1.0))
    assert (w > 0).all()
    assert w[prior.argmax()] < w[prior == 0].min(), "frequent colours must weigh less than unseen ones"
    # lam = 1 is uniform weighting: all ones
    torch.testing.assert_close(softencode.rebalancing_weights(prior, bins, lam=1.0), torch.ones(313))


def test_topk_label_smoothing():
    t = generalist.smooth_scene_label(np.array([0.6, 0.3, 0.1, 0.0]), k=2, eps=0.1)
    np.testing.assert_allclose(t.sum(), 1.0, rtol=1e-6)
    assert t[2] == pytest.approx(0.1 / 4)  # dropped from the top-2: only the smoothing mass
    assert t[0] == pytest.approx(0.9 * 0.6 / 0.9 + 0.025)


def test_soft_dice_ignores_255():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 255
    logits = torch.zeros(1, 4, 4, 4)
    logits[:, 0] = 20.0  # confident background everywhere
    loss_ok = generalist.soft_dice_loss(logits, target)
    logits_bad = logits.clone()
    logits_bad[0, :, 2:] = 0
    logits_bad[0, 1, 2:] = 20.0  # wrong on the labelled rows
    assert generalist.soft_dice_loss(logits_bad, target) > loss_ok
    logits_ign = logits.clone()
    logits_ign[0, :, :2] = 0
    logits_ign[0, 1, :2] = 20.0  # wrong only on ignored rows: no change
    torch.testing.assert_close(generalist.soft_dice_loss(logits_ign, target), loss_ok)


def test_model_heads_and_decodes():
    model = create_model("multihead-unet", **tiny_config("multihead-unet")).eval()
    L = torch.rand(2, 1, 32, 48) * 100
    with torch.inference_mode():
        heads = model.forward_heads(L)
        assert heads["reg"].shape == (2, 2, 32, 48) and heads["soft"].shape == (2, 313, 8, 12)
        assert heads["seg"].shape == (2, 4, 8, 12) and heads["scene"].shape == (2, 4)
        assert model.segment(L).shape == (2, 4, 8, 12)
        outs = {}
        for d in ("soft", "mode", "mean", "regression", "blend"):
            model.decode = d
            outs[d] = model(L)
            assert outs[d].shape == (2, 2, 32, 48) and torch.isfinite(outs[d]).all()
    torch.testing.assert_close(outs["blend"], 0.5 * outs["soft"] + 0.5 * outs["regression"])
    torch.testing.assert_close(outs["regression"], heads["reg"])
    assert not torch.allclose(outs["soft"], outs["mode"])
    with pytest.raises(ValueError):
        create_model("multihead-unet", decode="median")


def _tiny_pack(root):
    rng = np.random.default_rng(0)
    for cat in generalist.CATEGORIES:
        for split in ("train", "val"):
            d = root / "colorize" / cat / split
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{cat}{i}.jpg")
                if cat != "scenes":
                    m = root / "route" / "masks" / cat / split
                    m.mkdir(parents=True, exist_ok=True)
                    mask = np.zeros((40, 48), np.uint8)
                    mask[10:30, 12:36] = generalist.CATEGORIES.index(cat)
                    mask[9, :] = 255
                    Image.fromarray(mask).save(m / f"{cat}{i}.png")
    cut = root / "route" / "cutouts" / "bird"
    cut.mkdir(parents=True)
    rgba = rng.integers(0, 256, (16, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(cut / "b.png")


def test_one_step_training_exports_a_loadable_plugin(tmp_path):
    from ensemble_color.pipeline import Pipeline
    from ensemble_color.plugins import validate_folder
    from ensemble_color.routing import RoutingTable

    _tiny_pack(tmp_path / "data")
    p = argparse.ArgumentParser()
    generalist.add_arguments(p)
    argv = ["--data-root", str(tmp_path / "data"), "--steps", "1", "--batch-size", "2", "--crop", "32",
            "--widths", "8", "8", "16", "16", "--prior-batches", "1", "--val-per-category", "1",
            "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "experts"), "--val-every", "1"]
    folder = generalist.run(p.parse_args(argv), argv)
    manifest = json.loads((folder / "expert.json").read_text())
    assert manifest["architecture"] == "multihead-unet" and manifest["routes"] == [] and manifest["fallback"]
    assert manifest["config"]["widths"] == [8, 8, 16, 16] and manifest["training"]["steps"] == 1
    spec = validate_folder(folder, RoutingTable.load().known_classes())
    model = spec.build()
    torch.testing.assert_close(model.ab_bins, softencode.ab_bins())  # buffers travel in the weights
    torch.testing.assert_close((model.bin_prior * model.bin_weights).sum(), torch.tensor(1.0), atol=2e-3,
                               rtol=0)  # fp16 export
    assert not torch.allclose(model.bin_weights, torch.ones(313))
    # resume continues the same run
    generalist.run(p.parse_args([*argv, "--steps", "2", "--resume", "--no-export"]))
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]["step"] == 2

    pipe = Pipeline.load(experts_dirs=[tmp_path / "experts"], use_shipped=False, router="background",
                         device="cpu")
    assert "generalist" in pipe.experts
    result = pipe.colorize(torch.rand(3, 40, 52))
    assert result.rgb.shape == (3, 40, 52) and torch.isfinite(result.rgb).all()
    assert result.ab_work.abs().sum() > 0  # the generalist coloured it (gray would be all zeros)
    gen = Pipeline.load(experts_dirs=[tmp_path / "experts"], use_shipped=False, router="generalist",
                        device="cpu")
    probs = gen.router(torch.rand(1, 1, 40, 52) * 100)
    assert probs.shape == (1, 4, 40, 52)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 40, 52))


def test_auc_equals_the_threshold_table_definition():
    from ensemble_color import metrics

    g = torch.Generator().manual_seed(2)
    err = torch.cat([torch.rand(3, 9, 7, generator=g) * 200, torch.zeros(1, 9, 7)])
    err[0, 0, :3] = torch.tensor([0.0, 150.0, 7.0])  # exact thresholds are the edge cases
    table = (err.flatten(1)[:, None, :] <= metrics.AUC_THRESHOLDS[None, :, None]).float().mean(-1)
    reference = torch.trapezoid(table, dx=1.0, dim=1) / 150.0
    torch.testing.assert_close(metrics.cumulative_curve(err), table, atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics.auc(err), reference, atol=1e-6, rtol=0)
