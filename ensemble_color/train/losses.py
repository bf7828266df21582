"""Losses shared by the trainers: the distributional colour loss, colourfulness and palette matching, the
old-print input of a batch, and the router's segmentation and distillation losses.

Why a distributional loss: a pixel (MSE) loss is minimised by the average of every plausible colour, which for
an object of uncertain hue is a brownish gray. Zhang et al. (2016) classify ab into 313 bins instead, with
*class rebalancing* (rare, saturated bins weighted up, since natural photos are dominated by low-chroma pixels),
and decode the distribution with an annealed mean that stays near its mode.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import softencode
from ..color import lab_to_rgb
from ..data.composites import IGNORE
from ..eval.metrics import colorfulness, sliced_wasserstein
from ..nets.imagenet import imagenet_classifier
from .degrade import degrade


def rebalanced_soft_ce(logits: torch.Tensor, ab: torch.Tensor, bins: torch.Tensor,
                       bin_weights: torch.Tensor) -> torch.Tensor:
    """Soft-encoded cross-entropy of ``logits`` (B, Q, h, w) against ``ab`` (B, 2, H, W, pooled to h x w), each
    pixel weighted by the rebalancing weight of its most likely target bin."""
    q = softencode.soft_encode(F.adaptive_avg_pool2d(ab.float(), logits.shape[-2:]), bins)
    return (-(q * torch.log_softmax(logits.float(), 1)).sum(1) * bin_weights[q.argmax(1)]).mean()


def colourfulness_gap(L: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |C(output) - C(truth)| / 100, C the Hasler-Süsstrunk colourfulness of the sRGB
    photo from ``L`` (B, 1, H, W; the clean L) and each ab (B, 2, H, W).

    Why: a pixel loss leaves a photo of uncertain colours far less colourful than the truth (the brownish
    average). This term pulls each photo's colourfulness to its truth's, and only that far: DDColor's term
    *raises* colourfulness without a limit and, tried here at its weight, made the colours garish (colourfulness
    140 against the truth's 35). Which colours go where is still the pixel loss's to say. Network-free."""
    pred = colorfulness(lab_to_rgb(torch.cat([L.float(), ab_pred.float()], 1)), eps=1e-6)
    with torch.no_grad():
        true = colorfulness(lab_to_rgb(torch.cat([L.float(), ab_true.float()], 1)))
    return (pred - true).abs().mean() / 100.0


def palette_gap(ab_pred: torch.Tensor, ab_true: torch.Tensor, generator: torch.Generator,
                directions: int = 16, samples: int = 2048) -> torch.Tensor:
    """Mean over the batch of the sliced Wasserstein-1 distance (Lab units) between each output's ab pixels and
    its truth's, placement ignored: ``directions`` evenly spaced projections at a random offset, over the same
    ``samples`` random pixels of both (``generator`` draws them).

    Why: the reconstruction loss says where each colour goes and, when unsure, averages them into a brownish
    gray; this term says which colours, in which proportions, the photo has, and is lowest only when the output
    uses the truth's. It is the training form of ``eval.metrics.palette_distance`` (which evaluates one photo with
    fixed projections); network-free, so nothing that judges the colours is trained through."""
    a, b = ab_pred.flatten(2).float(), ab_true.flatten(2).float()  # (B, 2, N)
    idx = torch.randint(a.shape[2], (samples,), generator=generator)
    offset = torch.rand((), generator=generator)
    angles = (torch.arange(directions, dtype=torch.float32) + offset) * (torch.pi / directions)
    return sliced_wasserstein(a[:, :, idx], b[:, :, idx].detach(), angles)


class EmbeddingGap(torch.nn.Module):
    """How far the output photo's pooled ImageNet embedding lies from its truth's: the squared distance between
    the global-average-pooled last features of a frozen EfficientNet-Lite (sRGB of the clean L with each ab),
    relative to the truth's squared norm, averaged over the batch.

    Why pooled: a feature-*map* regression (a perceptual loss) still averages each place's colours and made a
    specialist less colourful; the pooled embedding says what the whole photo looks like to an ImageNet network,
    not where each colour goes, which is what a Fréchet distance compares across photos. Why never Lite0: Lite0
    is the judge (``eval.perceptual``); a model trained through it would prove nothing."""

    def __init__(self, variant: str = "lite2") -> None:
        super().__init__()
        if variant == "lite0":
            raise ValueError("EfficientNet-Lite0 judges the colours (eval.perceptual): a loss may not use it")
        classifier = imagenet_classifier(variant)
        self.normalise, self.net = classifier[0], classifier[1]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> EmbeddingGap:
        """Frozen: stays in eval mode (batch-norm statistics are ImageNet's) whatever its owner does."""
        return super().train(False)

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        """sRGB [0, 1] (B, 3, H, W) -> pooled embedding (B, D)."""
        return self.net.forward_head(self.net.forward_features(self.normalise(rgb)), pre_logits=True)

    def forward(self, L: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            true = self.embed(lab_to_rgb(torch.cat([L.float(), ab_true.float()], 1)))
        pred = self.embed(lab_to_rgb(torch.cat([L.float(), ab_pred.float()], 1)))
        return (((pred - true) ** 2).sum(1) / (true ** 2).sum(1).clamp_min(1e-6)).mean()


def bin_prior(ab_batches: list[torch.Tensor], bins: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """Empirical distribution of the nearest bin over ``ab_batches`` (each (B, 2, H, W)), pooled by ``pool`` as
    the distributional head sees them."""
    counts = torch.zeros(bins.shape[0], dtype=torch.float64)
    for ab in ab_batches:
        nearest = softencode.nearest_bin(F.avg_pool2d(ab.float(), pool), bins)
        counts += torch.bincount(nearest.flatten(), minlength=bins.shape[0]).double()
    return (counts / counts.sum()).float()


def degrade_share(L: torch.Tensor, share: float, rng: np.random.Generator) -> torch.Tensor:
    """A copy of the L batch (B, 1, H, W) with a ``share`` of its images turned into old prints or scans
    (:func:`.degrade.degrade`, mixed preset): the input only, the targets stay the clean photo's ab."""
    if share <= 0:
        return L
    out = L.clone()
    for i in np.flatnonzero(rng.random(L.shape[0]) < share):
        out[i, 0] = torch.from_numpy(degrade(L[i, 0].numpy(), rng))
    return out


class RouterLoss:
    """Cross-entropy (optionally class-weighted) + ``dice_weight`` x multiclass Dice, 255 ignored.

    Class weights exist because the router underfits the rare, small classes: v3 routed more than half
    of a pasted bird to ``bird`` in only 36 of 59 *train* composites (``weights/router/README.md``, v4), so
    up-weighting bird and animal pixels trades some background precision for subject recall (measured:
    v4 in ``weights/router/README.md``).
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


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel KL(teacher || student) between two (B, C, H, W) logit maps, every pixel counted.

    Why: fine-tuning the router on old prints moves it away from what it did on clean photos (each such stage
    cost clean animal IoU 2-2.6 %); its outputs on the clean crops are pulled toward the frozen router it started
    from, which also speaks for the ignored pixels and the soft boundaries that carry no label. Measured at weight
    1 (router v20, ``docs/experiments.md``): more historical portraits found and modern faces as old prints kept,
    but clean animal IoU ended where it did without the term; the average with its teacher ships.
    """
    log_p = F.log_softmax(student.float(), 1)
    log_q = F.log_softmax(teacher.float(), 1)
    return (log_q.exp() * (log_q - log_p)).sum(1).mean()
