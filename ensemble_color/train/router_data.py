"""The router's training data: masked photos, all-background scenes and a seeded, resumable batch sampler.

Why this data:
* **Masks**: the teacher masks of ``route/masks`` (255 = ignore; rows the data README flags as unreliable
  are dropped via ``route/mask_stats.csv``), scenes photos as all-background (minus the listed ones
  with people), and copy-paste composites (``route/cutouts`` + train animal foregrounds on train
  scenes). The category photos each show one centred subject; composites teach small, several and
  off-centre subjects on real backgrounds.
* **Sampling**: each real source has a fixed share of the non-composite samples (the small sets are
  over-sampled on purpose), and L gets a random gamma and contrast (old and scanned photos are darker,
  flatter or harsher than the training photos); a share of the batch (``degrade_frac``) is turned into an old
  print or scan by :mod:`.degrade` (halftone, grain, fading, blur, scratches, JPEG...) — the L input only, the
  labels stay as they are, so the router learns to find a face under a halftone screen.
* **Clean animals** (``degrade_keep_clean``): crops in which a listed class (``animal``) fills at least
  ``KEEP_CLEAN_SHARE`` of the pixels are never degraded, so more of the degraded crops show people. Tried because
  every stage trained on degraded batches cost clean animal IoU 2-2.5 %; measured, it did not keep it (router v19:
  0.974x, ``docs/experiments.md``), but v19 found more people on old prints than the stages before it.
* **Dark skin**: a share of the crops (``darken_people``) get a strong gamma on their person pixels only (mid-tones
  darkened, whites kept: a white turban stays white), feathered at the mask's edge. The masked people are mostly
  light-skinned; without it the router sent bearded dark-skinned men in old prints to ``animal``.
* **Distillation** (``train router --distill-from``): :meth:`RouterSampler.batch_flags` says which crops were
  altered (degraded or darkened), so the trainer can pull the router's outputs on the others, photos as they
  are, toward a frozen router (``train.losses.distillation_kl``) without pulling it back on what it must learn.
* The sampler's random state is saved with the checkpoints, so a resumed run sees the same batches.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from ..color import rgb_to_lab
from ..data.composites import (
    CATEGORY_LABEL,
    Cutout,
    balanced_picker,
    draw_index,
    make_composite,
    origin_split,
)
from ..data.images import random_resized_crop
from ..data.masks import MASK_CATEGORIES, MaskedImages
from ..descreen import without_screen
from .degrade import degrade, mix_probabilities

#: range of the gamma ``darken_people`` puts on person pixels (L 70 -> 59..24, L 95 -> 93..81)
DARKEN_GAMMA = (1.5, 4.0)
#: the person label in the router's labels (background, person, bird, animal)
PERSON = 1
#: share of a crop's pixels a ``degrade_keep_clean`` class must fill for the crop to stay clean
KEEP_CLEAN_SHARE = 0.01

#: share of each real (non-composite) source in a batch; the small sets are over-sampled on purpose
DEFAULT_SOURCE_WEIGHTS = {"faces": 0.2, "people": 0.15, "birds": 0.25, "animals": 0.25, "scenes": 0.15}


class RouterSampler:
    """Seeded, resumable batches of (L, labels): real masked crops, scenes and composites.

    ``weights`` gives the share of each real source (faces/birds/animals/scenes) among the
    non-composite samples; the small animals set is over-sampled on purpose. ``main_share`` (category ->
    fraction) draws that category's real samples *and* its pasted cut-outs from the main pack (origin 0)
    this often, so that a small main-pack set is not drowned by the extension pack's larger one.
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
        main_share: dict[str, float] | None = None,
        degrade_frac: float = 0.0,
        degrade_mix: dict[str, float] | None = None,
        degrade_descreen: bool = False,
        darken_people: float = 0.0,
        degrade_keep_clean: tuple[int, ...] = (),
    ) -> None:
        for name, share in (("degrade_frac", degrade_frac), ("darken_people", darken_people)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {share}")
        self.darken_people = darken_people
        self.degrade_frac = degrade_frac
        self.degrade_mix = mix_probabilities(degrade_mix)
        self.degrade_descreen = degrade_descreen
        self.degrade_keep_clean = tuple(degrade_keep_clean)
        self.masked, self.scenes, self.cutouts = masked, scenes, cutouts
        self.crop, self.composite_frac, self.scale, self.jitter = crop, composite_frac, scale, jitter
        self.paste_range = paste_range
        self.main_share = main_share or {}
        unknown = set(self.main_share) - set(MASK_CATEGORIES)
        if unknown:
            raise ValueError(f"main_share: unknown categories {sorted(unknown)} (known: {', '.join(MASK_CATEGORIES)})")
        label_share = {CATEGORY_LABEL[c]: f for c, f in self.main_share.items()}
        if self.main_share and not balanced:
            raise ValueError("main_share needs balanced cut-outs (it is applied by the balanced picker)")
        self.pick = balanced_picker(cutouts, label_share) if balanced and cutouts else None
        self.rng = np.random.default_rng(seed)
        weights = weights or DEFAULT_SOURCE_WEIGHTS
        self.by_cat = {c: [i for i, k in enumerate(masked.categories) if k == c] for c in MASK_CATEGORIES}
        origins = masked.origins or [0] * len(masked)
        self.origin_split = {c: origin_split([origins[i] for i in idx]) for c, idx in self.by_cat.items()}
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
        pool = self.by_cat[src]
        i = pool[draw_index(rng, len(pool), self.origin_split[src], self.main_share.get(src))]
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

    def _darken_people(self, L: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``darken_people`` share of the crops with their person pixels put through a gamma in
        ``DARKEN_GAMMA``, blended in by the person mask feathered over 5 px (no hard edge to find people by);
        and which crops that changed."""
        n = L.shape[0]
        chosen = torch.from_numpy(self.rng.random(n) < self.darken_people).view(n, 1, 1, 1)
        gamma = torch.from_numpy(self.rng.uniform(*DARKEN_GAMMA, n)).float().view(n, 1, 1, 1)
        person = (labels == PERSON).float()[:, None]
        weight = F.avg_pool2d(person, 5, stride=1, padding=2, count_include_pad=False) * chosen
        return L + weight * (100.0 * (L / 100.0).clamp_min(0).pow(gamma) - L), weight.flatten(1).amax(1) > 0

    def _to_degrade(self, labels: torch.Tensor) -> np.ndarray:
        """Indices of the crops to degrade: a ``degrade_frac`` share, minus those a keep-clean class fills."""
        chosen = np.flatnonzero(self.rng.random(len(labels)) < self.degrade_frac)
        if not self.degrade_keep_clean:
            return chosen
        share = torch.isin(labels, torch.tensor(self.degrade_keep_clean)).flatten(1).float().mean(1)
        return chosen[(share[chosen] < KEEP_CLEAN_SHARE).numpy()]

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(L (B, 1, S, S) in Lab units, labels (B, S, S) int64 with 255 = ignore)."""
        L, labels, _ = self.batch_flags(batch_size)
        return L, labels

    def batch_flags(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`batch` and a (B,) bool tensor saying which crops were altered (degraded into an old print or
        their people darkened; the rest are the photos as they are, gamma and contrast jitter aside); the same
        random draws as :meth:`batch`."""
        rgbs, labs = zip(*(self.sample() for _ in range(batch_size)), strict=True)
        L = rgb_to_lab(torch.stack(rgbs))[:, :1]
        labels = torch.stack(labs).long()
        altered = torch.zeros(batch_size, dtype=torch.bool)
        if self.darken_people > 0:
            L, altered = self._darken_people(L, labels)
        if self.jitter:
            L = self._jitter_L(L)
        if self.degrade_frac > 0:
            for i in self._to_degrade(labels):
                L[i, 0] = torch.from_numpy(degrade(L[i, 0].numpy(), self.rng, probability=self.degrade_mix))
                if self.degrade_descreen:  # what the pipeline shows the router at inference
                    L[i, 0] = without_screen(L[i, 0])
                altered[i] = True
        return L, labels, altered

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def load_state(self, state: str) -> None:
        self.rng.bit_generator.state = json.loads(state)
