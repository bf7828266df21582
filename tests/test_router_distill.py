"""The router's distillation on clean crops: which crops the sampler calls clean, the KL term, and a training run
that uses it (``train router --distill-from``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from test_router import _tiny_data

from ensemble_color.data.masks import MaskedImages
from ensemble_color.train import router as train_router
from ensemble_color.train.losses import distillation_kl
from ensemble_color.train.router_data import RouterSampler


def _sampler(frac: float, keep: tuple[int, ...] = (), darken: float = 0.0) -> RouterSampler:
    img = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    animal, person = np.full((64, 64), 3, np.uint8), np.full((64, 64), 1, np.uint8)
    masked = MaskedImages([img] * 4, [animal, animal, person, person], ["animals"] * 2 + ["faces"] * 2, [0] * 4)
    return RouterSampler(masked, [], [], 64, seed=4, composite_frac=0.0, scale=(1.0, 1.0), jitter=False,
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
    data = _tiny_data(tmp_path / "data")
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
