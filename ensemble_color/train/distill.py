"""Distil a grayscale ResNet-18 from the ImageNet EfficientNet-Lite teacher: ImageNet knowledge for the experts.

Why: the ``resnet18-deconv`` experts want an ImageNet-trained trunk (conv1 … layer2), and torchvision's
weights cannot be downloaded here. The Lite0 teacher *can* be had offline (``nets.imagenet``), so a
student with torchvision's ``resnet18`` layout and a one-channel ``conv1`` learns to predict, from the
photo's L alone, the teacher's softened class distribution on the *colour* photo (KL divergence,
Hinton et al. 2015). What it must learn to do that — recognise objects without colour — is what an
expert needs to know what it is looking at.

* Data: every training photo of the given data roots (both packs: ~80k), read from disk on the fly
  (decoding a 256 px JPEG costs ~2 ms, small next to a training step; no 8 GB cache), random-resized
  crops and flips. The student sees exactly the expert's input normalisation ((L - 50) / 50).
* Optional feature matching at stride 8 (``--feature-weight``): layer2 (what the experts keep) is
  projected by a 1x1 conv onto the teacher's stride-8 features; the MSE is divided by the teacher features'
  variance over the batch (scale-free: 1 is a projection that predicts nothing, 0 a perfect one), so its weight
  reads against the KL term's whatever the teacher. The teacher sees colour, so these features carry colour:
  predicting them from L is close to what an expert's decoder then has to do.
* Optional warm start of the trunk (``--init-trunk``) from an exported trunk folder (conv1 … layer2); the
  rest of the student starts random. Or of the whole student (``--warm-start``: a run folder's
  ``student.safetensors``), e.g. to go on at a larger crop size on a new schedule.
* Held-out check: teacher top-1 (on colour) vs student top-1/top-5 (on L) over val photos of every root, at
  the training crop and at any ``--eval-crops`` (the teacher was trained at 224 px, so it, and a student
  trained against it, know more at larger sizes).
* Export: the trunk the experts use (conv1, bn1, layer1, layer2) as safetensors + ``init.json``; the
  full student stays in the run folder (``student.safetensors``) for a later continuation.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..color import lab_to_rgb, rgb_to_lab
from ..data.images import center_crop_batch, list_images, random_resized_crop, read_rgb
from ..data.roots import CATEGORY_ROUTE, category_folders
from ..io import atomic_write_json
from ..plugins import read_state_dict, write_state_dict
from . import loop

#: what ``resnet18-deconv`` keeps of the student (its encoder), by torchvision module name
TRUNK_MODULES = ("conv1", "bn1", "layer1", "layer2")
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "inits" / "resnet18-gray"


def gray_resnet18(num_classes: int = 1000) -> nn.Module:
    """torchvision ``resnet18`` (random weights) with a one-channel ``conv1``; input (L - 50) / 50."""
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def trunk_state(student: nn.Module) -> dict[str, torch.Tensor]:
    """The student's conv1 … layer2 tensors under the expert encoder's names (``encoder.0`` … ``encoder.5``).

    ``ResNetDeconv.encoder`` is ``Sequential(conv1, bn1, relu, maxpool, layer1, layer2)``. The tensors share
    the student's storage (``state_dict``), so copying into them writes the student.
    """
    index = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5}
    out = {}
    for name, tensor in student.state_dict().items():
        head, _, rest = name.partition(".")
        if head in index:
            out[f"encoder.{index[head]}.{rest}"] = tensor
    return out


@torch.no_grad()
def load_trunk(student: nn.Module, folder: Path) -> int:
    """Copy an exported trunk (``folder/model.safetensors``, :func:`trunk_state` names) into the student.

    Every student trunk tensor must be present with its shape (a partial warm start would be silent about
    what it left random); returns the number of tensors copied."""
    tensors = read_state_dict(folder / "model.safetensors")
    own = trunk_state(student)
    for key, tensor in tensors.items():
        if key not in own or own[key].shape != tensor.shape:
            raise ValueError(f"{folder}: trunk tensor {key} does not fit the student ({tuple(tensor.shape)})")
    if missing := sorted(set(own) - set(tensors)):
        raise ValueError(f"{folder}: trunk lacks {len(missing)} tensors, e.g. {missing[0]}")
    for key, tensor in tensors.items():
        own[key].copy_(tensor)
    return len(tensors)


def feature_match_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE over the target's variance across the batch: 1 for predicting the mean, 0 for a perfect match."""
    return F.mse_loss(projected, target) / target.var().clamp_min(1e-6)


class TeacherFeatures(nn.Module):
    """The frozen colour teacher: logits and its stride-8 feature map for sRGB crops in [0, 1]."""

    def __init__(self, variant: str = "lite0") -> None:
        super().__init__()
        from ..nets.imagenet import imagenet_classifier

        self.net = imagenet_classifier(variant).requires_grad_(False)

    @torch.no_grad()  # not inference_mode: the targets enter the (student's) autograd graph
    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm, body = self.net[0], self.net[1]
        x = body.bn1(body.conv_stem(norm(rgb)))
        feat8 = None
        for i, block in enumerate(body.blocks):
            x = block(x)
            if i == 2:  # blocks 0-2 end at stride 8 (40 channels for Lite0)
                feat8 = x
        logits = body.classifier(body.global_pool(body.bn2(body.conv_head(x))))
        assert feat8 is not None
        return logits.float(), feat8.float()


@dataclass
class PhotoSampler:
    """Seeded, resumable random-resized crops of photos read from disk on the fly."""

    paths: list[Path]
    crop: int
    seed: int
    scale: tuple[float, float] = (0.25, 1.0)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def batch(self, n: int) -> torch.Tensor:
        """(n, 3, crop, crop) sRGB in [0, 1]; unreadable files are reported and replaced, never fatal."""
        out = []
        while len(out) < n:
            path = self.paths[int(self.rng.integers(len(self.paths)))]
            try:
                img = read_rgb(path, max_short_side=2 * self.crop)
            except OSError as exc:
                print(f"warning: {path}: {exc}; drawing another photo", file=sys.stderr)
                continue
            out.append(random_resized_crop(img, self.crop, self.rng, self.scale)[0])
        return torch.stack(out)

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KL(teacher_T || student_T) x T² (so gradients keep their scale as T changes)."""
    return F.kl_div(F.log_softmax(student_logits / T, 1), F.log_softmax(teacher_logits / T, 1),
                    reduction="batchmean", log_target=True) * T * T


@torch.inference_mode()
def _agreement_with_teacher(teacher: TeacherFeatures, rgb: torch.Tensor, answer: Callable[[torch.Tensor], torch.Tensor],
                            batch: int = 50) -> dict[str, float]:
    """Share of photos whose teacher top-1 on colour equals ``answer``'s top-1 / is within its top-5."""
    top1, top5 = [], []
    for chunk in rgb.split(batch):
        t = teacher(chunk)[0].argmax(1)
        s = answer(chunk)
        top1.append(s.argmax(1) == t)
        top5.append((s.topk(5, 1).indices == t[:, None]).any(1))
    return {"top1": torch.cat(top1).float().mean().item(), "top5": torch.cat(top5).float().mean().item()}


def agreement(student: nn.Module, teacher: TeacherFeatures, rgb: torch.Tensor, batch: int = 50) -> dict[str, float]:
    """Teacher top-1 on colour vs the student on L: share equal to the student's top-1 / within its top-5."""
    return _agreement_with_teacher(teacher, rgb, lambda chunk: student((rgb_to_lab(chunk)[:, :1] - 50.0) / 50.0),
                                   batch)


def teacher_on_gray(teacher: TeacherFeatures, rgb: torch.Tensor, batch: int = 50) -> dict[str, float]:
    """The teacher itself fed the gray photo (L with ab = 0, as sRGB) against its colour answer: what seeing
    only L costs a network that was trained on colour, the reference the student's agreement is read against."""
    def gray(chunk: torch.Tensor) -> torch.Tensor:
        lab = rgb_to_lab(chunk)
        lab[:, 1:] = 0
        return teacher(lab_to_rgb(lab).clamp(0, 1))[0]

    return _agreement_with_teacher(teacher, rgb, gray, batch)


def photo_paths(roots: list[Path], split: str) -> list[Path]:
    return [p for f in category_folders(roots, tuple(CATEGORY_ROUTE), split) for p in list_images(f.path)]


def heldout_photos(roots: list[Path], n: int, size: int) -> torch.Tensor:
    """n evenly spaced val photos of all roots, centre crops (the agreement check; never trained on)."""
    paths = photo_paths(roots, "val")
    if not paths:
        raise SystemExit("error: no val photos under the data roots (needed for the held-out agreement)")
    idx = np.linspace(0, len(paths) - 1, min(n, len(paths))).round().astype(int)
    return center_crop_batch([read_rgb(paths[i], 2 * size) for i in idx], size)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", default=None, help="data root; repeat (default ../shared/data)")
    p.add_argument("--teacher", default="lite0", choices=("lite0", "lite1", "lite2"))
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the exported trunk")
    p.add_argument("--run-dir", default="runs/distill")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--scale", type=float, nargs=2, default=(0.25, 1.0))
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--T", type=float, default=2.0, help="distillation temperature")
    p.add_argument("--feature-weight", type=float, default=0.0,
                   help="weight of stride-8 feature matching (MSE over the teacher features' variance)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init-trunk", default=None, help="warm-start conv1..layer2 from this exported trunk folder")
    start.add_argument("--warm-start", default=None,
                   help="warm-start the whole student from a run folder's student.safetensors (every tensor)")
    p.add_argument("--eval-crops", type=int, nargs="*", default=[],
                   help="also measure the held-out agreement at these centre-crop sizes at export")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--val-images", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-at", type=int, default=None, help="pause here (checkpointed); --resume later")
    p.add_argument("--limit", type=int, default=None, help="at most this many training photos (tests)")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--compact", action="store_true",
                   help="when the run stops, also write run-dir/resume.safetensors (fp16, committable; a fresh "
                        "machine continues from it with --resume)")


def export_trunk(student: nn.Module, folder: Path, card: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (fp16 trunk) and ``init.json`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    write_state_dict(folder / "model.safetensors", trunk_state(student), fp16=True)
    atomic_write_json(folder / "init.json", card)
    return folder


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path | None:
    amp = loop.start_run(args.threads, args.seed, args.no_amp)
    t_start = time.time()
    roots = [Path(r) for r in (args.data or ["../shared/data"])]
    paths = photo_paths(roots, "train")[: args.limit]
    if not paths:
        raise SystemExit(f"error: no training photos under {', '.join(map(str, roots))}")
    teacher = TeacherFeatures(args.teacher).eval()
    student = gray_resnet18()
    if args.warm_start:
        student.load_state_dict(read_state_dict(Path(args.warm_start)))  # strict: every tensor, every shape
        print(f"distil: student warm-started from {args.warm_start}", flush=True)
    elif args.init_trunk:
        print(f"distil: trunk warm-started from {args.init_trunk} ({load_trunk(student, Path(args.init_trunk))} "
              "tensors)", flush=True)
    student = student.to(memory_format=torch.channels_last)
    project = nn.Conv2d(128, 40, 1)  # layer2 (128 ch) -> the teacher's stride-8 width (Lite0: 40)
    model = nn.ModuleDict({"student": student, "project": project})
    sampler = PhotoSampler(paths, args.crop, args.seed, tuple(args.scale))
    held = heldout_photos(roots, args.val_images, args.crop)
    print(f"distil: {len(paths)} training photos from {len(roots)} root(s), {len(held)} held out "
          f"({time.time() - t_start:.0f} s)", flush=True)

    def step_fn(step: int):
        rgb = sampler.batch(args.batch_size)
        t_logits, t_feat = teacher(rgb)
        x = ((rgb_to_lab(rgb)[:, :1] - 50.0) / 50.0).contiguous(memory_format=torch.channels_last)
        with loop.autocast_for(torch.device("cpu"), amp):
            h = student.maxpool(student.relu(student.bn1(student.conv1(x))))
            f8 = student.layer2(student.layer1(h))
            logits = student.fc(torch.flatten(student.avgpool(student.layer4(student.layer3(f8))), 1))
        loss = distill_loss(logits.float(), t_logits, args.T)
        extra = {"kl": loss.item()}
        if args.feature_weight > 0:
            fm = feature_match_loss(project(f8.float()), t_feat)
            loss = loss + args.feature_weight * fm
            extra["feat"] = fm.item()
        return loss, args.batch_size, extra

    def validate() -> dict[str, float]:
        a = agreement(student, teacher, held)
        return {"err": 1.0 - a["top1"], **a}

    cfg = loop.LoopConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, amp=amp,
                          val_every=args.val_every, ckpt_every=min(args.val_every, 250),
                          warmup=min(500, max(1, args.steps // 20)), stop_at=args.stop_at,
                          weight_decay=5e-5, ema=args.ema)
    run_dir = Path(args.run_dir)
    state = loop.train(model, run_dir, cfg, step_fn, validate, "err", (sampler.state, sampler.load_state),
                       resume=args.resume)
    if args.compact:
        print(f"compact resume point: {loop.compact_checkpoint(run_dir)}")
    if args.no_export or state.step < args.steps:
        return None
    student.eval()
    metrics = {}
    for crop in dict.fromkeys([args.crop, *args.eval_crops]):
        photos = held if crop == args.crop else heldout_photos(roots, args.val_images, crop)
        for key, value in (("held_out_gray_agreement", agreement(student, teacher, photos)),
                           ("teacher_on_gray_agreement", teacher_on_gray(teacher, photos))):
            metrics[f"{key}_{crop}px"] = {k: round(v, 4) for k, v in value.items()}
    final = metrics[f"held_out_gray_agreement_{args.crop}px"]
    command = "python -m ensemble_color train distill " + shlex.join(argv if argv is not None else sys.argv[3:])
    card = {
        "name": Path(args.out).name,
        "what": "torchvision resnet18 conv1..layer2 (one-channel conv1, input (L - 50) / 50), distilled from "
                "ImageNet EfficientNet-Lite on colour photos; loaded by resnet18-deconv experts with --init",
        "teacher": args.teacher,
        "license": "distilled from Apache-2.0 ImageNet EfficientNet-Lite weights on photos with research-only "
                   "terms (see the data packs)",
        "command": command,
        "recipe": "scripts/train_distill.sh",
        "data": {"roots": [str(r) for r in roots], "train_photos": len(paths), "held_out_val_photos": len(held)},
        "training": {"steps": state.step, "batch_size": args.batch_size, "crop": args.crop, "T": args.T,
                     "feature_weight": args.feature_weight, "init_trunk": args.init_trunk,
                     "warm_start": args.warm_start,
                     "weight_ema": args.ema or None,
                     "images_per_second": round(loop.train_throughput(state), 1),
                     "train_seconds": round(state.seconds), "bf16_autocast": amp},
        "metrics": metrics,
    }
    folder = export_trunk(student, Path(args.out), card)
    write_state_dict(run_dir / "student.safetensors", student.state_dict())
    print(f"exported {folder}: top-1 agreement {final['top1']:.3f}, top-5 {final['top5']:.3f}")
    return folder
