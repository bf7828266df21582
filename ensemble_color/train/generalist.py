"""Train and export the generalist expert (``multihead-lite``).

The seed's generalist (Nguyen-Quynh, Kim & Do 2020) starts from a pretrained encoder fine-tuned by
scene-context classification. Ours: the ImageNet EfficientNet-Lite encoder (one-channel stem, summed
RGB kernels) under a light U-Net decoder, trained on both data packs (:mod:`.generalist_data`).

Targets per crop:

* soft-encoding of ab at 1/4 resolution with class rebalancing from the empirical bin distribution
  of *these* training batches (``--rebalance-lambda``), and ab itself for the regression head;
* route-class segmentation from the packs' masks (255 = ignore);
* scene context without Places365: the ImageNet teacher's class distribution on the *colour* crop,
  top-k truncated and label-smoothed (the seed's label smoothing), plus the source category (a
  composite's: the pixel share of each class).

Loss: ``a1 * rebalanced soft CE + a2 * MSE(reg) + a3 * (CE(scene) + CE(category)) + a4 * Dice(seg)``.
The checkpoint is chosen by that loss on held-out *train* photos; the decoding by the rule of
:mod:`.generalist_eval`, on the same photos.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import softencode
from ..color import AB_RANGE, rgb_to_lab
from ..data.composites import IGNORE
from ..data.images import center_crop_batch, read_rgb
from ..data.roots import hold_out, hold_out_record, list_photos
from ..eval import metrics
from ..nets import create_model
from ..nets.imagenet import imagenet_classifier, load_pretrained, weights_entry
from ..nets.multihead_unet import DECODES
from ..plugins import PluginError, export_expert, read_state_dict, validate_folder
from ..routing import RoutingTable
from . import loop
from .generalist_data import SOURCES, GeneralistSampler, category_target, held_out_masks
from .losses import bin_prior, rebalanced_soft_ce

TRAIN_CATEGORIES = ("scenes", "faces", "people", "birds", "animals")
DEFAULT_MIX = "scenes=0.3,composites=0.2,faces=0.1,people=0.1,birds=0.15,animals=0.15"


# ----------------------------------------------------------------------------------------- loss
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """1 - mean over classes of the soft Dice (batch-pooled), ignoring ``ignore`` pixels."""
    probs = torch.softmax(logits.float(), 1)
    valid = (target != ignore).unsqueeze(1).float()
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot * valid).sum((0, 2, 3))
    denom = (probs * valid).sum((0, 2, 3)) + (onehot * valid).sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


def topk_smooth(p: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """Top-k label smoothing of (B, C) distributions: keep the k largest, renormalise, mix eps x uniform."""
    best = p.topk(k, 1)
    top = torch.zeros_like(p).scatter(1, best.indices, best.values)
    top = top / top.sum(1, keepdim=True).clamp_min(1e-8)
    return (1 - eps) * top + eps / p.shape[1]


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * torch.log_softmax(logits.float(), 1)).sum(1).mean()


def generalist_loss(model: torch.nn.Module, heads: dict[str, torch.Tensor], ab: torch.Tensor,
                    seg: torch.Tensor, scene: torch.Tensor, category: torch.Tensor,
                    alphas: tuple[float, float, float, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """The four-term loss; returns (total, per-term floats for the log)."""
    a1, a2, a3, a4 = alphas
    soft = heads["soft"].float()
    ce = rebalanced_soft_ce(soft, ab, model.ab_bins, model.bin_weights)
    mse = ((heads["reg"].float() - ab.float()) / AB_RANGE).pow(2).mean()
    sce, cce = soft_ce(heads["scene"], scene), soft_ce(heads["category"], category)
    seg4 = seg[:, 1::4, 1::4][..., :soft.shape[-2], :soft.shape[-1]]
    dice = soft_dice_loss(heads["seg"], seg4)
    total = a1 * ce + a2 * mse + a3 * (sce + cce) + a4 * dice
    return total, {"ce": ce.item(), "mse": mse.item(), "scene": sce.item(), "category": cce.item(),
                   "dice": dice.item()}


# ------------------------------------------------------------------------------------- training
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``train generalist``."""
    p.add_argument("--data", action="append", default=None, help="data root; repeat (default ../shared/data)")
    p.add_argument("--categories", nargs="+", default=list(TRAIN_CATEGORIES), choices=TRAIN_CATEGORIES)
    p.add_argument("--mix", default=DEFAULT_MIX, help="sampling probability per source (categories, composites)")
    p.add_argument("--variant", default="lite0", choices=("lite0", "lite1", "lite2"), help="encoder")
    p.add_argument("--init", default="imagenet", choices=("imagenet", "none"),
                   help="encoder init: the ImageNet EfficientNet-Lite weights (train extra) or random")
    p.add_argument("--warm-start", default=None, metavar="PLUGIN",
                   help="start from a trained multihead-lite plugin folder (all heads and its bin prior) instead "
                        "of --init; a new schedule over --steps")
    p.add_argument("--decoder", type=int, nargs=4, default=(96, 64, 48, 32), help="decoder widths, 1/16 .. 1/2")
    p.add_argument("--scene-topk", type=int, default=5)
    p.add_argument("--scene-eps", type=float, default=0.1, help="label smoothing of the scene targets")
    p.add_argument("--alphas", type=float, nargs=4, default=(1.0, 10.0, 0.1, 0.5),
                   metavar=("CE", "MSE", "SCENE", "DICE"), help="loss weights a1..a4")
    p.add_argument("--T", type=float, default=softencode.DEFAULT_T, help="annealed-mean temperature")
    p.add_argument("--rebalance-lambda", type=float, default=0.5)
    p.add_argument("--prior-batches", type=int, default=40, help="batches used for the empirical bin prior")
    p.add_argument("--holdout-per-category", type=int, default=40,
                   help="train photos per category kept out for checkpoint and decode choice")
    p.add_argument("--holdout-per-root", action="store_true",
                   help="hold out --holdout-per-category photos of each category from *each* data root "
                        "(data.roots.hold_out per_root; recorded in expert.json, read by the decode choice)")
    p.add_argument("--cutouts-per-category", type=int, default=600, help="per root, for the composites")
    p.add_argument("--out", default="runs/export/experts", help="plugin folder to export into")
    p.add_argument("--name", default="generalist")
    p.add_argument("--version", default="2.0", help="written into expert.json (v3 = v2 warm-started and trained on)")
    p.add_argument("--run-dir", default="runs/generalist")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--stop-at", type=int, default=None, help="pause at this step (resume later, same schedule)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=160)
    p.add_argument("--scale", type=float, nargs=2, default=(0.3, 1.0))
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--encoder-lr-scale", type=float, default=0.25, help="encoder lr = lr x this (pretrained)")
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave default)")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--compact", action="store_true", help="also write a committable fp16 resume point")
    p.add_argument("--no-export", action="store_true")


def _parse_mix(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        if key.strip() not in SOURCES:
            raise ValueError(f"--mix: unknown source {key!r} (known: {', '.join(SOURCES)})")
        out[key.strip()] = float(val)
    return out


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    """Builder kwargs, as stored in ``expert.json`` ``config``."""
    return {"variant": args.variant, "decoder": list(args.decoder), "decode": "soft", "T": args.T,
            "input_size": args.crop}


def compute_prior(sampler: GeneralistSampler, batches: int, batch_size: int, bins: torch.Tensor,
                  seed: int) -> torch.Tensor:
    """Empirical bin distribution of training batches (1/4-res ab, as the loss sees it), drawn on
    another seed and with the sampler's state restored, so the training stream is unchanged."""
    saved = sampler.state()
    sampler.rng = np.random.default_rng(seed + 12345)
    prior = bin_prior([rgb_to_lab(sampler.batch(batch_size)["rgb"])[:, 1:] for _ in range(batches)], bins)
    sampler.load_state(saved)
    return prior


def param_groups(model: torch.nn.Module, lr: float, encoder_scale: float) -> list[dict[str, Any]]:
    """The pretrained encoder learns slower than the new decoder and heads."""
    enc = list(model.encoder.parameters())
    ids = {id(p) for p in enc}
    return [{"params": enc, "lr": lr * encoder_scale},
            {"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}]


def _warm_start(model: torch.nn.Module, folder: Path) -> None:
    """Every tensor (heads, bin prior and rebalancing weights included) from a shipped generalist plugin;
    its architecture and config must be the ones this run builds, so a mismatch is an error, not a partial load."""
    try:
        spec = validate_folder(folder, RoutingTable.load().known_classes())
    except PluginError as exc:
        raise SystemExit(f"error: {folder}: {exc}") from None
    if spec.architecture != "multihead-lite":
        raise SystemExit(f"error: {folder}: --warm-start needs a multihead-lite plugin, not {spec.architecture!r}")
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in read_state_dict(folder / "model.safetensors").items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise SystemExit(f"error: {folder}: does not match this run's model config ({first})") from None


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path | None:
    """Train (resumably) and export the generalist plugin; returns the plugin folder."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    amp = loop.cpu_has_bf16() and not args.no_amp
    t_start = time.time()
    roots = [Path(r) for r in (args.data or ["../shared/data"])]
    mix = _parse_mix(args.mix)
    photos, held = hold_out(list_photos(roots, tuple(args.categories), "train"), args.holdout_per_category,
                            args.holdout_per_root)
    sampler = GeneralistSampler(photos, mix, args.crop, args.seed, tuple(args.scale), args.cutouts_per_category,
                                held_out_masks(held))
    print(f"generalist: {sum(map(len, photos.values()))} training photos, {len(held)} held out, "
          f"{len(sampler.cutouts)} cut-outs, sources {sampler.summary()['sources']}")
    model = create_model("multihead-lite", **model_config(args))
    run_dir = Path(args.run_dir)
    fresh = not (args.resume and ((run_dir / "checkpoint.pt").exists() or (run_dir / loop.COMPACT).exists()))
    if fresh and args.warm_start:
        _warm_start(model, Path(args.warm_start))
    elif fresh:
        if args.init == "imagenet":
            load_pretrained(model.encoder, args.variant)
        prior = compute_prior(sampler, args.prior_batches, args.batch_size, model.ab_bins, args.seed)
        model.bin_prior.copy_(prior)
        model.bin_weights.copy_(softencode.rebalancing_weights(prior, model.ab_bins, args.rebalance_lambda))
    teacher = imagenet_classifier(args.variant)
    model = model.to(memory_format=torch.channels_last)
    alphas = tuple(args.alphas)
    val_rgb = center_crop_batch([read_rgb(p.path, args.crop) for p in held], args.crop)
    val_cat = torch.from_numpy(np.stack([category_target(p.category) for p in held]))

    def targets(rgb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return topk_smooth(torch.softmax(teacher(rgb).float(), 1), args.scene_topk, args.scene_eps)

    def forward_loss(rgb: torch.Tensor, seg: torch.Tensor, category: torch.Tensor):
        lab = rgb_to_lab(rgb)
        with loop.autocast_for(torch.device("cpu"), amp):
            heads = model.forward_heads(lab[:, :1].contiguous(memory_format=torch.channels_last))
        loss, parts = generalist_loss(model, heads, lab[:, 1:], seg, targets(rgb), category, alphas)
        return loss, parts, heads, lab[:, 1:]

    def step_fn(step: int):
        b = sampler.batch(args.batch_size)
        loss, parts, _, _ = forward_loss(b["rgb"], b["seg"], b["category"])
        return loss, args.batch_size, parts

    def validate() -> dict[str, float]:
        out: dict[str, list[float]] = {"loss": [], "l2ab_soft": [], "l2ab_reg": []}
        for rgb, cat in zip(val_rgb.split(50), val_cat.split(50), strict=True):
            seg = torch.full(rgb.shape[:1] + rgb.shape[-2:], IGNORE, dtype=torch.long)
            loss, _, heads, ab = forward_loss(rgb, seg, cat)
            out["loss"] += [loss.item()] * len(rgb)
            out["l2ab_soft"] += metrics.l2ab(model.decode_heads(heads, "soft"), ab).tolist()
            out["l2ab_reg"] += metrics.l2ab(model.decode_heads(heads, "regression"), ab).tolist()
        return {k: sum(v) / len(v) for k, v in out.items()}

    cfg = loop.LoopConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, amp=amp,
                          val_every=args.val_every, ckpt_every=min(args.val_every, 100), ema=args.ema,
                          warmup=min(100, max(1, args.steps // 10)), stop_at=args.stop_at)
    state = loop.train(model, run_dir, cfg, step_fn, validate, "loss", (sampler.state, sampler.load_state),
                       resume=args.resume, params=param_groups(model, args.lr, args.encoder_lr_scale))
    if args.compact:
        loop.compact_checkpoint(run_dir)
    if args.no_export or state.step < args.steps:
        return None
    if (run_dir / "best.pt").exists():
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model.eval()
    with torch.inference_mode():
        final = validate()
    folder = export_expert(model, Path(args.out) / args.name,
                           _manifest(args, argv, sampler, held, state, final, amp, t_start), fp16=True)
    print(f"exported {folder}")
    return folder


def _manifest(args: argparse.Namespace, argv: list[str] | None, sampler: GeneralistSampler, held: list,
              state: loop.TrainState, final: dict[str, float], amp: bool, t_start: float) -> dict[str, Any]:
    entry = weights_entry(args.variant)
    command = "python -m ensemble_color train generalist " + shlex.join(argv if argv is not None else sys.argv[1:])
    return {
        "name": args.name, "architecture": "multihead-lite", "config": model_config(args), "routes": [],
        "fallback": True, "input_size": args.crop, "version": args.version,
        "recipe": "scripts/train_generalist.sh",
        "license": f"weights: research use only (trained on photos with non-commercial research terms, see both "
                   f"data packs' READMEs); encoder initialised from {entry.describe()}",
        "init": {"encoder": f"tf_efficientnet_{args.variant}", "weights": args.init,
                 "package": entry.pip_name if args.init == "imagenet" else None,
                 **({"warm_start": args.warm_start} if args.warm_start else {})},
        "data": {**sampler.summary(), "categories": list(args.categories), "held_out": len(held),
                 **hold_out_record(args.holdout_per_category, args.holdout_per_root), "mix": _parse_mix(args.mix)},
        "command": command,
        "training": {"steps": state.step, "best_step": state.best_step, "batch_size": args.batch_size,
                     "crop": args.crop, "alphas": list(args.alphas), "bf16_autocast": amp,
                     "threads": torch.get_num_threads(), "ema": args.ema,
                     "images_per_second": round(loop.train_throughput(state), 1),
                     "train_seconds": round(state.seconds), "wall_seconds": round(time.time() - t_start),
                     "rebalance_lambda": args.rebalance_lambda, "scene_topk": args.scene_topk,
                     "scene_eps": args.scene_eps, "encoder_lr_scale": args.encoder_lr_scale},
        "metrics": {"held_out_train_center_crops": {k: round(v, 4) for k, v in final.items()}},
        "decodes": list(DECODES),
    }
