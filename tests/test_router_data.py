"""The router's training data: the balanced cut-out picker, the sampler's shares, degradations, dark skin and
keep-clean crops, which crops it calls altered, and the distillation on the others (``train router
--distill-from``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_router_pack

from ensemble_color.data.composites import Cutout, balanced_picker
from ensemble_color.data.masks import MaskedImages
from ensemble_color.train import router as train_router
from ensemble_color.train.losses import distillation_kl
from ensemble_color.train.router_data import RouterSampler


def _sampler(frac: float, keep: tuple[int, ...] = (), darken: float = 0.0, seed: int = 4) -> RouterSampler:
    """Two all-animal and two all-person gradient photos, whole-image crops, halftone as the only damage."""
    img = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    animal, person = np.full((64, 64), 3, np.uint8), np.full((64, 64), 1, np.uint8)
    masked = MaskedImages([img] * 4, [animal, animal, person, person], ["animals"] * 2 + ["faces"] * 2, [0] * 4)
    return RouterSampler(masked, [], [], 64, seed=seed, composite_frac=0.0, scale=(1.0, 1.0), jitter=False,
                         degrade_frac=frac, degrade_mix={"halftone": 1.0}, degrade_keep_clean=keep,
                         darken_people=darken)


def test_batch_flags_name_exactly_the_altered_crops() -> None:
    clean_L, labels, none = _sampler(0.0).batch_flags(12)
    assert not none.any()
    L, kept_labels, degraded = _sampler(1.0, keep=(3,)).batch_flags(12)
    assert torch.equal(labels, kept_labels)
    is_animal = (labels == 3).flatten(1).all(1)
    assert 0 < int(is_animal.sum()) < 12
    assert torch.equal(degraded, ~is_animal)  # every crop but the kept animals is degraded, and flagged
    changed = (L - clean_L).abs().flatten(1).amax(1) > 1.0
    assert torch.equal(changed, degraded)
    # batch() is batch_flags() without the flags: the same random draws
    plain_L, plain_labels = _sampler(1.0, keep=(3,)).batch(12)
    assert torch.equal(plain_L, L) and torch.equal(plain_labels, labels)
    # people darkened (and nothing degraded) are altered too: their photo is not what the frozen router saw
    dark_L, _, darkened = _sampler(0.0, darken=0.5).batch_flags(12)
    changed = (dark_L - clean_L).abs().flatten(1).amax(1) > 1.0
    assert torch.equal(darkened, changed) and darkened.any() and not darkened[is_animal].any()


def test_distillation_kl_is_zero_at_the_teacher_and_its_gradient_leads_there() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(2, 4, 5, 6) * 3
    assert float(distillation_kl(teacher, teacher)) < 1e-6
    assert float(distillation_kl(teacher + 7.0, teacher)) < 1e-6  # a per-pixel constant leaves the softmax as it is
    student = torch.randn(2, 4, 5, 6, requires_grad=True)
    start = distillation_kl(student, teacher)
    assert float(start.detach()) > 0.1
    start.backward()
    with torch.no_grad():  # the mean is over 60 pixels: a step of 60 x the gradient is a unit step per pixel
        stepped = student - 60.0 * student.grad
    assert float(distillation_kl(stepped, teacher)) < 0.9 * float(start.detach())


def _train(tmp_path: Path, data: Path, name: str, teacher: Path, extra: list[str]) -> tuple[Path, Path]:
    parser = argparse.ArgumentParser()
    train_router.add_arguments(parser)
    run_dir = tmp_path / f"run_{name}"
    argv = ["--data", str(data), "--out", str(tmp_path / name), "--run-dir", str(run_dir), "--init", str(teacher),
            "--steps", "20", "--batch-size", "4", "--crop", "64", "--val-limit", "2", "--val-every", "20",
            "--input-size", "64", "--threads", "1", "--lr", "3e-3", "--seed", "1", *extra]
    folder = train_router.run(parser.parse_args(argv), argv)
    assert folder is not None
    return folder, run_dir


def test_distilled_training_stays_nearer_its_teacher_on_clean_photos(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = tiny_router_pack(tmp_path / "data")
    teacher_net = train_router.build_model().eval()
    teacher = train_router.export_router(teacher_net, tmp_path / "teacher", {"input_size": 64}, fp16=False)
    free, _ = _train(tmp_path, data, "free", teacher, [])
    held, run_dir = _train(tmp_path, data, "held", teacher, ["--distill-from", str(teacher), "--distill", "20"])

    config = json.loads((held / "config.json").read_text())["ensemble_color"]["training"]
    assert config["distill_from"] == str(teacher) and config["distill"] == 20.0
    logged = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert any("kd" in row and row["kd"] >= 0.0 for row in logged)

    x = torch.rand(4, 1, 64, 64) * 2 - 1  # clean inputs as the router sees them
    with torch.inference_mode():
        target = teacher_net(x)

        def gap(folder: Path) -> float:
            net = train_router.build_model().eval()
            train_router._warm_start(net, folder)
            return float(distillation_kl(net(x), target))

        free_gap, held_gap = gap(free), gap(held)
    assert free_gap > 0.0
    assert held_gap < 0.5 * free_gap


def test_balanced_picker_pastes_each_class_equally_often() -> None:
    cuts = [Cutout(np.zeros((4, 4, 4), np.uint8), 1)] * 90 + [Cutout(np.zeros((4, 4, 4), np.uint8), 3)] * 10
    pick = balanced_picker(cuts)
    rng = np.random.default_rng(0)
    share = np.mean([pick(rng).label == 3 for _ in range(2000)])
    assert 0.45 < share < 0.55


def test_balanced_picker_main_share_draws_the_small_main_pack_set_as_often_as_asked() -> None:
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
    def batch(frac, keep=()):
        return _sampler(frac, keep, seed=9).batch(12)

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
