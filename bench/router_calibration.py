"""How ``bench/router_oldphotos.py`` loads and calibrates a router (the calibration rules are in
``docs/router_rule.md``).

* :func:`calibrate`: the bird / animal logit bias, on fresh single pasted subjects.
* :func:`calibrate_person`: the person logit bias, on train-split masks of both packs, each clean and as an old
  print: the bias that segments them best (mean IoU over the classes), so neither the historical portraits nor
  the val masks the rule judges choose it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ensemble_color.data.masks import load_masked
from ensemble_color.descreen import without_screen
from ensemble_color.eval.router import IoUCounter, predict_labels, single_subject_recall, single_subject_sets
from ensemble_color.routing import Router, load_router
from ensemble_color.train.degrade import degrade_rgb

#: the person biases :func:`calibrate_person` tries (docs/router_rule.md, "A person bias")
PERSON_BIASES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


class Descreened(torch.nn.Module):
    """A router that sees each L descreened when a halftone screen is found in it (the pipeline's ``descreen``)."""

    def __init__(self, router: Router) -> None:
        super().__init__()
        self.router, self.route_classes, self.name = router, router.route_classes, router.name + "+descreen"

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.router(torch.stack([without_screen(x) for x in L]))


def load_spec(spec: str, options: dict) -> Router | Descreened:
    """``SPEC`` or ``SPEC+descreen`` (see :class:`Descreened`)."""
    if spec.endswith("+descreen"):
        return Descreened(load_router(spec.removesuffix("+descreen"), **options).eval())
    return load_router(spec, **options).eval()


def calibrate(spec: str, data: Path, seed: int = 6) -> dict:
    """The calibration rule (docs/router_rule.md): every bias on ``seed`` single subjects, the winner, all figures."""
    sets = single_subject_sets(data, n=60, seed=seed)
    tried = []
    for bird in (0.0, 0.25, 0.5):
        for animal in (0.75, 1.0, 1.25):
            bias = {"bird": bird, "animal": animal}
            with torch.inference_mode():
                rec = single_subject_recall(load_spec(spec, {"logit_bias": bias}), sets)
            tried.append({"bias": bias, "bird": rec["bird"]["share_over_half"],
                          "animal": rec["animal"]["share_over_half"]})
            print("calibration", tried[-1], flush=True)
    best = max(tried, key=lambda t: (round(t["bird"] * 60 + t["animal"] * 45), -sum(t["bias"].values())))
    return {"chosen": best["bias"], "tried": tried}


def train_prints(roots: list[Path], per_category: int, seed: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """``per_category`` evenly spaced train-split masked images of each root, clean and each once as a ``mixed``
    old print (seeded by ``seed`` and its index)."""
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for root in roots:
        m = load_masked(root, "train", limit=per_category)
        pairs += list(zip(m.images, m.masks, strict=True))
    return {"clean": pairs,
            "mixed": [(degrade_rgb(rgb, np.random.default_rng([seed, i]), "mixed"), m)
                      for i, (rgb, m) in enumerate(pairs)]}


def best_person_bias(tried: list[dict]) -> float:
    """The bias with the highest mean IoU (averaged over clean and mixed), a tie to the smaller bias."""
    return max(tried, key=lambda t: (round(t["miou"], 4), -t["person"]))["person"]


def calibrate_person(spec: str, bias: dict[str, float], sets: dict[str, list]) -> dict:
    """The person-bias rule (docs/router_rule.md): ``bias`` (the router's bird / animal bias) plus each of
    :data:`PERSON_BIASES`, scored on ``sets`` (:func:`train_prints`); the winner and all figures."""
    tried = []
    for person in PERSON_BIASES:
        router = load_spec(spec, {"logit_bias": bias | {"person": person}})
        scores = {}
        with torch.inference_mode():
            for cond, pairs in sets.items():
                counter = IoUCounter()
                for rgb, labels in pairs:
                    counter.add(predict_labels(router, rgb), labels)
                scores[cond] = counter.result()["miou"]
        tried.append({"person": person, "miou": float(np.mean(list(scores.values())))}
                     | {f"miou_{c}": round(v, 4) for c, v in scores.items()})
        print("person calibration", tried[-1], flush=True)
    return {"chosen": bias | {"person": best_person_bias(tried)}, "tried": tried}
