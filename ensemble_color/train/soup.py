"""Weight-space interpolation of two models of one architecture (WiSE-FT, Wortsman et al. 2022).

Why: fine-tuning a model on a new kind of input (the router on old prints) buys the new figures and costs a few
per cent on the old ones. Interpolating the weights of the model before and after the fine-tuning, which share
their start, often keeps most of both -- at no cost at inference, since the result is one model of the same size.

    python -m ensemble_color train soup --base ensemble_color/weights/router --tuned runs/export/router_v15 \\
        --alpha 0.5 --out runs/export/router_soup

``--alpha`` is the tuned model's share (0 = base, 1 = tuned). Every floating-point tensor (BatchNorm's running
statistics too) is interpolated; integer tensors (``num_batches_tracked``) are taken from the tuned model. The
tuned folder's files are copied beside the new weights; its ``config.json`` gets a ``soup`` record.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

import torch

from ..io import atomic_write_json
from ..plugins import PluginError, read_state_dict, write_state_dict

WEIGHTS = "model.safetensors"


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * base + alpha * tuned`` tensor by tensor, computed in float32 and returned in the tuned
    tensors' dtypes; raises ``PluginError`` unless both have the same names and shapes."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if set(base) != set(tuned):
        differ = sorted(set(base) ^ set(tuned))
        raise PluginError(f"the two models have different tensors ({', '.join(differ[:5])})")
    out = {}
    for name, t in tuned.items():
        b = base[name]
        if b.shape != t.shape:
            raise PluginError(f"tensor {name} has shape {list(b.shape)} in one model, {list(t.shape)} in the other")
        if t.is_floating_point():
            out[name] = torch.lerp(b.float(), t.float(), alpha).to(t.dtype)
        else:
            out[name] = t.clone()
    return out


def soup_folder(base: Path, tuned: Path, alpha: float, out: Path, command: str = "",
                logit_bias: dict[str, float] | None = None) -> Path:
    """Write the interpolated weights into ``out`` with a copy of ``tuned``'s other files; its ``config.json``
    records ``command`` (the tuned model's own command moves into the ``soup`` record) and, for a router,
    ``logit_bias`` (calibrated on the soup itself, so it cannot be inherited from either model)."""
    state = interpolate(read_state_dict(base / WEIGHTS), read_state_dict(tuned / WEIGHTS), alpha)
    out.mkdir(parents=True, exist_ok=True)
    for f in tuned.iterdir():
        if f.is_file() and f.name not in (WEIGHTS, "config.json"):
            shutil.copy2(f, out / f.name)
    write_state_dict(out / WEIGHTS, state)
    config = json.loads((tuned / "config.json").read_text())
    own = config.setdefault("ensemble_color", {})
    own["soup"] = {"base": str(base), "tuned": str(tuned), "alpha": alpha,
                   "how": "(1 - alpha) * base + alpha * tuned, every floating-point tensor (ensemble_color.train.soup)",
                   "tuned_command": own.get("command")}
    if command:
        own["command"] = command
    if logit_bias is not None:
        own["logit_bias"] = logit_bias
        own["logit_bias_selection"] = "bench/router_oldphotos.py --calibrate on this soup (its report names the seed)"
    atomic_write_json(out / "config.json", config)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", type=Path, required=True, help="model folder before the fine-tuning")
    p.add_argument("--tuned", type=Path, required=True, help="model folder after it (same architecture)")
    p.add_argument("--alpha", type=float, default=0.5, help="the tuned model's share, 0..1")
    p.add_argument("--out", type=Path, required=True, help="folder to write (must differ from both inputs)")
    p.add_argument("--logit-bias", type=json.loads, default=None,
                   help='a router\'s calibrated logit bias to record, JSON {"class": offset} '
                        "(bench/router_oldphotos.py --calibrate chooses it on the soup)")


def run(args: argparse.Namespace, argv: list[str] | None = None) -> Path:
    if args.out.resolve() in (args.base.resolve(), args.tuned.resolve()):
        raise SystemExit(f"error: {args.out}: would overwrite an input model")
    for folder in (args.base, args.tuned):
        if not (folder / WEIGHTS).is_file() or not (folder / "config.json").is_file():
            raise SystemExit(f"error: {folder}: no {WEIGHTS} + config.json")
    try:
        command = "python -m ensemble_color train soup " + shlex.join(argv if argv is not None else sys.argv[3:])
        out = soup_folder(args.base, args.tuned, args.alpha, args.out, command, args.logit_bias)
    except PluginError as err:
        raise SystemExit(f"error: {args.base} + {args.tuned}: {err}") from None
    print(f"wrote {out} (alpha {args.alpha})")
    return out
