"""Train a ``resnet18-deconv`` specialist on an image folder and export it as a plugin.

MSE on Lab ab (scaled to [-1, 1]); random-resized crops and flips; optional saturation boost of the
targets; AdamW with warm-up + cosine; bf16 autocast and channels-last on CPUs that have native
bf16 (measured 2x faster here, see the model cards); the best validation checkpoint is exported.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..color import AB_RANGE, gain_ab, lab_to_rgb, rgb_to_lab
from ..data.images import CropSampler, ImageCache, center_crop_batch
from ..data.roots import counts_by_root, expand_data, hold_out, hold_out_record, is_data_root, list_photos
from ..eval import metrics
from ..nets import create_model
from ..nets.resnet_context import ResNetDeconvContext
from ..plugins import export_expert, read_state_dict
from . import adversarial, loop
from . import expert_context as ctx
from .losses import EmbeddingGap, colourfulness_gap, degrade_share, palette_gap, rebalanced_soft_ce


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", action="extend", required=True,
                   help="data root(s) (read with --categories) or training image folder(s); repeatable")
    p.add_argument("--categories", nargs="+", default=None,
                   help="categories read from each data root's colorize/<category>/train (and /val for --val-roots)")
    p.add_argument("--val", nargs="*", default=[], help="validation image folder(s) or data root(s)")
    p.add_argument("--name", required=True, help="expert name (plugin folder name)")
    p.add_argument("--routes", nargs="+", required=True, help="route classes this expert serves")
    p.add_argument("--out", default="runs/export/experts", help="plugin folder to export into")
    p.add_argument("--run-dir", default=None, help="checkpoints and log (default: runs/<name>)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=128, help="training crop size (pixels)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.35, 1.0), help="random-resized-crop area range")
    p.add_argument("--max-side", type=int, default=256, help="cache images with short side capped at this")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--arch", default="resnet18-deconv", choices=("resnet18-deconv", ctx.ARCH),
                   help=f"{ctx.ARCH}: + a frozen ImageNet context branch and a 313-bin head (train.expert_context)")
    p.add_argument("--context", default="lite1", choices=("lite1", "lite2"),
                   help=f"{ctx.ARCH}'s frozen branch (never lite0: it judges the colours)")
    p.add_argument("--context-size", type=int, default=192,
                   help=f"{ctx.ARCH}: the gray crop is resized to this square for the frozen branch")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="keep the ResNet trunk (warm-started) as it is: train the decoder and heads only")
    p.add_argument("--ce-weight", type=float, default=0.1,
                   help=f"{ctx.ARCH}: weight of the bins head's rebalanced cross-entropy beside the MSE")
    p.add_argument("--adversarial", type=float, default=0.0,
                   help="adversarial phase (train.adversarial): the critic term's share of the reconstruction's "
                        "gradient pull (0 = off); the last weights are exported, not the lowest pixel loss")
    p.add_argument("--critic-pretrain", type=int, default=200,
                   help="critic steps against the fixed warm start before the joint phase")
    p.add_argument("--degrade", type=float, default=0.0,
                   help="share of training crops turned into old prints/scans (train.degrade; input L only)")
    p.add_argument("--decoder-widths", type=int, nargs=3, default=(128, 64, 32),
                   help="channels of the decoder's three stages (resnet18-deconv's decoder_widths)")
    p.add_argument("--saturation-boost", type=float, default=1.0, help="multiply target ab by this")
    p.add_argument("--colourfulness", type=float, default=0.0, metavar="W",
                   help="add W x the colourfulness gap to the truth (train.losses.colourfulness_gap) to the loss")
    p.add_argument("--embedding", type=float, default=0.0, metavar="F",
                   help="add the pooled-embedding gap to the truth (train.losses.EmbeddingGap), its gradient pull "
                        "F x the reconstruction's (train.adversarial.adaptive_weight; 0 = off)")
    p.add_argument("--palette", type=float, default=0.0, metavar="F",
                   help="add the palette gap to the truth (train.losses.palette_gap: sliced Wasserstein-1 between "
                        "the ab pixels), its gradient pull F x the reconstruction's (0 = off)")
    p.add_argument("--embedding-net", default="lite2", choices=("lite1", "lite2"),
                   help="the frozen network of --embedding (never lite0: it judges the colours)")
    p.add_argument("--init", default=None,
                   help="start from these weights (plugin folder or .safetensors), or 'imagenet-gray': the "
                        "distilled grayscale ResNet-18 trunk in inits/resnet18-gray (decoder random)")
    p.add_argument("--imagenet-init", action="store_true", help="ImageNet ResNet-18 encoder init (downloads)")
    p.add_argument("--folder-weights", type=float, nargs="+", default=None,
                   help="share of batches drawn from each --data folder (default: proportional to its size)")
    p.add_argument("--holdout-per-category", type=int, default=0,
                   help="with data roots: hold out this many evenly spaced train photos of each category "
                        "(data.roots.hold_out, the photos every trainer chooses on) and pick the best "
                        "checkpoint on them instead of on --val (then --val is only reported, never chosen on)")
    p.add_argument("--holdout-per-root", action="store_true",
                   help="hold out --holdout-per-category photos of each category from *each* data root "
                        "(data.roots.hold_out per_root; recorded in expert.json)")
    p.add_argument("--val-size", type=int, default=176,
                   help="validation/hold-out images are resized (short side) and centre-cropped to this")
    p.add_argument("--ema", type=float, default=0.0,
                   help="validate, select and export an exponential moving average of the weights with this "
                        "decay (e.g. 0.995; 0 = off)")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-limit", type=int, default=256, help="validation images used during training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (1 when other trainings share the cores: spinning OpenMP threads collide)")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt")
    p.add_argument("--stop-at", type=int, default=None, help="pause at this step (checkpointed; --resume later)")
    p.add_argument("--version", default="1.0", help="written into expert.json")
    p.add_argument("--compact", action="store_true",
                   help="also write a committable fp16 resume point (run-dir/resume.safetensors; train.loop)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training images (tests)")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--recipe", default=None, help="the script that rebuilds this expert (recorded in expert.json)")


#: ``--init`` value for the distilled grayscale ResNet-18 trunk (``train distill``; inits/resnet18-gray)
IMAGENET_GRAY = "imagenet-gray"


def _load_init(model: torch.nn.Module, init: str) -> None:
    """Whole-model weights (plugin folder or .safetensors), or a trunk: a file holding only ``encoder.*``
    tensors, such as ``imagenet-gray`` (the distilled grayscale ResNet-18, inits/resnet18-gray).

    A trunk must provide every ``encoder.*`` tensor with its shape; the decoder keeps its random init. A context
    specialist takes a whole plain specialist too (:func:`.expert_context.warm_start`: its new parts start fresh).
    """
    from .distill import DEFAULT_OUT

    path = DEFAULT_OUT if init == IMAGENET_GRAY else Path(init)
    path = path / "model.safetensors" if path.is_dir() else path
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_state_dict(path).items()}
    if isinstance(model, ResNetDeconvContext):
        print("fresh tensors:", ", ".join(ctx.warm_start(model, state, path)))
        return
    if not all(k.startswith("encoder.") for k in state):
        model.load_state_dict(state)
        return
    own = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}
    bad = sorted(set(own) ^ set(state)) + [k for k in own if k in state and own[k].shape != state[k].shape]
    if bad:
        raise SystemExit(f"error: {path}: not a resnet18-deconv trunk (mismatched: {', '.join(bad[:4])})")
    model.load_state_dict(state, strict=False)


def _pretrain_critic(model: torch.nn.Module, adversary: adversarial.Adversary,
                     batch: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], steps: int
                     ) -> dict[str, float]:
    """The critic alone against the warm-started model (its outputs made in eval mode, no gradients)."""
    def batches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        clean_L, L, target = batch()
        model.eval()
        with torch.inference_mode():
            fake = model(L).float()
        return clean_L, target, fake.clone()

    loss = adversary.pretrain(batches, steps, log=lambda i, v: print(f"critic pre-training {i}/{steps}: {v:.3f}"))
    return {"critic_loss_after_pretrain": round(loss, 4)}


def _train_caches(args: argparse.Namespace, folders: list[Path]) -> tuple[ImageCache, ImageCache | None]:
    """The training cache (one group per ``--data`` folder, for ``--folder-weights``) and, with
    ``--holdout-per-category``, the held-out train photos that choose the checkpoint."""
    if not args.holdout_per_category:
        return ImageCache.from_folders(folders, args.max_side, args.limit, desc=f"{args.name} train"), None
    roots = [Path(d) for d in args.data]
    if not args.categories or not all(is_data_root(r) for r in roots):
        raise SystemExit("error: --holdout-per-category needs data roots (--data ROOT) and --categories")
    photos = list_photos(roots, tuple(args.categories), "train")
    train, held = hold_out(photos, args.holdout_per_category, args.holdout_per_root)
    tagged = sorted(((p.path, folders.index(p.root / "colorize" / p.category / "train"))
                     for ps in train.values() for p in ps), key=lambda t: t[1])
    return (ImageCache.from_paths(tagged[: args.limit], args.max_side, f"{args.name} train"),
            ImageCache.from_paths([(p.path, 0) for p in held], args.max_side, f"{args.name} held out"))


#: output gains tried at export (``resnet18-deconv``'s ``ab_gain``), and the colourfulness tolerance
GAINS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6)
CF_TOLERANCE = 0.25


@torch.inference_mode()
def choose_gain(model: torch.nn.Module, lab: torch.Tensor, batch: int = 64) -> tuple[float, list[dict[str, float]]]:
    """The export gain, by a rule fixed before any specialist was measured (colourfulness
    within 25 % of ground truth asked): on the held-out train photos ``lab``, the gain of :data:`GAINS` with the
    lowest mean L2ab among those whose mean colourfulness is within 25 % of the photos' own; if none is,
    the gain whose colourfulness is nearest to theirs. Returns (gain, one row per gain)."""
    preds = torch.cat([model(chunk[:, :1].contiguous(memory_format=torch.channels_last)).float()
                       for chunk in lab.split(batch)])
    cf_gt = metrics.colorfulness(lab_to_rgb(lab)).mean().item()
    rows = []
    for g in GAINS:
        ab = gain_ab(preds, g)
        cf = metrics.colorfulness(lab_to_rgb(torch.cat([lab[:, :1], ab], 1))).mean().item()
        rows.append({"gain": g, "l2ab": metrics.l2ab(ab, lab[:, 1:]).mean().item(), "cf": cf, "cf_gt": cf_gt})
    ok = [r for r in rows if abs(r["cf"] - cf_gt) <= CF_TOLERANCE * cf_gt]
    best = min(ok, key=lambda r: r["l2ab"]) if ok else min(rows, key=lambda r: abs(r["cf"] - cf_gt))
    return best["gain"], rows


def val_metrics(model: torch.nn.Module, val_lab: torch.Tensor, amp: bool, batch: int = 64,
                bin_weights: torch.Tensor | None = None) -> dict[str, float]:
    """MSE (training units), L2ab and AuC of ``model`` on a fixed Lab validation batch; with ``bin_weights`` (a
    context specialist) also the bins head's rebalanced cross-entropy, from the same pass through the network."""
    mse, l2, au, ce = [], [], [], []
    for chunk in val_lab.split(batch):
        L, ab = chunk[:, :1].contiguous(memory_format=torch.channels_last), chunk[:, 1:]
        with loop.autocast_for(torch.device("cpu"), amp):
            if bin_weights is None:
                pred = model(L).float()
            else:
                reg, logits = model.heads(L)
                pred = model.decode_heads(reg, logits).float()
                ce.append(rebalanced_soft_ce(logits, ab, model.ab_bins, bin_weights).item())
        mse.append(((pred - ab) / AB_RANGE).pow(2).flatten(1).mean(1))
        err = metrics.ab_error(pred, ab)
        l2.append(err.flatten(1).mean(1))
        au.append(metrics.auc(err))
    return {"mse": torch.cat(mse).mean().item(), "l2ab": torch.cat(l2).mean().item(),
            "auc": torch.cat(au).mean().item(), **({"ce": sum(ce) / len(ce)} if ce else {})}


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path | None:
    amp = loop.start_run(args.threads, args.seed, args.no_amp)
    t_start = time.time()
    train_folders = expand_data(args.data, args.categories, "train")
    val_folders = expand_data(args.val, args.categories, "val")
    train_cache, held = _train_caches(args, train_folders)
    if args.folder_weights is not None and len(args.folder_weights) != len(train_folders):
        raise SystemExit(f"--folder-weights needs {len(train_folders)} values (one per training folder: "
                         f"{', '.join(map(str, train_folders))})")
    context = args.arch == ctx.ARCH
    extra = ({"context": args.context, "context_size": args.context_size, "context_init": "none"} if context
             else {"imagenet_init": args.imagenet_init})
    model = create_model(args.arch, input_size=args.crop, decoder_widths=tuple(args.decoder_widths), **extra)
    if context:
        ctx.imagenet_branch(model)
    if args.init:
        _load_init(model, args.init)
    model = model.to(memory_format=torch.channels_last)
    val_lab = None
    if args.val:
        val_cache = ImageCache.from_folders(val_folders, args.max_side, args.val_limit, desc=f"{args.name} val")
        val_lab = rgb_to_lab(center_crop_batch(val_cache.images, args.val_size))
    run_dir = Path(args.run_dir or f"runs/{args.name}")
    sampler = CropSampler(train_cache, args.crop, args.seed, tuple(args.scale), groups=train_cache.groups,
                          group_weights=args.folder_weights)
    select_lab = rgb_to_lab(center_crop_batch(held.images, args.val_size)) if held is not None else None

    degrade_rng = np.random.default_rng(args.seed + 777)
    bin_weights = None
    if context:  # empirical bins of batches drawn on another seed (the training stream is unchanged)
        bin_weights = ctx.bin_weights([CropSampler(train_cache, args.crop, args.seed + 12345, tuple(args.scale))
                                       .batch_lab(args.batch_size)[:, 1:] for _ in range(20)], model.ab_bins)

    if args.freeze_encoder:
        model.encoder.requires_grad_(False)

    def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clean L, the L the model sees, target ab) of one training batch."""
        lab = sampler.batch_lab(args.batch_size)
        L = degrade_share(lab[:, :1], args.degrade, degrade_rng).contiguous(memory_format=torch.channels_last)
        return lab[:, :1], L, (lab[:, 1:] * args.saturation_boost).clamp(-AB_RANGE, AB_RANGE)

    def reconstruction(L: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """(pixel/bin loss, its parts, the decoded ab) of one batch."""
        with loop.autocast_for(torch.device("cpu"), amp):
            if context:
                reg, logits = model.heads(L)
                total, parts = ctx.heads_loss(model, reg, logits, target, bin_weights, args.ce_weight)
                return total, parts, model.decode_heads(reg, logits)
            pred = model(L)
        return F.mse_loss(pred.float() / AB_RANGE, target / AB_RANGE), {}, pred.float()

    adversary = adversarial.Adversary(seed=args.seed) if args.adversarial > 0 else None
    embedding = EmbeddingGap(args.embedding_net) if args.embedding > 0 else None
    balanced = adversary is not None or embedding is not None or args.palette > 0
    balance_layer = adversarial.shared_layer(model) if balanced else None
    palette_rng = torch.Generator().manual_seed(args.seed + 777)
    critic_record = {}
    if adversary is not None and not (args.resume and (run_dir / "checkpoint.pt").exists()):
        critic_record = _pretrain_critic(model, adversary, batch, args.critic_pretrain)

    def step_fn(step: int):
        if args.freeze_encoder:
            model.encoder.eval()  # frozen: its batch-norm statistics stay the warm start's
        clean_L, L, target = batch()
        total, parts, out = reconstruction(L, target)
        rec = total
        balanced_terms = [("embedding", args.embedding, lambda: embedding(clean_L, out, target)),
                          ("palette", args.palette, lambda: palette_gap(out, target, palette_rng))]
        for name, factor, term in balanced_terms:  # each pulls ``factor`` x the reconstruction on the shared layer
            if factor > 0:
                gap = term()
                weight = adversarial.adaptive_weight(rec, gap, balance_layer, factor)
                total = total + weight * gap
                parts = {**parts, f"{name}_gap": gap.item(), f"{name}_weight": weight.item()}
        if args.colourfulness > 0:
            gap = colourfulness_gap(clean_L, out, target)
            total, parts = total + args.colourfulness * gap, {**parts, "cf_gap": gap.item()}
        if adversary is None:
            return total, args.batch_size, parts
        parts["critic"] = adversary.update(clean_L, target, out)
        adv = adversary.generator_loss(clean_L, out)
        weight = adversarial.adaptive_weight(rec, adv, balance_layer, args.adversarial)
        return total + weight * adv, args.batch_size, {**parts, "adv": adv.item(), "adv_weight": weight.item()}

    if val_lab is None:  # no val set: track the loss on a fixed training batch (own RNG: keeps runs reproducible)
        val_lab = rgb_to_lab(CropSampler(train_cache, args.crop, args.seed + 1, tuple(args.scale)).batch_rgb(16))

    def scored(lab: torch.Tensor) -> dict[str, float]:
        out = val_metrics(model, lab, amp, bin_weights=bin_weights)
        if context:  # the checkpoint is chosen on both heads' loss, not on the regression head alone
            out["loss"] = out["mse"] + args.ce_weight * out["ce"]
        return out

    def validate():
        if select_lab is None:
            return scored(val_lab)
        chosen = scored(select_lab)
        return {**chosen, **{f"val_{k}": v for k, v in val_metrics(model, val_lab, amp).items()}}

    cfg = loop.LoopConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, amp=amp,
                          val_every=args.val_every, ckpt_every=args.val_every,
                          warmup=min(100, max(1, args.steps // 10)), stop_at=args.stop_at, ema=args.ema)
    state = loop.train(model, run_dir, cfg, step_fn, validate, "loss" if context else "mse",
                       (sampler.state, sampler.load_state), resume=args.resume,
                       params=[p for p in model.parameters() if p.requires_grad],
                       companions={"critic": adversary} if adversary is not None else None)
    if args.compact:
        loop.compact_checkpoint(run_dir)
    if args.no_export or state.step < args.steps:
        return None
    if (run_dir / "best.pt").exists() and adversary is None and not args.colourfulness \
            and not args.embedding and not args.palette:
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model.eval()  # a resumed, already finished run never passed through validate(): BN must not update here
    gain, gain_rows = choose_gain(model, select_lab) if select_lab is not None else (1.0, [])
    model.ab_gain = gain
    decoding, decoding_rows = {}, []
    if context and select_lab is not None:
        decoding, decoding_rows = ctx.choose_decoding(model, select_lab, gain, GAINS)
        model.ab_gain = gain = decoding.pop("gain", gain)
        for k, v in decoding.items():
            setattr(model, k, v)
        print("decoding:", decoding, "gain", gain, "| context branch:", ctx.export_branch(model))
    with torch.inference_mode():
        final = val_metrics(model, val_lab, amp=False) if args.val else {}
        held_metrics = val_metrics(model, select_lab, amp=False) if select_lab is not None else {}
    command = "python -m ensemble_color train expert " + shlex.join(argv if argv is not None else sys.argv[3:])
    manifest = {
        "name": args.name,
        "architecture": args.arch,
        "config": {"input_size": args.crop, "ab_gain": gain, "decoder_widths": list(args.decoder_widths),
                   **({"context": args.context, "context_size": args.context_size, **decoding} if context
                      else {})},
        "routes": list(args.routes),
        "input_size": args.crop,
        "version": args.version,
        "license": "weights: research use only (trained on data with research-only terms, see data)",
        "data": {"train": train_cache.summary(), "train_by_root": counts_by_root(train_cache.paths),
                 "categories": args.categories, "val_images_during_training": len(val_lab) if args.val else 0,
                 "folder_weights": args.folder_weights, "held_out_for_selection": len(held) if held else 0,
                 **hold_out_record(args.holdout_per_category, args.holdout_per_root),
                 "checkpoint_chosen_on": "held-out train images" if held else ("val" if args.val else "train")},
        "command": command,
        "recipe": args.recipe,
        "training": {"steps": state.step, "best_step": state.best_step, "batch_size": args.batch_size,
                     "crop": args.crop, "saturation_boost": args.saturation_boost, "colourfulness": args.colourfulness,
                     **({"embedding": {"factor": args.embedding, "net": args.embedding_net,
                                       "how": "train.losses.EmbeddingGap"}} if embedding is not None else {}),
                     **({"palette": {"factor": args.palette, "how": "train.losses.palette_gap"}}
                        if args.palette > 0 else {}),
                     "degraded_share": args.degrade, "bf16_autocast": amp,
                     "weight_ema": args.ema or None,
                     "images_per_second": round(loop.train_throughput(state), 1),
                     "train_seconds": round(state.seconds), "wall_seconds": round(time.time() - t_start),
                     "init": args.init or ("imagenet" if args.imagenet_init else "random")},
        **({"decoding_selection": {"rule": "train.expert_context (docstring)", "chosen": decoding,
                                   "candidates": [{k: round(v, 4) if isinstance(v, float) else v
                                                   for k, v in r.items()} for r in decoding_rows]},
            "levers": {"context": args.context, "context_size": args.context_size, "ce_weight": args.ce_weight,
                       "frozen_encoder": args.freeze_encoder}}
           if context else {}),
        **({"adversarial": {"factor": args.adversarial, "critic_pretrain_steps": args.critic_pretrain,
                            **critic_record, "exported": "the last weights (moving average when --ema)",
                            "how": "train.adversarial"}} if adversary is not None else {}),
        "gain_selection": {"rule": "train.expert.choose_gain", "chosen": gain,
                           "on": "held-out train photos" if gain_rows else "none (no held-out photos: gain 1)",
                           "candidates": [{k: round(v, 4) for k, v in r.items()} for r in gain_rows]},
        "metrics": {f"val_center_crops_{args.val_size}": {k: round(v, 4) for k, v in final.items()},
                    **({f"held_out_center_crops_{args.val_size}": {k: round(v, 4) for k, v in held_metrics.items()}}
                       if held_metrics else {})},
    }
    folder = export_expert(model, Path(args.out) / args.name, manifest, fp16=True)
    print(f"exported {folder}")
    return folder
