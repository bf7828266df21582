"""Train the embedded grayscale router (an smp segmenter on L only) and export it to ``router/``.

Why this shape:
* **L only**: the router runs on the photo the user gives us, which has no colour.
* **Data**: the teacher masks of ``route/masks`` (255 = ignore; rows the data README flags as unreliable
  are dropped via ``route/mask_stats.csv``), scenes photos as all-background (minus the listed ones
  with people), and copy-paste composites (``route/cutouts`` + train animal foregrounds on train
  scenes). The category photos each show one centred subject; composites teach small, several and
  off-centre subjects on real backgrounds.
* **Architecture**: FPN decoder (64/32 channels) on a timm MobileNetV3-Large encoder, from scratch
  (no hub downloads). It was the fastest of the candidates timed at 320 px on this CPU while keeping
  a real encoder; smp's default U-Net (resnet18) was ~5x slower (numbers in ``router/README.md``).
* **Loss**: cross-entropy + 0.5 Dice, both ignoring 255 (Dice keeps the small animal class from being
  drowned by background pixels).
* The final (not the best-on-val) checkpoint is exported by default, because the validation images
  are also what we report: choosing on them would flatter the reported numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from ..color import rgb_to_lab
from ..routing import INPUT_MAPPINGS, Router, RoutingTable, _LToUnit, load_smp_weights
from . import loop
from .composites import (
    IGNORE,
    LABELS,
    Cutout,
    balanced_picker,
    cutouts_from_masks,
    load_cutouts,
    make_composite,
    scene_paths,
    single_subject_composites,
    val_composites,
)
from .data import random_resized_crop, read_rgb

#: label index -> name, the data pack's convention (also the ``ensemble`` backend's labels)
CLASS_NAMES: tuple[str, ...] = tuple(sorted(LABELS, key=LABELS.get))
N_CLASSES = len(CLASS_NAMES)
MASK_CATEGORIES = ("faces", "people", "birds", "animals")

#: the chosen default (see the module docstring and router/README.md for the timings)
DEFAULT_ARCH = "FPN"
DEFAULT_ENCODER = "tu-mobilenetv3_large_100"
DEFAULT_DECODER = {"FPN": {"decoder_pyramid_channels": 64, "decoder_segmentation_channels": 32}}
#: share of each real (non-composite) source in a batch; the small sets are over-sampled on purpose
DEFAULT_SOURCE_WEIGHTS = {"faces": 0.2, "people": 0.15, "birds": 0.25, "animals": 0.25, "scenes": 0.15}
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


# ----------------------------------------------------------------------------------------------- data


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("L"), dtype=np.uint8)


def unreliable_masks(data_root: str | Path) -> set[str]:
    """Mask paths (relative to the data root) the data README advises against training on.

    Dropped: ``empty`` (whole mask 255: nothing to learn), fallback teachers (half of them are
    wrong or partial), and images where a human face was found (a person was cut out of an animal
    mask, so the rest of the mask is less trustworthy). ``full`` faces masks are kept: they are
    mostly right (big hair, several people).
    """
    path = Path(data_root) / "route" / "mask_stats.csv"
    if not path.exists():
        return set()
    bad = set()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if (
                row["status"] == "empty"
                or "fallback" in row["teacher"]
                or row.get("human_face", "0") not in ("0", "")
            ):
                bad.add(row["mask"])
    return bad


@dataclass
class MaskedImages:
    """Images with their label masks (uint8, same size), plus the category of each."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    categories: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> dict[str, int]:
        """Images per category, for the config (never the images themselves)."""
        return {c: self.categories.count(c) for c in dict.fromkeys(self.categories)}

    def extend(self, other: MaskedImages) -> MaskedImages:
        self.images += other.images
        self.masks += other.masks
        self.categories += other.categories
        return self


def load_masked(
    data_root: str | Path,
    split: str,
    categories: tuple[str, ...] = MASK_CATEGORIES,
    limit: int | None = None,
    clean: bool = True,
) -> MaskedImages:
    """``colorize/<cat>/<split>`` images + ``route/masks``; ``limit`` per category (evenly spaced).

    A category without masks in this root is skipped (the main pack has no ``people``, the extension
    pack no ``faces`` masks). With ``clean``, masks with under 1 % labelled pixels are dropped too: the
    extension pack marks "teacher found nothing" as all-ignore, which teaches nothing.
    """
    data_root = Path(data_root)
    bad = unreliable_masks(data_root) if clean else set()
    out = MaskedImages([], [], [])
    for cat in categories:
        masks = sorted((data_root / "route" / "masks" / cat / split).glob("*.png"))
        masks = [m for m in masks if str(m.relative_to(data_root)) not in bad]
        if limit is not None and len(masks) > limit:
            masks = [masks[i] for i in np.linspace(0, len(masks) - 1, limit).round().astype(int)]
        for m in masks:
            img = data_root / "colorize" / cat / split / (m.stem + ".jpg")
            if not img.exists():
                raise FileNotFoundError(f"{m}: its image {img} is missing")
            mask = _read_mask(m)
            if clean and (mask != IGNORE).mean() < 0.01:
                continue
            rgb = read_rgb(img)
            if rgb.shape[:2] != mask.shape:
                raise ValueError(f"{m}: mask size {mask.shape} differs from its image {rgb.shape[:2]}")
            out.images.append(rgb)
            out.masks.append(mask)
            out.categories.append(cat)
    return out


def load_scenes(
    data_root: str | Path, split: str, limit: int | None = None, max_short_side: int = 320
) -> list[np.ndarray]:
    """Scenes photos without listed people (all background), short side capped (they are up to 384 px).

    ``limit`` takes that many evenly spaced over the sorted files (the extension pack's 29k scenes are
    sorted by source, so the first ones would all be one source).
    """
    paths = scene_paths(data_root, split)
    if limit is not None and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    return [read_rgb(p, max_short_side) for p in paths]


class RouterSampler:
    """Seeded, resumable batches of (L, labels): real masked crops, scenes and composites.

    ``weights`` gives the share of each real source (faces/birds/animals/scenes) among the
    non-composite samples; the small animals set is over-sampled on purpose.
    """

    def __init__(
        self,
        masked: MaskedImages,
        scenes: list[np.ndarray],
        cutouts: list[Cutout],
        crop: int,
        seed: int,
        composite_frac: float = 0.5,
        scale: tuple[float, float] = (0.3, 1.0),
        weights: dict[str, float] | None = None,
        jitter: bool = True,
        paste_range: tuple[float, float] = (0.25, 0.7),
        balanced: bool = False,
    ) -> None:
        self.masked, self.scenes, self.cutouts = masked, scenes, cutouts
        self.crop, self.composite_frac, self.scale, self.jitter = crop, composite_frac, scale, jitter
        self.paste_range = paste_range
        self.pick = balanced_picker(cutouts) if balanced and cutouts else None
        self.rng = np.random.default_rng(seed)
        weights = weights or DEFAULT_SOURCE_WEIGHTS
        self.by_cat = {c: [i for i, k in enumerate(masked.categories) if k == c] for c in MASK_CATEGORIES}
        sources = [c for c in weights if (c == "scenes" and scenes) or self.by_cat.get(c)]
        if not sources:
            raise ValueError("no training data: no masked images and no scenes")
        p = np.array([weights[c] for c in sources], dtype=np.float64)
        self.sources, self.p = sources, p / p.sum()

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One (RGB (3, S, S) float in [0, 1], labels (S, S) uint8) training example."""
        rng, s = self.rng, self.crop
        if self.scenes and self.cutouts and rng.random() < self.composite_frac:
            scene = self.scenes[int(rng.integers(len(self.scenes)))]
            rgb, lab = make_composite(scene, self.cutouts, rng, s, size_range=self.paste_range, pick=self.pick)
            return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, torch.from_numpy(lab)
        src = self.sources[int(rng.choice(len(self.sources), p=self.p))]
        if src == "scenes":
            img = self.scenes[int(rng.integers(len(self.scenes)))]
            rgb, _ = random_resized_crop(img, s, rng, self.scale)
            return rgb, torch.zeros(s, s, dtype=torch.uint8)
        i = self.by_cat[src][int(rng.integers(len(self.by_cat[src])))]
        rgb, lab = random_resized_crop(self.masked.images[i], s, rng, self.scale, self.masked.masks[i])
        assert lab is not None
        return rgb, lab

    def _jitter_L(self, L: torch.Tensor) -> torch.Tensor:
        """Random gamma and contrast on L: old and scanned photos are darker, flatter or harsher."""
        n = L.shape[0]
        gamma = (
            torch.from_numpy(np.exp(self.rng.uniform(np.log(0.7), np.log(1.4), n))).float().view(n, 1, 1, 1)
        )
        contrast = torch.from_numpy(self.rng.uniform(0.7, 1.2, n)).float().view(n, 1, 1, 1)
        keep = torch.from_numpy(self.rng.random(n) < 0.5).view(n, 1, 1, 1)
        out = 100.0 * (L / 100.0).clamp_min(0).pow(gamma)
        mean = out.mean((2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean).clamp(0, 100)
        return torch.where(keep, L, out)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(L (B, 1, S, S) in Lab units, labels (B, S, S) int64 with 255 = ignore)."""
        rgbs, labs = zip(*(self.sample() for _ in range(batch_size)), strict=True)
        L = rgb_to_lab(torch.stack(rgbs))[:, :1]
        if self.jitter:
            L = self._jitter_L(L)
        return L, torch.stack(labs).long()

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)


# ----------------------------------------------------------------------------------------- metrics


def route_to_label(route_classes: tuple[str, ...]) -> torch.Tensor:
    """Index map router output channel -> data label (by class name; unknown classes -> background)."""
    return torch.tensor([LABELS.get(c, LABELS["background"]) for c in route_classes], dtype=torch.long)


@torch.inference_mode()
def route_probs(router: Router, rgb: np.ndarray) -> torch.Tensor:
    """(R, H, W) route probabilities for an RGB uint8 image through the full :class:`Router` (resize to its
    input size, softmax, routing table, resize back), so what is measured is what the pipeline uses."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    return router(rgb_to_lab(t)[:, :1])[0]


def predict_labels(router: Router, rgb: np.ndarray) -> np.ndarray:
    """The router's hard decision per pixel for an RGB uint8 image, as data labels (H, W) uint8."""
    idx = route_probs(router, rgb).argmax(0)
    return route_to_label(router.route_classes)[idx].numpy().astype(np.uint8)


class IoUCounter:
    """Accumulates per-class intersection and union over a dataset (ignore pixels excluded)."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        self.inter = np.zeros(n_classes, np.int64)
        self.union = np.zeros(n_classes, np.int64)
        self.pixels = 0

    def add(self, pred: np.ndarray, target: np.ndarray) -> None:
        valid = target != IGNORE
        p, t = pred[valid].astype(np.int64), target[valid].astype(np.int64)
        n = len(self.inter)
        cm = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
        tp = np.diag(cm)
        self.inter += tp
        self.union += cm.sum(0) + cm.sum(1) - tp
        self.pixels += int(valid.sum())

    def result(self) -> dict[str, Any]:
        """Per-class IoU (None for a class absent from both prediction and truth) and their mean."""
        iou = {
            name: (float(self.inter[i] / self.union[i]) if self.union[i] else None)
            for i, name in enumerate(CLASS_NAMES)
        }
        present = [v for v in iou.values() if v is not None]
        return {
            "miou": float(np.mean(present)) if present else float("nan"),
            "iou": iou,
            "pixels": self.pixels,
        }


def segmentation_scores(router: Router, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Dataset-level per-class IoU and mIoU of ``router`` on (RGB uint8, labels uint8) pairs."""
    counter = IoUCounter()
    for rgb, labels in pairs:
        counter.add(predict_labels(router, rgb), labels)
    return counter.result()


def routed_fraction(router: Router, rgb: np.ndarray, region: np.ndarray, route: str) -> float:
    """Mean probability of ``route`` inside the boolean ``region`` (what the compositor would blend)."""
    return float(route_probs(router, rgb)[router.route_classes.index(route)].numpy()[region].mean())


def pasted_recall(router: Router, pairs: list[tuple[np.ndarray, np.ndarray]], min_area: float = 0.01
                  ) -> dict[str, dict[str, float]]:
    """Per subject class: of the composites where it covers >= ``min_area`` of the image, the share whose
    pasted region gets more than half of its probability routed to that class (what the pasted-bird
    test asks of a handful of them), and the mean routed fraction."""
    fractions: dict[str, list[float]] = {}
    subjects = [name for name in CLASS_NAMES[1:] if name in router.route_classes]
    for rgb, labels in pairs:
        present = [(name, labels == LABELS[name]) for name in subjects]
        present = [(name, region) for name, region in present if region.mean() >= min_area]
        if not present:
            continue
        probs = route_probs(router, rgb).numpy()  # one router pass per composite, whatever it shows
        for name, region in present:
            fractions.setdefault(name, []).append(float(probs[router.route_classes.index(name)][region].mean()))
    return {k: {"composites": len(v), "share_over_half": float(np.mean(np.array(v) > 0.5)),
                "mean_fraction": float(np.mean(v))} for k, v in fractions.items()}


def single_subject_sets(data_root: str | Path, n: int = 60, size: int = 256, seed: int = 0
                        ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per mask category, ``n`` "one clean subject pasted on a val scene" images (built once, scored by any
    number of routers with :func:`single_subject_recall`)."""
    bad = unreliable_masks(data_root)
    return {category: single_subject_composites(data_root, category, n=n, size=size, seed=seed, exclude=bad)
            for category in MASK_CATEGORIES}


def single_subject_recall(router: Router, sets: dict[str, list[tuple[np.ndarray, np.ndarray]]]
                          ) -> dict[str, dict[str, float]]:
    """:func:`pasted_recall` on each of :func:`single_subject_sets`' sets, keyed by route class."""
    out: dict[str, dict[str, float]] = {}
    for pairs in sets.values():
        out.update(pasted_recall(router, pairs))
    return out


def net_router(net: nn.Module, input_size: int = 320, table: RoutingTable | None = None,
               input_mapping: str = "l_unit") -> Router:
    """Wrap an in-memory 1-channel net exactly like :func:`routing.smp_router` does after loading."""
    table = table or RoutingTable.load()
    matrix, classes = table.matrix("ensemble")
    return Router("training", _LToUnit(net, input_mapping), matrix, classes, input_size=input_size)


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
    state = {
        k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in net.state_dict().items()
    }
    tmp = folder / ".model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(folder / "model.safetensors")
    config = smp_config(net)
    config["ensemble_color"] = {"backend": "ensemble", **extra}
    tmpc = folder / ".config.json.tmp"
    tmpc.write_text(json.dumps(config, indent=2) + "\n")
    tmpc.replace(folder / "config.json")
    return folder


def _fp16_roundtrip(net: nn.Module) -> nn.Module:
    import copy

    out = copy.deepcopy(net)
    out.load_state_dict(
        {k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    )
    return out.eval()


# ------------------------------------------------------------------------------------------- train


class RouterLoss:
    """Cross-entropy (optionally class-weighted) + ``dice_weight`` x multiclass Dice, 255 ignored.

    Class weights exist because the router underfits the rare, small classes: v3 routed more than half
    of a pasted bird to ``bird`` in only 36 of 59 *train* composites (``bench/router_fit.py``), so
    up-weighting bird and animal pixels trades some background precision for subject recall (measured:
    v4 in ``router/README.md``).
    """

    def __init__(self, dice_weight: float = 0.5, class_weights: list[float] | None = None) -> None:
        import segmentation_models_pytorch as smp

        self.dice_weight = dice_weight
        self.dice = smp.losses.DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE)
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total loss, cross-entropy part) for (B, C, H, W) logits and (B, H, W) integer labels."""
        ce = F.cross_entropy(logits, labels, weight=self.class_weights, ignore_index=IGNORE)
        if self.dice_weight > 0:
            return ce + self.dice_weight * self.dice(logits, labels), ce
        return ce, ce


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ensemble_color train router``."""
    p.add_argument("--data", action="append", default=None,
                   help="data pack root (colorize/ and route/); repeat for several (default ../shared/data)")
    p.add_argument("--out", default="router", help="folder to export model.safetensors + config.json into")
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
    p.add_argument(
        "--decoder",
        default=None,
        help="JSON dict of decoder kwargs (default: FPN 64/32 channels for FPN, smp's otherwise)",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=224, help="training crop size (pixels)")
    p.add_argument("--scale", type=float, nargs=2, default=(0.3, 1.0), help="random-resized-crop area range")
    p.add_argument(
        "--composite-frac", type=float, default=0.5, help="share of copy-paste composites per batch"
    )
    p.add_argument(
        "--mask-cutouts",
        nargs="*",
        default=["animals"],
        choices=MASK_CATEGORIES,
        help="also cut foregrounds from these categories' train masks (route/cutouts has only 81 animals)",
    )
    p.add_argument(
        "--paste-range",
        type=float,
        nargs=2,
        default=(0.25, 0.7),
        help="pasted cut-out size as a fraction of the crop's side",
    )
    p.add_argument(
        "--balanced-cutouts", action="store_true", help="paste each class equally often (else: each cut-out)"
    )
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
    p.add_argument(
        "--export-from",
        choices=("last", "best"),
        default="last",
        help="which checkpoint to export (best = on the training-time val subset)",
    )
    p.add_argument("--no-clean", action="store_true", help="keep masks mask_stats.csv marks as unreliable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast (measured slower for the MobileNetV3 FPN on this CPU, so off by default)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 when sharing the cores)")
    p.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoint.pt")
    p.add_argument(
        "--stop-at", type=int, default=None, help="pause at this step (checkpointed; --resume later)"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="at most this many train images per category (tests)"
    )
    p.add_argument("--no-export", action="store_true")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="export run-dir/checkpoint.pt (possibly unfinished) without training",
    )


def _warm_start(net: nn.Module, folder: Path) -> None:
    """Load a router folder's weights into ``net`` (strict: the architecture must be the same)."""
    load_smp_weights(net, folder)
    print(f"warm start from {folder}", flush=True)


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
    for root in roots:
        m = load_masked(root, "train", limit=args.limit, clean=not args.no_clean)
        sc = load_scenes(root, "train", limit=args.limit or args.scenes_per_root)
        limit_cut = args.limit or args.cutouts_per_category
        # extra real foregrounds: only 81 animal stamps exist, the masks give thousands more
        cuts = cutouts_from_masks(root, "train", categories=tuple(args.mask_cutouts), limit_per_category=limit_cut)
        per_root[str(root)] = {"masked": m.counts(), "scenes": len(sc), "mask_cutouts": len(cuts)}
        masked.extend(m)
        scenes += sc
        cutouts += cuts
    print(
        f"router data: {per_root}, {len(cutouts)} cut-outs in all ({time.time() - t_start:.0f} s)",
        flush=True,
    )
    weights = json.loads(args.source_weights) if args.source_weights else None
    sampler = RouterSampler(
        masked, scenes, cutouts, args.crop, args.seed, args.composite_frac, tuple(args.scale),
        weights=weights, paste_range=tuple(args.paste_range), balanced=args.balanced_cutouts,
    )
    if args.init and not args.resume:
        _warm_start(net, Path(args.init))

    val_masked = load_masked(data, "val", limit=args.val_limit, clean=False)
    val_pairs = list(zip(val_masked.images, val_masked.masks, strict=True))
    val_comp = val_composites(data, n=max(8, args.val_limit), size=256, seed=0)
    router = net_router(net, args.input_size, input_mapping=mapping)
    to_input = INPUT_MAPPINGS[mapping]

    criterion = RouterLoss(args.dice, args.class_weights)

    def step_fn(step: int):
        L, labels = sampler.batch(args.batch_size)
        x = to_input(L).contiguous(memory_format=torch.channels_last)  # same as routing._LToUnit
        with loop.autocast_for(torch.device("cpu"), args.amp):
            logits = net(x)
        loss, ce = criterion(logits.float(), labels)
        return loss, args.batch_size, {"ce": ce.item()}

    def validate() -> dict[str, float]:
        m = segmentation_scores(router, val_pairs)["miou"]
        c = segmentation_scores(router, val_comp)["miou"]
        return {"err": 1.0 - (m + c) / 2, "miou_masks": m, "miou_composites": c}

    cfg = loop.LoopConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        amp=args.amp,
        val_every=args.val_every,
        ckpt_every=args.val_every,
        warmup=min(150, max(1, args.steps // 10)),
        stop_at=args.stop_at,
        weight_decay=1e-4,
        ema=args.ema,
    )
    run_dir = Path(args.run_dir)
    if (
        args.export_only
    ):  # e.g. out of time: ship the last checkpoint of an unfinished run, say so in the config
        ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(loop.checkpoint_weights(ckpt))
        state = loop.TrainState(**ckpt["state"])
        print(f"exporting {run_dir}/checkpoint.pt at step {state.step} of {args.steps}")
    else:
        state = loop.train(
            net,
            run_dir,
            cfg,
            step_fn,
            validate,
            "err",
            (sampler.state, sampler.load_state),
            resume=args.resume,
        )
        if args.no_export or state.step < args.steps:
            return None
    if args.export_from == "best" and (run_dir / "best.pt").exists():
        net.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    net.eval()
    fp32 = validate()
    fp16 = {
        k: v
        for k, v in zip(
            ("err", "m", "c"), _fp16_scores(net, args.input_size, val_pairs, val_comp, mapping), strict=True
        )
    }
    use_fp16 = (
        abs(fp16["m"] - fp32["miou_masks"]) < 0.002 and abs(fp16["c"] - fp32["miou_composites"]) < 0.002
    )
    command = "python -m ensemble_color train router " + shlex.join(
        argv if argv is not None else sys.argv[3:]
    )
    extra = {
        "input_size": args.input_size,
        "labels": list(CLASS_NAMES),
        "input": "L (CIELAB lightness, 0..100) mapped by input_mapping",
        "input_mapping": mapping,
        "encoder_init": weights_entry_describe(args.encoder) if args.encoder_init == "imagenet" else "none",
        "command": command,
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


def _fp16_scores(
    net: nn.Module, input_size: int, val_pairs: list, val_comp: list, mapping: str
) -> tuple[float, float, float]:
    """mIoU with weights rounded to fp16 (what an fp16 export would ship), to decide whether fp16 is safe."""
    router = net_router(_fp16_roundtrip(net), input_size, input_mapping=mapping)
    m = segmentation_scores(router, val_pairs)["miou"]
    c = segmentation_scores(router, val_comp)["miou"]
    return 1.0 - (m + c) / 2, m, c


# -------------------------------------------------------------------------------------- evaluate


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m ensemble_color evaluate router``."""
    p.add_argument("--data", action="append", default=None,
                   help="data pack root (colorize/ and route/); the first is the main report, further roots "
                        "(the extension pack) add their val masks per category (default ../shared/data)")
    p.add_argument(
        "--router",
        default="embedded",
        help="router to measure: embedded, lraspp, deeplabv3, background, or an smp folder",
    )
    p.add_argument("--composites", type=int, default=100, help="number of seeded val composites")
    p.add_argument("--single", type=int, default=60,
                   help="one-subject composites per class (a clean val cut-out on a val scene)")
    p.add_argument("--composite-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the val composites")
    p.add_argument("--limit", type=int, default=None, help="at most this many val masks per category")
    p.add_argument("--threads", type=int, default=2, help="torch threads (latency is measured with these)")
    p.add_argument("--latency-repeats", type=int, default=20)
    p.add_argument("--out", default="router/metrics", help="writes <out>.json and <out>.md")


def router_latency(
    router: Router, sizes: tuple[tuple[int, int], ...] = ((320, 320), (768, 1024)), repeats: int = 20
) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU seconds of one router call per input size (H, W), after 2 warm-ups.

    Process CPU time is reported too because wall time on a shared machine includes waiting for
    the cores; CPU time / threads is then the better estimate of the unloaded wall time.
    """
    import statistics

    out = {}
    for h, w in sizes:
        L = torch.rand(1, 1, h, w) * 100
        walls, cpus = [], []
        with torch.inference_mode():
            for i in range(repeats + 2):
                t0, c0 = time.perf_counter(), time.process_time()
                router(L)
                if i >= 2:
                    walls.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
        out[f"{w}x{h}"] = {
            "wall_s_median": statistics.median(walls),
            "wall_s_min": min(walls),
            "cpu_s_median": statistics.median(cpus),
        }
    return out


def _markdown(result: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"Router `{result['router']}` (`{result['command']}`)",
        "",
        "| set | images | mIoU | " + " | ".join(f"IoU {c}" for c in CLASS_NAMES) + " |",
        "|---|---:|---:|" + "---:|" * N_CLASSES,
    ]
    for key in ("val_masks", "val_composites"):
        r = result[key]
        lines.append(
            f"| {key.replace('_', ' ')} | {r['images']} | {f(r['miou'])} | "
            + " | ".join(f(r["iou"][c]) for c in CLASS_NAMES)
            + " |"
        )
    lines += [
        "",
        "Per category of val masks (mIoU over classes true or predicted there; 0 = false positives only):",
        "",
        "| category | images | mIoU | " + " | ".join(f"IoU {c}" for c in CLASS_NAMES) + " |",
        "|---|---:|---:|" + "---:|" * N_CLASSES,
    ]
    for cat, r in result["val_masks_per_category"].items():
        lines.append(
            f"| {cat} | {r['images']} | {f(r['miou'])} | "
            + " | ".join(f(r["iou"][c]) for c in CLASS_NAMES)
            + " |"
        )
    for root, cats in result.get("val_masks_other_roots", {}).items():
        lines += ["", f"Val masks of `{root}` per category:", "",
                  "| category | images | mIoU | " + " | ".join(f"IoU {c}" for c in CLASS_NAMES) + " |",
                  "|---|---:|---:|" + "---:|" * N_CLASSES]
        lines += [f"| {cat} | {r['images']} | {f(r['miou'])} | " + " | ".join(f(r["iou"][c]) for c in CLASS_NAMES)
                  + " |" for cat, r in cats.items()]
    recall = result.get("val_composites_pasted_recall", {})
    if recall:
        lines += ["", "Pasted subjects in the val composites (covering >= 1 % of the image): share routed more "
                  "than half to their class, and the mean routed fraction:", "",
                  "| class | composites | share > 0.5 | mean fraction |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['composites']} | {v['share_over_half']:.2f} | {v['mean_fraction']:.2f} |"
                  for k, v in recall.items()]
    single = result.get("val_single_subject_recall", {})
    if single:
        lines += ["", "One clean val cut-out pasted on a val scene (`single_subject_composites`, unreliable masks "
                  "excluded as in training): share routed more than half to its class, and the mean routed fraction:",
                  "", "| class | composites | share > 0.5 | mean fraction |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['composites']} | {v['share_over_half']:.2f} | {v['mean_fraction']:.2f} |"
                  for k, v in single.items()]
    s = result["val_scenes"]
    lines += [
        "",
        f"Val scenes (all-background photos, {s['images']} images): {s['background_fraction']:.3f} of "
        "pixels routed to background.",
        "",
        f"Latency ({result['threads']} torch threads, load average {result['loadavg_1min']:.2f} "
        f"on {result['cpus']} CPUs):",
        "",
        "| input (W x H) | median wall s | min wall s | median process CPU s |",
        "|---|---:|---:|---:|",
    ]
    for size, t in result["latency"].items():
        lines.append(
            f"| {size} | {t['wall_s_median']:.4f} | {t['wall_s_min']:.4f} | {t['cpu_s_median']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _masks_iou(router: Router, masked: MaskedImages) -> tuple[IoUCounter, dict[str, IoUCounter]]:
    """IoU counters over all of ``masked`` and per category (one router pass per image)."""
    per_cat: dict[str, IoUCounter] = {}
    total = IoUCounter()
    for rgb, mask, cat in zip(masked.images, masked.masks, masked.categories, strict=True):
        pred = predict_labels(router, rgb)
        total.add(pred, mask)
        per_cat.setdefault(cat, IoUCounter()).add(pred, mask)
    return total, per_cat


def run_eval(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Per-class IoU and mIoU on val masks and seeded val composites, plus latency; writes JSON + Markdown."""
    import os

    from ..routing import load_router

    torch.set_num_threads(args.threads)
    roots = [Path(d) for d in (args.data or ["../shared/data"])]
    data = roots[0]
    router = load_router(args.router).eval()
    val = load_masked(data, "val", limit=args.limit, clean=False)
    total, per_cat = _masks_iou(router, val)
    counts = val.counts()
    more_roots = {}
    for root in roots[1:]:
        extra = load_masked(root, "val", limit=args.limit, clean=False)
        _, extra_cat = _masks_iou(router, extra)
        more_roots[str(root)] = {c: {"images": extra.counts()[c], **extra_cat[c].result()} for c in extra_cat}
    comps = val_composites(data, n=args.composites, size=args.composite_size, seed=args.seed)
    comp = segmentation_scores(router, comps)
    recall = pasted_recall(router, comps)
    single = single_subject_recall(router, single_subject_sets(data, args.single, args.composite_size, args.seed))
    scenes = load_scenes(data, "val", limit=args.limit)
    bg = [float((predict_labels(router, s) == LABELS["background"]).mean()) for s in scenes]
    result = {
        "router": router.name,
        "command": "python -m ensemble_color evaluate router "
        + shlex.join(argv if argv is not None else sys.argv[3:]),
        "val_masks": {"images": len(val), **total.result()},
        "val_masks_per_category": {c: {"images": counts[c], **per_cat[c].result()} for c in per_cat},
        "val_masks_other_roots": more_roots,
        "val_composites": {"images": len(comps), "size": args.composite_size, "seed": args.seed, **comp},
        "val_composites_pasted_recall": recall,
        "val_single_subject_recall": single,
        "val_scenes": {
            "images": len(scenes),
            "background_fraction": float(np.mean(bg)) if bg else float("nan"),
        },
        "latency": router_latency(router, repeats=args.latency_repeats),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_1min": os.getloadavg()[0],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = _markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m ensemble_color.train.router [train|evaluate] ...`` until the CLI wires both."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        parser = argparse.ArgumentParser(prog="ensemble_color evaluate router")
        add_eval_arguments(parser)
        run_eval(parser.parse_args(argv[1:]), argv[1:])
        return
    argv = argv[1:] if argv[:1] == ["train"] else argv
    parser = argparse.ArgumentParser(prog="ensemble_color train router", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv), argv)


if __name__ == "__main__":
    main()
