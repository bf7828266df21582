"""The ``resnet18-deconv-ctx`` specialist's training pieces: its frozen ImageNet branch, the warm start from a
shipped ``resnet18-deconv``, its two-term loss, and the rule that chooses how it decodes.

**The decoding rule** (written 2026-12-07, before any context specialist was trained or measured). On the
expert's held-out train photos, every candidate decoding is scored: the regression head at each gain of
``expert.GAINS``, the annealed mean at T in {0.2, 0.38, 0.6}, and blends of the two (``blend_w`` in
{0.25, 0.5, 0.75}, T = 0.38, regression gain 1). The **reference** is the regression at the gain the existing
gain rule (``expert.choose_gain``) picks. Eligible: mean colourfulness within 15 % of the photos' own and mean
L2ab at most 5 % above the reference's. Chosen: the eligible decoding with the lowest mean palette distance
(``eval.metrics.palette_distance``; network-free, so nothing here consults the Lite0 judge); none eligible: the
reference.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..color import AB_RANGE, lab_to_rgb
from ..eval import metrics
from ..nets.context import context_weights_file
from ..nets.imagenet import load_pretrained
from ..softencode import rebalancing_weights
from .losses import bin_prior, rebalanced_soft_ce

ARCH = "resnet18-deconv-ctx"
#: tensors a warm start from a plain ``resnet18-deconv`` does not have (they start fresh)
NEW_MODULES = ("context_proj.", "fuse.", "bins_head.")
CF_TOLERANCE = 0.15
L2AB_SLACK = 0.05


def imagenet_branch(model: torch.nn.Module) -> None:
    """Fill the frozen branch with its ImageNet weights, rounded through fp16 so that training sees exactly the
    tensors that ship (``weights/context`` stores them in fp16)."""
    branch = model.context
    load_pretrained(branch.net, branch.variant)
    with torch.no_grad():
        for t in branch.net.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())


def warm_start(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> list[str]:
    """Load a plain ``resnet18-deconv`` (or a context specialist), ``state`` read from ``path``, into ``model``:
    every tensor must fit by name and shape; only :data:`NEW_MODULES` may be left to start fresh. Returns the
    fresh tensors' names."""
    own = model.state_dict()
    bad = [k for k in state if k not in own or own[k].shape != state[k].shape]
    fresh = [k for k in own if k not in state]
    if bad or any(not k.startswith(NEW_MODULES) for k in fresh):
        wrong = bad or [k for k in fresh if not k.startswith(NEW_MODULES)]
        raise SystemExit(f"error: {path}: does not fit {ARCH} (mismatched: {', '.join(wrong[:4])})")
    model.load_state_dict(state, strict=False)
    return fresh


def bin_weights(ab_batches: list[torch.Tensor], bins: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Rebalancing weights (Zhang et al. 2016, lambda 0.5) from the empirical bins of training batches."""
    return rebalancing_weights(bin_prior(ab_batches, bins), bins, lam)


def heads_loss(model: torch.nn.Module, reg: torch.Tensor, logits: torch.Tensor, ab: torch.Tensor,
               weights: torch.Tensor, ce_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of the regression head (ab / AB_RANGE units) + ``ce_weight`` x rebalanced soft CE of the bins head, from
    heads already run (``model.heads``: the trainer also decodes them, for the critic)."""
    mse = ((reg.float() - ab.float()) / AB_RANGE).pow(2).mean()
    ce = rebalanced_soft_ce(logits, ab, model.ab_bins, weights)
    return mse + ce_weight * ce, {"mse": mse.item(), "ce": ce.item()}


def candidates(gains: tuple[float, ...]) -> list[dict]:
    """Every decoding the rule scores (module docstring)."""
    return ([{"decode": "regression", "gain": g} for g in gains]
            + [{"decode": "soft", "T": t} for t in (0.2, 0.38, 0.6)]
            + [{"decode": "blend", "T": 0.38, "blend_w": w, "gain": 1.0} for w in (0.25, 0.5, 0.75)])


@torch.inference_mode()
def choose_decoding(model: torch.nn.Module, lab: torch.Tensor, reference_gain: float, gains: tuple[float, ...],
                    batch: int = 32) -> tuple[dict, list[dict]]:
    """The decoding rule of the module docstring on held-out photos ``lab`` (N, 3, H, W). Returns (chosen
    decoding, one row per candidate)."""
    heads = [model.heads(chunk[:, :1].contiguous()) for chunk in lab.split(batch)]
    cf_gt = metrics.colorfulness(lab_to_rgb(lab)).mean().item()
    rows = []
    for cand in candidates(gains):
        args = {k: v for k, v in cand.items() if k != "decode"}
        ab = torch.cat([model.decode_heads(r, lg, cand["decode"], **args) for r, lg in heads])
        rgb = lab_to_rgb(torch.cat([lab[:, :1], ab], 1))
        rows.append({**cand, "l2ab": metrics.l2ab(ab, lab[:, 1:]).mean().item(),
                     "cf": metrics.colorfulness(rgb).mean().item(), "cf_gt": cf_gt,
                     "palette": sum(metrics.palette_distance(p, t) for p, t in zip(ab, lab[:, 1:], strict=True))
                     / len(lab)})
    ref = next(r for r in rows if r["decode"] == "regression" and r["gain"] == reference_gain)
    ok = [r for r in rows if abs(r["cf"] - cf_gt) <= CF_TOLERANCE * cf_gt
          and r["l2ab"] <= (1 + L2AB_SLACK) * ref["l2ab"]]
    best = min(ok, key=lambda r: r["palette"]) if ok else ref
    return {k: best[k] for k in ("decode", "gain", "T", "blend_w") if k in best}, rows


def export_branch(model: torch.nn.Module) -> Path:
    """Write the frozen branch (fp16 safetensors) where the shipped builder reads it, unless it is already there
    with the same tensors; returns its path."""
    from safetensors.torch import load_file, save_file

    path = context_weights_file(model.context.variant)
    state = {k: (v.detach().half() if v.is_floating_point() else v).contiguous()
             for k, v in model.context.net.state_dict().items()}
    if path.is_file():
        old = load_file(str(path))
        if old.keys() == state.keys() and all(torch.equal(old[k], state[k]) for k in state):
            return path
        raise SystemExit(f"error: {path} exists with other tensors; remove it to replace the context branch")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
