"""Fold inference-mode BatchNorm into the convolution before it.

Why: in eager PyTorch on a CPU every BatchNorm is one more pass over its feature map. For the depthwise-heavy
EfficientNet-Lite router that pass costs about as much as the cheap depthwise convolution itself, and the
ImageNet nets of this project are all conv → BN pairs (timm's ``BatchNormAct2d`` carries the activation too).
Folding changes no result beyond float rounding; :func:`fold_batchnorm` checks that on a probe input and
gives the caller the unfolded network back if it does not hold, so an architecture it misreads is never
served wrong. onnxruntime does the same fusion itself, so this is for the torch backend only.
"""

from __future__ import annotations

import copy
from itertools import pairwise

import torch
from torch import nn

#: largest |folded - original| output difference accepted on the probe, relative to the output's largest
#: magnitude (fp32 rounding measured 2e-6 .. 4e-5 on the shipped router and experts)
PROBE_TOLERANCE = 1e-4


def _bn_replacement(bn: nn.BatchNorm2d) -> nn.Module:
    """What stays of a folded BatchNorm: nothing, or the activation (and dropout) timm fuses into it."""
    act, drop = getattr(bn, "act", None), getattr(bn, "drop", None)
    parts = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    return nn.Sequential(*parts) if parts else nn.Identity()


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
    w = conv.weight.detach()
    conv.weight = nn.Parameter(w * scale.reshape(-1, 1, 1, 1).to(w.dtype), requires_grad=False)
    b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    conv.bias = nn.Parameter((b * scale + shift).to(w.dtype), requires_grad=False)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def _fold_in_place(module: nn.Module) -> int:
    """Fold every conv child immediately followed (in registration order) by its BatchNorm child."""
    count = 0
    for (_, first), (name, second) in pairwise(list(module.named_children())):
        if _foldable(first, second):
            _fold_pair(first, second)
            setattr(module, name, _bn_replacement(second))
            count += 1
    for _, child in module.named_children():
        count += _fold_in_place(child)
    return count


def fold_batchnorm(net: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, int]:
    """(folded copy of ``net``, pairs folded), or (``net``, 0) if nothing folded or the probe output moved.

    Registration order is how both timm and torchvision declare a conv and its norm; the probe (an input
    the net accepts, e.g. ``(1, 1, 64, 64)``) guards against a network whose forward uses them otherwise.
    """
    if net.training:
        raise ValueError("fold_batchnorm needs a network in eval mode (running statistics)")
    folded = copy.deepcopy(net)
    count = _fold_in_place(folded)
    if count == 0:
        return net, 0
    with torch.inference_mode():
        want, got = net(probe), folded(probe)
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)) or want.shape != got.shape:
        return net, 0
    scale = max(1.0, want.float().abs().max().item())
    if (want.float() - got.float()).abs().max().item() > PROBE_TOLERANCE * scale:
        return net, 0
    return folded, count
