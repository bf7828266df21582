"""Train, export and evaluate the generalist expert (``multihead-unet``, issue 5).

Training data: the union of the four categories' train splits of the data pack plus copy-paste
composites (train cut-outs on train scenes), mixed by fixed probabilities (``--mix``) so the 5k
faces do not drown the 600 scenes the generalist mostly colours. Targets per crop:

* soft-encoding of ab at 1/4 resolution (5 nearest of the 313 bins, Gaussian sigma 5) with
  class-rebalancing weights from the empirical bin distribution of *these* training batches;
* ab for the regression head (full resolution);
* route-class segmentation from ``route/masks`` (255 = ignore; scenes are all background except the
  ``scenes_with_people.csv`` images, which are ignored; composites carry their own labels);
* scene context: the source category (or a CSV of soft labels), top-k truncated and label-smoothed;
  a composite's label is the pixel share of each category in it.

Loss: ``a1 * rebalanced soft CE + a2 * MSE(reg) + a3 * CE(scene) + a4 * soft Dice(seg)``.

Run ``python -m ensemble_color.train.generalist --help`` (training) or ``... --eval`` (the results
table of the model card). The CLI wiring for ``python -m ensemble_color train generalist`` uses
:func:`add_arguments` / :func:`run`, and :func:`add_eval_arguments` / :func:`run_eval`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import metrics, softencode
from ..color import AB_RANGE, join_l_ab, rgb_to_lab
from ..io import atomic_write_bytes
from ..nets import create_model
from ..nets.multihead_unet import DECODES, ROUTE_CLASSES
from ..plugins import export_expert
from . import loop
from .composites import IGNORE, Cutout, load_cutouts, make_composite, scene_paths, val_composites
from .data import ImageCache, center_crop_batch, list_images, random_resized_crop
from .roots import counts_by_root

CATEGORIES = ("scenes", "faces", "birds", "animals")
#: categories a training run may read (``people`` exists in the extension pack only; its photos count as faces
#: for the scene-context head, whose classes stay the four source categories)
TRAIN_CATEGORIES = (*CATEGORIES, "people")
#: route label (0..3) -> scene class index (scenes, faces, birds, animals): what a composite pixel shows
LABEL_TO_CATEGORY = (0, 1, 2, 3)
DEFAULT_MIX = "scenes=0.3,composites=0.25,faces=0.15,birds=0.15,animals=0.15"
PROG = "python -m ensemble_color.train.generalist"


# ----------------------------------------------------------------------------------------- data
def _load_mask(data_root: Path, image_path: Path, category: str, split: str, shape: tuple[int, int],
               people: set[str]) -> np.ndarray:
    """Route-label mask for one image at ``shape`` (nearest resize if the image was downscaled)."""
    rel = str(image_path.relative_to(data_root)) if image_path.is_relative_to(data_root) else ""
    if category == "scenes":
        return np.full(shape, IGNORE if rel in people else 0, np.uint8)
    mpath = data_root / "route" / "masks" / category / split / (image_path.stem + ".png")
    if not mpath.exists():
        return np.full(shape, IGNORE, np.uint8)
    with Image.open(mpath) as im:
        if im.size != (shape[1], shape[0]):
            im = im.resize((shape[1], shape[0]), Image.NEAREST)
        return np.array(im, dtype=np.uint8)


def _people_list(data_root: Path) -> set[str]:
    path = data_root / "route" / "scenes_with_people.csv"
    if not path.exists():
        return set()
    with path.open() as f:
        return {row["image"] for row in csv.DictReader(f)}


def load_category(data_root: Path, category: str, split: str, max_side: int, limit: int | None,
                  with_masks: bool = True) -> ImageCache:
    """One category's split as an :class:`ImageCache` with route masks attached."""
    cache = ImageCache.from_folders([data_root / "colorize" / category / split], max_side, limit,
                                    desc=f"{category} {split}")
    if with_masks:
        people = _people_list(data_root)
        cache.masks = [_load_mask(data_root, p, category, split, im.shape[:2], people)
                       for p, im in zip(cache.paths, cache.images, strict=True)]
    return cache


def read_scene_csv(path: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """CSV of soft scene labels: first column ``path`` (relative to the data root), one column per class."""
    with Path(path).open() as f:
        reader = csv.reader(f)
        header = next(reader)
        classes = header[1:]
        rows = {r[0]: np.array([float(x) for x in r[1:]], np.float32) for r in reader if r}
    return classes, rows


def smooth_scene_label(p: np.ndarray, k: int, eps: float) -> np.ndarray:
    """Top-k label smoothing: keep the k largest entries, renormalise, mix with eps x uniform."""
    p = np.asarray(p, np.float32)
    keep = np.argsort(-p, kind="stable")[:k]
    top = np.zeros_like(p)
    top[keep] = p[keep]
    top = top / max(top.sum(), 1e-8)
    return (1 - eps) * top + eps / len(p)


class GeneralistSampler:
    """Seeded, resumable batches (RGB, seg labels, scene targets) from categories + composites."""

    def __init__(self, caches: dict[str, ImageCache], cutouts: list[Cutout], composite_scenes: list[np.ndarray],
                 mix: dict[str, float], crop: int, seed: int, scale: tuple[float, float],
                 scene_labels: dict[str, np.ndarray] | None, n_scene: int, topk: int, eps: float,
                 data_root: Path) -> None:
        self.caches, self.cutouts, self.composite_scenes = caches, cutouts, composite_scenes
        sources = [s for s in mix if mix[s] > 0 and (s in caches or (s == "composites" and cutouts
                                                                        and composite_scenes))]
        if not sources:
            raise ValueError("no training source left (check --mix and the data folder)")
        probs = np.array([mix[s] for s in sources], np.float64)
        self.sources, self.probs = sources, probs / probs.sum()
        self.crop, self.scale, self.topk, self.eps = crop, scale, topk, eps
        self.scene_labels, self.n_scene, self.data_root = scene_labels, n_scene, data_root
        self.rng = np.random.default_rng(seed)

    def _scene_target(self, category: str, path: Path) -> tuple[np.ndarray, float]:
        if self.scene_labels is not None:
            key = str(path.relative_to(self.data_root)) if path.is_relative_to(self.data_root) else str(path)
            if key not in self.scene_labels:
                return np.full(self.n_scene, 1.0 / self.n_scene, np.float32), 0.0
            return smooth_scene_label(self.scene_labels[key], self.topk, self.eps), 1.0
        onehot = np.zeros(self.n_scene, np.float32)
        onehot[CATEGORIES.index("faces" if category == "people" else category)] = 1.0
        return smooth_scene_label(onehot, self.topk, self.eps), 1.0

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, float]:
        source = self.sources[int(self.rng.choice(len(self.sources), p=self.probs))]
        if source == "composites":
            scene = self.composite_scenes[int(self.rng.integers(len(self.composite_scenes)))]
            rgb, labels = make_composite(scene, self.cutouts, self.rng, self.crop)
            valid = labels[labels != IGNORE]
            share = np.bincount(valid, minlength=4)[:4].astype(np.float32) if valid.size else np.ones(4, np.float32)
            target = np.zeros(self.n_scene, np.float32)
            if self.scene_labels is None:
                for label, n in enumerate(share):
                    target[LABEL_TO_CATEGORY[label]] += n
                target = smooth_scene_label(target / target.sum(), self.topk, self.eps)
                weight = 1.0
            else:
                weight = 0.0  # a CSV's classes say nothing about a synthetic image
            t = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
            return t, torch.from_numpy(labels), target, weight
        cache = self.caches[source]
        i = int(self.rng.integers(len(cache)))
        rgb, mask = random_resized_crop(cache.images[i], self.crop, self.rng, self.scale, cache.masks[i])
        if mask is None:
            mask = torch.full((self.crop, self.crop), IGNORE, dtype=torch.uint8)
        target, weight = self._scene_target(source, cache.paths[i])
        return rgb, mask, target, weight

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        items = [self.sample() for _ in range(n)]
        return {"rgb": torch.stack([x[0] for x in items]), "seg": torch.stack([x[1] for x in items]).long(),
                "scene": torch.from_numpy(np.stack([x[2] for x in items])),
                "scene_w": torch.tensor([x[3] for x in items])}

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)


# ----------------------------------------------------------------------------------------- loss
def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore: int = IGNORE) -> torch.Tensor:
    """1 - mean over classes of the soft Dice (batch-pooled), ignoring ``ignore`` pixels."""
    probs = torch.softmax(logits.float(), 1)
    valid = (target != ignore).unsqueeze(1).float()
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * onehot * valid).sum((0, 2, 3))
    denom = (probs * valid).sum((0, 2, 3)) + (onehot * valid).sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()


def generalist_loss(model: torch.nn.Module, heads: dict[str, torch.Tensor], ab: torch.Tensor,
                    seg: torch.Tensor | None, scene: torch.Tensor | None, scene_w: torch.Tensor | None,
                    alphas: tuple[float, float, float, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """The four-term loss; returns (total, per-term floats for the log)."""
    a1, a2, a3, a4 = alphas
    soft = heads["soft"].float()
    ab4 = F.adaptive_avg_pool2d(ab.float(), soft.shape[-2:])
    q = softencode.soft_encode(ab4, model.ab_bins)
    w = model.bin_weights[q.argmax(1)]
    ce = (-(q * torch.log_softmax(soft, 1)).sum(1) * w).mean()
    mse = ((heads["reg"].float() - ab.float()) / AB_RANGE).pow(2).mean()
    total = a1 * ce + a2 * mse
    parts = {"ce": ce.item(), "mse": mse.item()}
    if scene is not None and a3 > 0:
        per = -(scene * torch.log_softmax(heads["scene"].float(), 1)).sum(1)
        sce = (per * scene_w).sum() / scene_w.sum().clamp_min(1.0)
        total = total + a3 * sce
        parts["scene"] = sce.item()
    if seg is not None and a4 > 0:
        seg_small = seg[:, 1::4, 1::4] if seg.shape[-1] != heads["seg"].shape[-1] else seg
        dice = soft_dice_loss(heads["seg"], seg_small[..., :heads["seg"].shape[-2], :heads["seg"].shape[-1]])
        total = total + a4 * dice
        parts["dice"] = dice.item()
    return total, parts


# ------------------------------------------------------------------------------------- training
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``train generalist``."""
    p.add_argument("--data", "--data-root", dest="data_root", action="append", default=None,
                   help="data root (colorize/, route/); repeat for several (default ../shared/data)")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=TRAIN_CATEGORIES)
    p.add_argument("--mix", default=DEFAULT_MIX, help="sampling probability per source (categories, composites)")
    p.add_argument("--scene-csv", default=None, help="CSV of soft scene labels (path,<class>...); "
                   "default: the 4 source categories")
    p.add_argument("--scene-topk", type=int, default=2)
    p.add_argument("--scene-eps", type=float, default=0.1, help="label smoothing of scene targets")
    p.add_argument("--alphas", type=float, nargs=4, default=(1.0, 10.0, 0.1, 0.5),
                   metavar=("CE", "MSE", "SCENE", "DICE"), help="loss weights a1..a4")
    p.add_argument("--widths", type=int, nargs=4, default=(32, 64, 128, 256))
    p.add_argument("--decode", default="soft", choices=DECODES, help="default decoding stored in the plugin")
    p.add_argument("--T", type=float, default=softencode.DEFAULT_T, help="annealed-mean temperature")
    p.add_argument("--blend-w", type=float, default=0.5, help="soft share of the 'blend' decode")
    p.add_argument("--rebalance-lambda", type=float, default=0.5)
    p.add_argument("--prior-batches", type=int, default=40, help="batches used for the empirical bin prior")
    p.add_argument("--out", default="experts", help="plugin folder to export into")
    p.add_argument("--name", default="generalist")
    p.add_argument("--run-dir", default="runs/generalist")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--scale", type=float, nargs=2, default=(0.3, 1.0))
    p.add_argument("--max-side", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-per-category", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0 = leave default). On 2 shared cores 1 thread measured 6x faster")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--limit", type=int, default=None, help="images per category (tests)")
    p.add_argument("--no-export", action="store_true")


def _parse_mix(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        if key.strip() not in (*TRAIN_CATEGORIES, "composites"):
            raise ValueError(f"--mix: unknown source {key!r}")
        out[key.strip()] = float(val)
    return out


def build_model(args: argparse.Namespace, n_scene: int) -> torch.nn.Module:
    return create_model("multihead-unet", **model_config(args, n_scene))


def model_config(args: argparse.Namespace, n_scene: int) -> dict[str, Any]:
    """Builder kwargs, as stored in ``expert.json`` ``config``."""
    return {"widths": list(args.widths), "n_scene_classes": n_scene, "decode": args.decode, "T": args.T,
            "blend_w": args.blend_w, "input_size": args.crop}


def compute_prior(sampler: GeneralistSampler, batches: int, batch_size: int, bins: torch.Tensor,
                  seed: int) -> torch.Tensor:
    """Empirical bin distribution of training batches (1/4-res ab, as the loss sees it).

    Uses a copy of the sampler's generator on another seed, so the training stream is unchanged.
    """
    saved = sampler.state()
    sampler.rng = np.random.default_rng(seed + 12345)
    counts = torch.zeros(bins.shape[0], dtype=torch.float64)
    for _ in range(batches):
        ab = rgb_to_lab(sampler.batch(batch_size)["rgb"])[:, 1:]
        ab4 = F.avg_pool2d(ab, 4)
        counts += torch.bincount(softencode.nearest_bin(ab4, bins).flatten(), minlength=bins.shape[0]).double()
    sampler.load_state(saved)
    return (counts / counts.sum()).float()


def _val_batch(data_root: Path, categories: list[str], per_cat: int, max_side: int, crop: int) -> torch.Tensor:
    """Fixed Lab validation batch: evenly spaced val images of each category, centre crops."""
    labs = []
    for cat in categories:
        paths = list_images(data_root / "colorize" / cat / "val")
        if not paths:
            continue
        idx = np.linspace(0, len(paths) - 1, min(per_cat, len(paths))).round().astype(int)
        cache = ImageCache.from_folders([paths[i] for i in sorted(set(idx))], max_side, desc=f"{cat} val")
        labs.append(rgb_to_lab(center_crop_batch(cache.images, crop)))
    return torch.cat(labs)


def run(args: argparse.Namespace, argv: list[str] | None = None, prog: str = "python -m ensemble_color train "
        "generalist") -> Path | None:
    """Train (resumably) and export the generalist plugin; returns the plugin folder."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    amp = loop.cpu_has_bf16() and not args.no_amp
    t_start = time.time()
    roots = [Path(r) for r in (args.data_root or ["../shared/data"])]
    data_root = roots[0]  # scene-label CSV keys and the route cut-outs are relative to the first root
    mix = _parse_mix(args.mix)
    scene_labels, scene_classes = None, list(CATEGORIES)
    if args.scene_csv:
        scene_classes, scene_labels = read_scene_csv(args.scene_csv)
    holding = {c: [r for r in roots if list_images(r / "colorize" / c / "train")]  # each folder listed once here
               for c in args.categories if mix.get(c, 0) > 0}
    caches = {c: ImageCache.concat([load_category(r, c, "train", args.max_side, args.limit) for r in rs])
              for c, rs in holding.items() if rs}
    cut_root = data_root / "route" / "cutouts"
    cutouts = load_cutouts(cut_root) if mix.get("composites", 0) > 0 and list_images(cut_root) else []
    comp_scenes: list[np.ndarray] = []
    if cutouts and "scenes" in caches:
        allowed = {str(p) for r in roots for p in scene_paths(r, "train")}
        comp_scenes = [im for im, p in zip(caches["scenes"].images, caches["scenes"].paths, strict=True)
                       if str(p) in allowed]
    sampler = GeneralistSampler(caches, cutouts, comp_scenes, mix, args.crop, args.seed, tuple(args.scale),
                                scene_labels, len(scene_classes), args.scene_topk, args.scene_eps, data_root)
    model = build_model(args, len(scene_classes))
    run_dir = Path(args.run_dir)
    if not (args.resume and (run_dir / "checkpoint.pt").exists()):
        prior = compute_prior(sampler, args.prior_batches, args.batch_size, model.ab_bins, args.seed)
        model.bin_prior.copy_(prior)
        model.bin_weights.copy_(softencode.rebalancing_weights(prior, model.ab_bins, args.rebalance_lambda))
    model = model.to(memory_format=torch.channels_last)
    val_lab = torch.cat([_val_batch(r, list(caches), args.val_per_category, args.max_side, args.crop) for r in roots])

    def step_fn(step: int):
        b = sampler.batch(args.batch_size)
        lab = rgb_to_lab(b["rgb"])
        L = lab[:, :1].contiguous(memory_format=torch.channels_last)
        with loop.autocast_for(torch.device("cpu"), amp):
            heads = model.forward_heads(L)
        loss, parts = generalist_loss(model, heads, lab[:, 1:], b["seg"], b["scene"], b["scene_w"],
                                      tuple(args.alphas))
        return loss, args.batch_size, parts

    def validate() -> dict[str, float]:
        out: dict[str, list[torch.Tensor]] = {"loss": [], "l2ab_soft": [], "l2ab_reg": []}
        for chunk in val_lab.split(64):
            L, ab = chunk[:, :1].contiguous(memory_format=torch.channels_last), chunk[:, 1:]
            with loop.autocast_for(torch.device("cpu"), amp):
                heads = model.forward_heads(L)
            loss, _ = generalist_loss(model, heads, ab, None, None, None, tuple(args.alphas))
            out["loss"].append(loss.detach().reshape(1).repeat(len(chunk)))
            out["l2ab_soft"].append(metrics.l2ab(model.decode_heads(heads, "soft"), ab))
            out["l2ab_reg"].append(metrics.l2ab(model.decode_heads(heads, "regression"), ab))
        return {k: torch.cat(v).float().mean().item() for k, v in out.items()}

    cfg = loop.LoopConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, amp=amp,
                          val_every=args.val_every, ckpt_every=min(args.val_every, 100),
                          warmup=min(100, max(1, args.steps // 10)))
    state = loop.train(model, run_dir, cfg, step_fn, validate, "loss", (sampler.state, sampler.load_state),
                       resume=args.resume)
    if args.no_export:
        return None
    if (run_dir / "best.pt").exists():
        model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model.eval()
    with torch.inference_mode():
        final = validate()
    command = f"{prog} " + shlex.join(argv if argv is not None else sys.argv[1:])
    manifest = {
        "name": args.name,
        "architecture": "multihead-unet",
        "config": model_config(args, len(scene_classes)),
        "routes": [],
        "fallback": True,
        "input_size": args.crop,
        "version": "1.0",
        "license": "weights: research use only (trained on LFW, CUB-200-2011 and ImageNet images, "
                   "non-commercial research terms; see data and README.md)",
        "data": {"roots": [str(r) for r in roots], "train": {c: caches[c].summary()["images"] for c in caches},
                 "train_by_root": counts_by_root([p for c in caches.values() for p in c.paths]),
                 "composites": {"cutouts": len(cutouts), "scenes": len(comp_scenes)}, "mix": mix,
                 "scene_classes": scene_classes, "scene_csv": args.scene_csv},
        "command": command,
        "training": {"steps": state.step, "best_step": state.best_step, "batch_size": args.batch_size,
                     "crop": args.crop, "alphas": list(args.alphas), "bf16_autocast": amp,
                     "threads": torch.get_num_threads(),
                     "images_per_second": round(loop.train_throughput(state), 1),
                     "train_seconds": round(state.seconds), "wall_seconds": round(time.time() - t_start),
                     "rebalance_lambda": args.rebalance_lambda, "prior_batches": args.prior_batches},
        "metrics": {"val_center_crops": {k: round(v, 4) for k, v in final.items()}},
    }
    folder = export_expert(model, Path(args.out) / args.name, manifest, fp16=True)
    print(f"exported {folder}")
    return folder


# ----------------------------------------------------------------------------------- evaluation
def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``evaluate generalist``."""
    p.add_argument("--expert", default="experts/generalist", help="the generalist plugin folder")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=CATEGORIES)
    p.add_argument("--composites", type=int, default=100, help="seeded val composites (0 = skip)")
    p.add_argument("--composite-size", type=int, default=256)
    p.add_argument("--max-side", type=int, default=256, help="val images: short side capped at this")
    p.add_argument("--limit", type=int, default=None, help="val images per category (default: all)")
    p.add_argument("--decodes", nargs="+", default=["soft", "regression", "blend", "mode", "mean"],
                   choices=DECODES)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set-default", action="store_true",
                   help="write the measured best decode (and the metrics) into the plugin's expert.json")
    p.add_argument("--no-router", action="store_true", help="skip the trained router's IoU (router/)")
    p.add_argument("--out", default=None, help="results JSON (default: <expert>/results.json)")


def _pad16(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")


def _iou_update(pred: torch.Tensor, mask: np.ndarray, inter: torch.Tensor, union: torch.Tensor) -> None:
    t = torch.from_numpy(mask).long()
    valid = t != IGNORE
    for c in range(len(ROUTE_CLASSES)):
        p_c, t_c = (pred == c) & valid, (t == c) & valid
        inter[c] += (p_c & t_c).sum()
        union[c] += (p_c | t_c).sum()


def _eval_set(model: torch.nn.Module, images: list[np.ndarray], masks: list[np.ndarray | None],
              decodes: list[str], router: torch.nn.Module | None = None) -> dict[str, Any]:
    """Per-method means of L2ab, AuC, colourfulness and |colourfulness - GT| over ``images``.

    Also the segmentation head's IoU per route class against the masks (and, given ``router``, the
    trained router's IoU on the same pixels, so the two can be compared).
    """
    rows: dict[str, dict[str, list[float]]] = {m: {"l2ab": [], "auc": [], "cf": [], "cf_gap": []}
                                               for m in ["gray", *decodes]}
    gt_cf: list[float] = []
    inter, union = torch.zeros(len(ROUTE_CLASSES)), torch.zeros(len(ROUTE_CLASSES))
    r_inter, r_union = torch.zeros(len(ROUTE_CLASSES)), torch.zeros(len(ROUTE_CLASSES))
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    for idx_all in by_shape.values():
        for start in range(0, len(idx_all), 16):
            idx = idx_all[start:start + 16]
            rgb = torch.stack([torch.from_numpy(images[i]).permute(2, 0, 1) for i in idx]).float() / 255
            lab = rgb_to_lab(rgb)
            L, ab = lab[:, :1], lab[:, 1:]
            h, w = L.shape[-2:]
            with torch.inference_mode(), loop.autocast_for(torch.device("cpu"), loop.cpu_has_bf16()):
                heads = model.forward_heads(_pad16(L).contiguous(memory_format=torch.channels_last))
            heads = {k: v.float() for k, v in heads.items()}
            cf_true = metrics.colorfulness(rgb)
            gt_cf += cf_true.tolist()
            preds = {"gray": torch.zeros_like(ab)}
            for d in decodes:
                preds[d] = model.decode_heads(heads, d)[..., :h, :w]
            for name, pred in preds.items():
                err = metrics.ab_error(pred, ab)
                cf = metrics.colorfulness(join_l_ab(L, pred))
                rows[name]["l2ab"] += err.flatten(1).mean(1).tolist()
                rows[name]["auc"] += metrics.auc(err).tolist()
                rows[name]["cf"] += cf.tolist()
                rows[name]["cf_gap"] += (cf - cf_true).abs().tolist()
            seg = F.interpolate(heads["seg"], size=_pad16(L).shape[-2:], mode="bilinear",
                                align_corners=False)[..., :h, :w].argmax(1)
            r_seg = None
            if router is not None and any(masks[i] is not None for i in idx):
                with torch.inference_mode():
                    r_seg = router(L).argmax(1)
            for j, i in enumerate(idx):
                if masks[i] is None:
                    continue
                _iou_update(seg[j], masks[i], inter, union)
                if r_seg is not None:
                    _iou_update(r_seg[j], masks[i], r_inter, r_union)
    out: dict[str, Any] = {"images": len(images), "gt_colorfulness": float(np.mean(gt_cf))}
    out["methods"] = {m: {k: float(np.mean(v)) for k, v in r.items()} for m, r in rows.items()}
    out["seg_iou"] = {c: (float(inter[i] / union[i]) if union[i] > 0 else None) for i, c in enumerate(ROUTE_CLASSES)}
    if router is not None:
        out["router_seg_iou"] = {c: (float(r_inter[i] / r_union[i]) if r_union[i] > 0 else None)
                                 for i, c in enumerate(ROUTE_CLASSES)}
    return out


def evaluate(expert: str | Path, data_root: str | Path, categories: list[str] | tuple[str, ...] = CATEGORIES,
             n_composites: int = 100, composite_size: int = 256, max_side: int = 256,
             limit: int | None = None, decodes: list[str] | tuple[str, ...] = ("soft", "regression", "blend"),
             compare_router: bool = True) -> dict[str, Any]:
    """The model card's table: gray baseline vs the generalist's decodes on every val set + composites."""
    from ..plugins import validate_folder
    from ..routing import RoutingTable, load_router, router_dir

    table = RoutingTable.load()
    spec = validate_folder(Path(expert), table.known_classes())
    model = spec.build().to(memory_format=torch.channels_last)
    router = None
    if compare_router and (router_dir() / "model.safetensors").exists():
        router = load_router("embedded", table).eval()
    data_root = Path(data_root)
    t0 = time.time()
    results: dict[str, Any] = {"expert": str(expert), "config": spec.config, "sets": {},
                               "router": router.name if router is not None else None}
    for cat in categories:
        cache = load_category(data_root, cat, "val", max_side, limit)
        results["sets"][cat] = _eval_set(model, cache.images, cache.masks, list(decodes), router)
        print(f"{cat}: {len(cache)} images evaluated ({time.time() - t0:.0f} s)")
    if n_composites > 0:
        comps = val_composites(data_root, n=n_composites, size=composite_size, seed=0)
        results["sets"]["composites"] = _eval_set(model, [c[0] for c in comps], [c[1] for c in comps],
                                                  list(decodes), router)
    results["seconds"] = round(time.time() - t0, 1)
    if {"soft", "regression"} <= set(decodes):
        results["chosen_decode"] = choose_decode(results)
        results["done_when"] = done_when(results, results["chosen_decode"])
    return results


def choose_decode(results: dict[str, Any]) -> str:
    """The default decode, by measurement: among the decodes that beat gray in L2ab *and* AuC on every
    set, the one whose colourfulness is closest to ground truth (mean over sets of the per-image gap);
    if none beats gray everywhere, the one with the lowest mean L2ab."""
    sets = list(results["sets"].values())
    decodes = [m for m in sets[0]["methods"] if m != "gray"]

    def mean(m: str, key: str) -> float:
        return float(np.mean([s["methods"][m][key] for s in sets]))

    ok = [m for m in decodes if all(s["methods"][m]["l2ab"] < s["methods"]["gray"]["l2ab"]
                                    and s["methods"][m]["auc"] > s["methods"]["gray"]["auc"] for s in sets)]
    if ok:
        return min(ok, key=lambda m: mean(m, "cf_gap"))
    return min(decodes, key=lambda m: mean(m, "l2ab"))


def done_when(results: dict[str, Any], decode: str) -> dict[str, dict[str, bool]]:
    """The issue's acceptance checks per set: ``decode`` beats gray (L2ab, AuC); soft's colourfulness
    is closer to ground truth than regression's."""
    out = {}
    for name, s in results["sets"].items():
        m = s["methods"]
        out[name] = {"beats_gray_l2ab": bool(m[decode]["l2ab"] < m["gray"]["l2ab"]),
                     "beats_gray_auc": bool(m[decode]["auc"] > m["gray"]["auc"]),
                     "soft_cf_closer_than_regression": bool(m["soft"]["cf_gap"] < m["regression"]["cf_gap"])}
    return out


def results_markdown(results: dict[str, Any]) -> str:
    """The results table (markdown) for the model card."""
    lines = ["| set | images | method | L2ab ↓ | AuC ↑ | colourfulness (GT) | mean abs gap to GT ↓ |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for name, s in results["sets"].items():
        for m, r in s["methods"].items():
            lines.append(f"| {name} | {s['images']} | {m} | {r['l2ab']:.2f} | {r['auc']:.4f} | "
                         f"{r['cf']:.1f} ({s['gt_colorfulness']:.1f}) | {r['cf_gap']:.1f} |")
    lines += ["", "| set | " + " | ".join(f"IoU {c}" for c in ROUTE_CLASSES) + " |",
              "|---|" + "---:|" * len(ROUTE_CLASSES)]
    for name, s in results["sets"].items():
        for who, key in (("generalist seg head", "seg_iou"), (f"router {results.get('router')}", "router_seg_iou")):
            if key in s:
                vals = [("—" if v is None else f"{v:.3f}") for v in s[key].values()]
                lines.append(f"| {name} ({who}) | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def run_eval(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Evaluate, write ``results.json`` + ``results.md`` next to the plugin, print the table."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    results = evaluate(args.expert, args.data_root, args.categories, args.composites, args.composite_size,
                       args.max_side, args.limit, args.decodes, not args.no_router)
    results["command"] = f"{PROG} --eval " + shlex.join(argv if argv is not None else sys.argv[2:])
    out = Path(args.out) if args.out else Path(args.expert) / "results.json"
    atomic_write_bytes(out, (json.dumps(results, indent=2) + "\n").encode())
    table = results_markdown(results)
    atomic_write_bytes(out.with_suffix(".md"), table.encode())
    print(table)
    print("chosen decode:", results.get("chosen_decode"), "done-when:", results.get("done_when"))
    if args.set_default and "chosen_decode" in results:
        manifest_path = Path(args.expert) / "expert.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["config"]["decode"] = results["chosen_decode"]
        manifest["metrics"]["evaluation"] = {
            name: {m: {k: round(v, 4) for k, v in r.items()} for m, r in s["methods"].items()}
            for name, s in results["sets"].items()}
        manifest["metrics"]["default_decode_rule"] = choose_decode.__doc__.split("\n")[0].strip()
        manifest["metrics"]["evaluation_command"] = results["command"]
        atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
        print(f"{manifest_path}: config.decode = {results['chosen_decode']!r}")
    return results


def benchmark(widths: tuple[int, ...] = (32, 64, 128, 256), batch: int = 32, crop: int = 128, steps: int = 6,
              threads: int = 0, amp: bool = True) -> dict[str, float]:
    """Training-step throughput (forward + backward + AdamW, all heads, bf16 + channels-last), img/s.

    Random inputs: measures the network alone, not batch making. The first step is warm-up.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    model = create_model("multihead-unet", widths=tuple(widths)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    L = (torch.rand(batch, 1, crop, crop) * 100).contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with loop.autocast_for(torch.device("cpu"), amp and loop.cpu_has_bf16()):
            heads = model.forward_heads(L)
        loss = sum(v.float().mean() for v in heads.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    n = sum(p.numel() for p in model.parameters())
    return {"params_M": round(n / 1e6, 3), "threads": torch.get_num_threads(),
            "img_per_s": round(batch * (len(times) - 1) / sum(times[1:]), 1)}


def main(argv: list[str] | None = None) -> int:
    """``python -m ensemble_color.train.generalist [--eval | --bench] ...`` (until the main CLI is wired)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--bench"]:
        p = argparse.ArgumentParser(prog=f"{PROG} --bench", description="Training-step throughput.")
        p.add_argument("--widths", type=int, nargs=4, default=(32, 64, 128, 256))
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--threads", type=int, default=0)
        a = p.parse_args(argv[1:])
        print(json.dumps(benchmark(tuple(a.widths), a.batch_size, threads=a.threads)))
        return 0
    if argv[:1] == ["--eval"]:
        p = argparse.ArgumentParser(prog=f"{PROG} --eval", description="Evaluate the generalist expert.")
        add_eval_arguments(p)
        run_eval(p.parse_args(argv[1:]), argv[1:])
        return 0
    p = argparse.ArgumentParser(prog=PROG, description="Train the generalist expert and export it.")
    add_arguments(p)
    run(p.parse_args(argv), argv, prog=PROG)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
