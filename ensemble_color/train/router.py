"""Train the embedded grayscale router (an smp segmenter on L only) and export it to ``weights/router/``.

Why this shape:
* **L only**: the router runs on the photo the user gives us, which has no colour.
* **Data** (masks, scenes, composites, the sampler): :mod:`.router_data`. **Measurements** (IoU,
  pasted-subject recall, latency, ``evaluate router``): :mod:`.router_eval`. This file builds the
  model, trains it and exports it.
* **Architecture**: FPN decoder (64/32 channels) on a timm MobileNetV3-Large encoder, from scratch
  (no hub downloads). It was the fastest of the candidates timed at 320 px on this CPU while keeping
  a real encoder; smp's default U-Net (resnet18) was ~5x slower (numbers in ``weights/router/README.md``).
* **Loss** (:mod:`.losses`): cross-entropy + 0.5 Dice, both ignoring 255 (Dice keeps the small animal class from
  being drowned by background pixels); with ``--distill-from``, a KL term toward a frozen router on the crops
  left as they are (fine-tuning on old prints otherwise drifts from what the router did on clean photos).
* The final (not the best-on-val) checkpoint is exported by default, because the validation images
  are also what we report: choosing on them would flatter the reported numbers.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.composites import cutouts_from_masks, load_cutouts, val_composites
from ..data.masks import CLASS_NAMES, MASK_CATEGORIES, N_CLASSES, MaskedImages, load_masked, load_scenes
from ..eval import router as router_eval
from ..eval.router import _fp16_scores, net_router, segmentation_scores
from ..io import atomic_write_json
from ..plugins import write_state_dict
from ..routing import INPUT_MAPPINGS, load_smp_weights
from . import loop
from .degrade import degrade_rgb
from .losses import RouterLoss, distillation_kl
from .router_data import DEFAULT_SOURCE_WEIGHTS, KEEP_CLEAN_SHARE, RouterSampler

#: the chosen default (see the module docstring and ensemble_color/weights/router/README.md for the timings)
DEFAULT_ARCH = "FPN"
DEFAULT_ENCODER = "tu-mobilenetv3_large_100"
DEFAULT_DECODER = {"FPN": {"decoder_pyramid_channels": 64, "decoder_segmentation_channels": 32}}
#: smp encoder name prefix -> key prefix of its state dict relative to timm's names
_ENCODER_KEY_PREFIX = {"tu-": "model.", "timm-": ""}


def build_model(
    arch: str = DEFAULT_ARCH, encoder: str = DEFAULT_ENCODER, decoder: dict[str, Any] | None = None
) -> nn.Module:
    """A 1-channel, 4-class smp model with random weights (no downloads: ``encoder_weights=None``)."""
    import segmentation_models_pytorch as smp

    decoder = DEFAULT_DECODER.get(arch, {}) if decoder is None else decoder
    return smp.create_model(
        arch, encoder_name=encoder, encoder_weights=None, in_channels=1, classes=N_CLASSES, **decoder
    )


def init_encoder_imagenet(net: nn.Module, encoder: str) -> int:
    """Copy the offline ImageNet EfficientNet-Lite weights into ``net.encoder`` (1-channel stem summed).

    Only EfficientNet-Lite encoders have offline weights (``nets.imagenet``); others raise its one-line error.
    """
    from ..nets.imagenet import load_pretrained, weights_entry

    prefix = next((v for k, v in _ENCODER_KEY_PREFIX.items() if encoder.startswith(k)), "")
    return load_pretrained(net.encoder, weights_entry(encoder).variant, prefix=prefix)


# ------------------------------------------------------------------------------------------ export


def smp_config(net: nn.Module) -> dict[str, Any]:
    """The model's config exactly as smp's ``save_pretrained`` writes it (so smp itself can read it)."""
    with tempfile.TemporaryDirectory() as tmp:
        net.save_pretrained(tmp)
        return json.loads((Path(tmp) / "config.json").read_text())


def export_router(net: nn.Module, folder: str | Path, extra: dict[str, Any], fp16: bool = True) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (smp format + an ``ensemble_color`` key) into ``folder``.

    Other files in the folder (``routing_table.json``, ``README.md``) are left alone.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_state_dict(folder / "model.safetensors", net.state_dict(), fp16)
    config = smp_config(net)
    config["ensemble_color"] = {"backend": "ensemble", **extra}
    atomic_write_json(folder / "config.json", config)
    return folder


# ------------------------------------------------------------------------------------------- train


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ensemble_color train router``."""
    p.add_argument("--data", action="append", default=None,
                   help="data pack root (colorize/ and route/); repeat for several (default ../shared/data)")
    p.add_argument("--out", default="runs/export/router",
                   help="folder to export model.safetensors + config.json into")
    p.add_argument("--run-dir", default="runs/router", help="checkpoints and log")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="smp architecture (FPN, Unet, Linknet, ...)")
    p.add_argument("--encoder", default=DEFAULT_ENCODER, help="smp encoder name")
    p.add_argument("--encoder-init", choices=("none", "imagenet"), default="none",
                   help="imagenet: offline ImageNet EfficientNet-Lite weights (nets.imagenet; needs the train extra)")
    p.add_argument("--input-mapping", choices=("l_unit", "gray_unit"), default=None,
                   help="how L is scaled for the net (default: gray_unit with --encoder-init imagenet, else l_unit)")
    p.add_argument("--scenes-per-root", type=int, default=None,
                   help="at most this many train scenes per data root (evenly spaced; the extension pack has 29k)")
    p.add_argument("--cutouts-per-category", type=int, default=None,
                   help="at most this many mask cut-outs per category and root")
    p.add_argument("--source-weights", default=None,
                   help=f"JSON share of each real source among non-composites (default {DEFAULT_SOURCE_WEIGHTS})")
    p.add_argument("--main-pack-share", default=None,
                   help='JSON fraction of a category\'s real samples and pasted cut-outs drawn from the first --data '
                        'root (the main pack), e.g. \'{"animals": 0.5}\' (default: in proportion to the roots\' sizes)')
    p.add_argument("--decoder", default=None,
                   help="JSON dict of decoder kwargs (default: FPN 64/32 channels for FPN, smp's otherwise)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=224, help="training crop size (pixels)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.3, 1.0), help="random-resized-crop area range")
    p.add_argument("--composite-frac", type=float, default=0.5, help="share of copy-paste composites per batch")
    p.add_argument("--mask-cutouts", nargs="*", default=["animals"], choices=MASK_CATEGORIES,
                   help="also cut foregrounds from these categories' train masks (route/cutouts has only 81 animals)")
    p.add_argument("--paste-range", type=float, nargs=2, default=(0.25, 0.7),
                   help="pasted cut-out size as a fraction of the crop's side")
    p.add_argument("--balanced-cutouts", action="store_true",
                   help="paste each class equally often (else: each cut-out)")
    p.add_argument("--init", default=None, help="warm start from a router folder (same architecture)")
    p.add_argument("--input-size", type=int, default=320, help="router input long side at inference")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--dice", type=float, default=0.5, help="weight of the Dice loss added to cross-entropy")
    p.add_argument("--class-weights", type=float, nargs=len(CLASS_NAMES), default=None,
                   metavar="W", help=f"cross-entropy weight per class ({', '.join(CLASS_NAMES)}); default all 1")
    p.add_argument("--ema", type=float, default=0.0,
                   help="validate, select and export a moving average of the weights with this decay (0 = off)")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-limit", type=int, default=40, help="val masks per category used during training")
    p.add_argument("--export-from", choices=("last", "best"), default="last",
                   help="which checkpoint to export (best = on the training-time val subset)")
    p.add_argument("--no-clean", action="store_true", help="keep masks mask_stats.csv marks as unreliable")
    p.add_argument("--degrade", type=float, default=0.0,
                   help="share of training crops turned into old prints/scans (train.degrade; input L only)")
    p.add_argument("--degrade-mix", type=json.loads, default=None, metavar="JSON",
                   help='chances of the degraded crops\' transforms replacing train.degrade.MIX_PROBABILITY\'s, '
                        'e.g. \'{"halftone": 0.6, "grain": 0.3}\'')
    p.add_argument("--degrade-descreen", action="store_true",
                   help="pass each degraded crop through the pipeline's descreener, as inference shows the router")
    p.add_argument("--degrade-keep-clean", nargs="+", choices=CLASS_NAMES, default=[], metavar="CLASS",
                   help=f"never degrade a crop this class fills {KEEP_CLEAN_SHARE * 100:g} %% or more of "
                        "(train.router_data), e.g. animal")
    p.add_argument("--darken-people", type=float, default=0.0, metavar="SHARE",
                   help="share of training crops whose person pixels get a darkening gamma (train.router_data: "
                        "dark skin, which the masked people seldom show)")
    p.add_argument("--distill-from", default=None, metavar="FOLDER",
                   help="a frozen router (same architecture) whose outputs on the clean crops the router is pulled "
                        "toward (KL, weight --distill), so that learning old prints drifts less from clean photos")
    p.add_argument("--distill", type=float, default=1.0, metavar="W", help="weight of the --distill-from term")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast (measured slower for the MobileNetV3 FPN on this CPU, so off by default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 when sharing the cores)")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt")
    p.add_argument("--stop-at", type=int, default=None, help="pause at this step (checkpointed; --resume later)")
    p.add_argument("--limit", type=int, default=None, help="at most this many train images per category (tests)")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--export-only", action="store_true",
                   help="export run-dir/checkpoint.pt (possibly unfinished) without training")


def _warm_start(net: nn.Module, folder: Path) -> None:
    """Load a router folder's weights into ``net`` (strict: the architecture must be the same)."""
    load_smp_weights(net, folder)
    print(f"warm start from {folder}", flush=True)


def _teacher(args: argparse.Namespace, decoder: dict[str, Any] | None) -> nn.Module:
    """The frozen router of ``--distill-from``, built as the trained one (its weights must fit that architecture)."""
    net = build_model(args.arch, args.encoder, decoder)
    load_smp_weights(net, Path(args.distill_from))
    print(f"distilling on clean crops from {args.distill_from} (weight {args.distill})", flush=True)
    return net.to(memory_format=torch.channels_last).eval().requires_grad_(False)


def weights_entry_describe(encoder: str) -> str:
    from ..nets.imagenet import weights_entry

    return weights_entry(encoder).describe()


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path | None:
    """Train the router as ``args`` says; export to ``args.out`` when the run reaches its last step."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()
    roots = [Path(d) for d in (args.data or ["../shared/data"])]
    data = roots[0]  # training-time validation uses the first root (the main pack), as before
    decoder = json.loads(args.decoder) if args.decoder else None
    net = build_model(args.arch, args.encoder, decoder)
    if args.encoder_init == "imagenet" and not args.resume and not args.init:
        n = init_encoder_imagenet(net, args.encoder)
        print(f"encoder {args.encoder}: {n} ImageNet tensors loaded", flush=True)
    net = net.to(memory_format=torch.channels_last)
    mapping = args.input_mapping or ("gray_unit" if args.encoder_init == "imagenet" else "l_unit")

    masked = MaskedImages([], [], [])
    scenes: list[np.ndarray] = []
    cutouts = load_cutouts(data / "route" / "cutouts")
    per_root: dict[str, dict[str, Any]] = {}
    for origin, root in enumerate(roots):
        m = load_masked(root, "train", limit=args.limit, clean=not args.no_clean, origin=origin)
        sc = load_scenes(root, "train", limit=args.limit or args.scenes_per_root)
        limit_cut = args.limit or args.cutouts_per_category
        # extra real foregrounds: only 81 animal stamps exist, the masks give thousands more
        cuts = cutouts_from_masks(root, "train", categories=tuple(args.mask_cutouts), limit_per_category=limit_cut,
                                  origin=origin)
        per_root[str(root)] = {"masked": m.counts(), "scenes": len(sc), "mask_cutouts": len(cuts)}
        masked.extend(m)
        scenes += sc
        cutouts += cuts
    print(f"router data: {per_root}, {len(cutouts)} cut-outs in all ({time.time() - t_start:.0f} s)", flush=True)
    weights = json.loads(args.source_weights) if args.source_weights else None
    sampler = RouterSampler(
        masked, scenes, cutouts, args.crop, args.seed, args.composite_frac, tuple(args.scale),
        weights=weights, paste_range=tuple(args.paste_range), balanced=args.balanced_cutouts,
        main_share=json.loads(args.main_pack_share) if args.main_pack_share else None,
        degrade_frac=args.degrade,
        degrade_mix=args.degrade_mix, degrade_descreen=args.degrade_descreen, darken_people=args.darken_people,
        degrade_keep_clean=tuple(CLASS_NAMES.index(c) for c in args.degrade_keep_clean),
    )
    if args.init and not args.resume:
        _warm_start(net, Path(args.init))

    val_masked = load_masked(data, "val", limit=args.val_limit, clean=False)
    val_pairs = list(zip(val_masked.images, val_masked.masks, strict=True))
    rng_val = np.random.default_rng(0)  # the same old-print versions of the val masks at every validation
    val_old = [(degrade_rgb(rgb, rng_val), m) for rgb, m in val_pairs] if args.degrade > 0 else []
    val_comp = val_composites(data, n=max(8, args.val_limit), size=256, seed=0)
    router = net_router(net, args.input_size, input_mapping=mapping)
    to_input = INPUT_MAPPINGS[mapping]

    criterion = RouterLoss(args.dice, args.class_weights)
    teacher = _teacher(args, decoder) if args.distill_from else None

    def step_fn(step: int):
        L, labels, altered = sampler.batch_flags(args.batch_size)
        x = to_input(L).contiguous(memory_format=torch.channels_last)  # same as routing._LToUnit
        with loop.autocast_for(torch.device("cpu"), args.amp):
            logits = net(x)
        loss, ce = criterion(logits.float(), labels)
        logs = {"ce": ce.item()}
        clean = ~altered  # not degraded, not darkened: the frozen router's outputs there are the target
        if teacher is not None and clean.any():
            with torch.no_grad(), loop.autocast_for(torch.device("cpu"), args.amp):
                target = teacher(x[clean])
            kd = distillation_kl(logits[clean], target)
            loss = loss + args.distill * kd
            logs["kd"] = kd.item()
        return loss, args.batch_size, logs

    def validate() -> dict[str, float]:
        m = segmentation_scores(router, val_pairs)["miou"]
        c = segmentation_scores(router, val_comp)["miou"]
        old = {"miou_masks_degraded": segmentation_scores(router, val_old)["miou"]} if val_old else {}
        return {"err": 1.0 - (m + c) / 2, "miou_masks": m, "miou_composites": c, **old}

    cfg = loop.LoopConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, amp=args.amp,
        val_every=args.val_every, ckpt_every=args.val_every, warmup=min(150, max(1, args.steps // 10)),
        stop_at=args.stop_at, weight_decay=1e-4, ema=args.ema,
    )
    run_dir = Path(args.run_dir)
    if args.export_only:  # e.g. out of time: ship the last checkpoint of an unfinished run, say so in the config
        ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(loop.checkpoint_weights(ckpt))
        state = loop.TrainState(**ckpt["state"])
        print(f"exporting {run_dir}/checkpoint.pt at step {state.step} of {args.steps}")
    else:
        state = loop.train(net, run_dir, cfg, step_fn, validate, "err", (sampler.state, sampler.load_state),
                           resume=args.resume)
        if args.no_export or state.step < args.steps:
            return None
    if args.export_from == "best" and (run_dir / "best.pt").exists():
        net.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    net.eval()
    fp32 = validate()
    fp16 = dict(zip(("err", "m", "c"), _fp16_scores(net, args.input_size, val_pairs, val_comp, mapping), strict=True))
    use_fp16 = abs(fp16["m"] - fp32["miou_masks"]) < 0.002 and abs(fp16["c"] - fp32["miou_composites"]) < 0.002
    command = "python -m ensemble_color train router " + shlex.join(argv if argv is not None else sys.argv[3:])
    extra = {
        "input_size": args.input_size,
        "labels": list(CLASS_NAMES),
        "input": "L (CIELAB lightness, 0..100) mapped by input_mapping",
        "input_mapping": mapping,
        "encoder_init": weights_entry_describe(args.encoder) if args.encoder_init == "imagenet" else "none",
        "command": command,
        "recipe": "scripts/train_router.sh",
        "license": "weights: research use only (trained on LFW, CUB, ImageNet, UTKFace, CCP, CamVid, Kaggle-sourced "
                   "images; see the data packs)" + ("; encoder init: ImageNet EfficientNet-Lite, Apache-2.0"
                                                   if args.encoder_init == "imagenet" else ""),
        "data": {
            "roots": per_root,
            "train_masked": masked.counts(),
            "train_scenes": len(scenes),
            "cutouts": len(cutouts),
            "composite_frac": args.composite_frac,
            "mask_cutouts": list(args.mask_cutouts),
            "paste_range": list(args.paste_range),
            "balanced_cutouts": args.balanced_cutouts,
            "clean_masks": not args.no_clean,
            "degraded_share": args.degrade,
            "degrade_mix": sampler.degrade_mix if args.degrade > 0 else None,
            "degrade_descreen": args.degrade_descreen,
            "darken_people": args.darken_people,
            "degrade_keep_clean": list(args.degrade_keep_clean),
        },
        "training": {
            "steps": state.step,
            "planned_steps": args.steps,
            "exported": args.export_from,
            "best_step": state.best_step,
            "batch_size": args.batch_size,
            "crop": args.crop,
            "lr": args.lr,
            "init": args.init,
            "distill_from": args.distill_from,
            "distill": args.distill if args.distill_from else None,
            "dice": args.dice,
            "class_weights": args.class_weights,
            "weight_ema": args.ema or None,
            "bf16_autocast": args.amp,
            "images_per_second": round(loop.train_throughput(state), 1),
            "train_seconds": round(state.seconds),
            "wall_seconds": round(time.time() - t_start),
        },
        "training_val_subset": {
            "val_masks_per_category": args.val_limit,
            "val_composites": len(val_comp),
            "miou_masks_fp32": round(fp32["miou_masks"], 4),
            "miou_composites_fp32": round(fp32["miou_composites"], 4),
            "miou_masks_fp16": round(fp16["m"], 4),
            "miou_composites_fp16": round(fp16["c"], 4),
            "weights_dtype": "float16" if use_fp16 else "float32",
        },
    }
    folder = export_router(net, args.out, extra, fp16=use_fp16)
    print(f"exported {folder} ({'fp16' if use_fp16 else 'fp32'} weights)")
    return folder


def main(argv: list[str] | None = None) -> None:
    """``python -m ensemble_color.train.router [train|evaluate] ...``, the same as the CLI's ``train router`` and
    ``evaluate router``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        parser = argparse.ArgumentParser(prog="ensemble_color evaluate router")
        router_eval.add_eval_arguments(parser)
        router_eval.run_eval(parser.parse_args(argv[1:]), argv[1:])
        return
    argv = argv[1:] if argv[:1] == ["train"] else argv
    parser = argparse.ArgumentParser(prog="ensemble_color train router", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv), argv)


if __name__ == "__main__":
    main()
