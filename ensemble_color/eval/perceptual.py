"""Metrics that see colour: semantic interpretability and a Fréchet distance, with an offline ImageNet model.

Why: L2ab rewards desaturation (gray beats a vivid but slightly wrong guess), so it cannot tell a
sepia model from a good one. Two standard remedies, both run offline with the ImageNet
EfficientNet-Lite0 classifier from its PyPI package (``nets.imagenet``):

* **semantic interpretability** (Zhang et al. 2016): does the classifier see the same thing in the
  colourised photo as in the real one? ``agree1`` = share of images whose top-1 class on the output
  equals the top-1 on the ground truth; ``gt_class_prob`` = the output's mean probability of that class.
* **Fréchet distance** between the classifier's pooled features of outputs and of ground truths
  (an FID analogue; FID proper needs Inception weights we cannot download). Needs sets of ≥ 100 images
  to mean much: the covariance of 1,280-d features from fewer images is badly rank-deficient.

The scorer needs the ``train`` extra (the weights package); evaluation without it skips these columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: sets smaller than this get a Fréchet distance of None (too few samples for a covariance)
MIN_FRECHET_IMAGES = 100


def classifier_view(rgb: torch.Tensor, size: int = 224, crop_pct: float = 0.875) -> torch.Tensor:
    """ImageNet evaluation view of sRGB (B, 3, H, W) in [0, 1]: short side to size/crop_pct, centre size²."""
    h, w = rgb.shape[-2:]
    scale = size / crop_pct / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(rgb.float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return x[..., y0:y0 + size, x0:x0 + size].clamp(0, 1)


class PerceptualScorer:
    """Class probabilities and pooled features of sRGB images from the ImageNet Lite0 classifier."""

    def __init__(self, classifier: nn.Sequential | None = None, device: str | torch.device = "cpu") -> None:
        if classifier is None:
            from ..nets.imagenet import imagenet_classifier

            classifier = imagenet_classifier("lite0")
        self.device = torch.device(device)
        self.net = classifier.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (B, classes), pooled features (B, F)) for sRGB (B, 3, H, W) in [0, 1]."""
        norm, body = self.net[0], self.net[1]
        x = norm(classifier_view(rgb).to(self.device))
        pooled = body.forward_head(body.forward_features(x), pre_logits=True)
        probs = torch.softmax(body.get_classifier()(pooled), dim=1)
        return probs.float().cpu(), pooled.float().cpu()


def semantic_scores(probs_pred: torch.Tensor, probs_true: torch.Tensor) -> dict[str, float]:
    """agree@1 and the mean probability of the ground truth's top-1 class, over a set of images."""
    top = probs_true.argmax(1)
    return {"agree1": float((probs_pred.argmax(1) == top).float().mean()),
            "gt_class_prob": float(probs_pred.gather(1, top[:, None]).mean())}


def frechet_distance(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F): |mu_a - mu_b|² + Tr(...)."""
    from scipy import linalg

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():  # singular product: regularise, as the FID reference code does
        eps = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)))


@dataclass
class PerceptualSet:
    """Per-image probabilities and features of one method on one data set (accumulated image by image)."""

    probs: list[torch.Tensor] = field(default_factory=list)
    feats: list[torch.Tensor] = field(default_factory=list)

    def add(self, probs: torch.Tensor, feats: torch.Tensor) -> None:
        self.probs.append(probs)
        self.feats.append(feats)

    def summary(self, truth: PerceptualSet) -> dict[str, float | None]:
        """agree1, gt_class_prob and the Fréchet distance to ``truth`` (None below MIN_FRECHET_IMAGES)."""
        p, pt = torch.cat(self.probs), torch.cat(truth.probs)
        out: dict[str, float | None] = dict(semantic_scores(p, pt))
        enough = len(p) >= MIN_FRECHET_IMAGES
        out["frechet"] = frechet_distance(torch.cat(self.feats), torch.cat(truth.feats)) if enough else None
        return out
