"""``evaluate generalist``: choose the generalist's decoding by a rule written before measuring.

The soft-encoding head exists to fight desaturation, but how to turn its 313-bin distribution into
ab (annealed-mean temperature, or a blend with the regression head) trades vividness for error.
The choice is made on held-out *train* photos (the ones :mod:`.generalist_data` kept out of the
training stream), never on val photos, so the reported val figures stay honest.

**The rule** (:func:`choose_decode`; fixed before the first candidate was measured):

1. candidates: :data:`CANDIDATES` (soft at four temperatures, regression, three soft/regression blends;
   regression gains since 2026-12-02, below);
2. a candidate qualifies when, on *every* category's held-out photos, its mean L2ab is below gray's and
   its mean colourfulness is within 20 % of the ground truth's;
3. among qualifying candidates, the lowest Fréchet distance (ImageNet Lite0 features, all held-out
   photos pooled) wins;
4. if none qualifies: the candidate qualifying on the most categories, then the lowest Fréchet distance.

Extended on 2026-12-02, before any of them was measured: the candidates also include the regression
head times a gain (1.25, 1.5, 1.75, 2; ``reg_gain``, clamped to the ab range), the move that gave the
specialists their colour (``ab_gain``): generalist v3's regression decoding was the lowest in L2ab on four
categories of five but 40-50 % less colourful than ground truth, and its blends with the soft head, which
bring the colour, bring the soft head's wrong hues with it. Steps 2-4 are unchanged.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..color import join_l_ab, rgb_to_lab
from ..data.images import read_rgb
from ..data.roots import hold_out, list_photos, required_hold_out
from ..io import atomic_write_bytes, atomic_write_json
from ..nets.multihead_unet import DECODINGS, with_decoding
from ..weights import shipped_experts_dir
from .evaluate import Scores
from .perceptual import PerceptualScorer, PerceptualSet

#: the rule's candidates: every named decoding (name -> decode_heads keyword arguments)
CANDIDATES = DECODINGS
CF_TOLERANCE = 0.2


def _pad(L: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = L.shape[-2:]
    return F.pad(L, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")


def held_out_photos(roots: list[Path], categories: tuple[str, ...], per_category: int, max_side: int,
                    per_root: bool = False) -> dict[str, list[torch.Tensor]]:
    """Lab images (3, H, W) of the held-out train photos, by category (the trainer's :func:`hold_out`)."""
    _, held = hold_out(list_photos(roots, categories, "train"), per_category, per_root)
    out: dict[str, list[torch.Tensor]] = {}
    for p in held:
        rgb = torch.from_numpy(read_rgb(p.path, max_side)).permute(2, 0, 1)[None].float() / 255
        out.setdefault(p.category, []).append(rgb_to_lab(rgb)[0])
    return out


@torch.inference_mode()
def score_candidates(model: torch.nn.Module, sets: dict[str, list[torch.Tensor]], scorer: PerceptualScorer,
                     candidates: dict[str, dict[str, Any]] = CANDIDATES) -> dict[str, Any]:
    """Per category and candidate: L2ab, AuC, colourfulness (and gray's); pooled Fréchet per candidate.

    The network runs once per photo; every candidate decodes the same heads.
    """
    multiple = model.descriptor.size_multiple
    per_cat: dict[str, dict[str, Scores]] = {c: {m: Scores() for m in ["gray", *candidates]} for c in sets}
    pooled = {m: PerceptualSet() for m in candidates}
    truth = PerceptualSet()
    for cat, images in sets.items():
        for lab in images:
            h, w = lab.shape[-2:]
            heads = model.forward_heads(_pad(lab[None, :1], multiple))
            heads = {k: v.float() for k, v in heads.items()}
            per_cat[cat]["gray"].add(torch.zeros(2, h, w), lab)
            truth.add(*scorer(join_l_ab(lab[None, :1], lab[None, 1:])))
            for name, kw in candidates.items():
                ab = model.decode_heads(heads, **kw)[0, :, :h, :w]
                pooled[name].add(*scorer(per_cat[cat][name].add(ab, lab)))
    out: dict[str, Any] = {"categories": {}, "frechet": {}, "images": {c: len(v) for c, v in sets.items()}}
    for cat, rows in per_cat.items():
        out["categories"][cat] = {m: {k: v for k, v in s.summary().items() if k in ("l2ab", "auc", "cf", "cf_gt")}
                                  for m, s in rows.items()}
    for name, seen in pooled.items():
        out["frechet"][name] = seen.summary(truth)["frechet"]
    return out


def qualifies(row: dict[str, float], gray: dict[str, float]) -> bool:
    """Rule step 2 for one category: lower L2ab than gray, colourfulness within 20 % of ground truth."""
    return row["l2ab"] < gray["l2ab"] and abs(row["cf"] - row["cf_gt"]) <= CF_TOLERANCE * row["cf_gt"]


def choose_decode(scores: dict[str, Any]) -> tuple[str, dict[str, list[str]]]:
    """The rule of this module's docstring: (chosen candidate, categories each candidate qualifies on)."""
    cats = scores["categories"]
    passed = {m: [c for c, rows in cats.items() if qualifies(rows[m], rows["gray"])] for m in scores["frechet"]}

    def frechet(m: str) -> float:
        f = scores["frechet"][m]
        return float("inf") if f is None else f

    best = max(len(v) for v in passed.values())
    pool = [m for m, v in passed.items() if len(v) == best]
    return min(pool, key=frechet), passed


def markdown(scores: dict[str, Any], chosen: str, passed: dict[str, list[str]]) -> str:
    cats = list(scores["categories"])
    lines = ["| candidate | " + " | ".join(f"{c} L2ab / cf (GT)" for c in cats) + " | Fréchet ↓ | qualifies on |",
             "|---|" + "---:|" * len(cats) + "---:|---|"]
    for m in ["gray", *scores["frechet"]]:
        cells = []
        for c in cats:
            r = scores["categories"][c][m]
            cells.append(f"{r['l2ab']:.2f} / {r['cf']:.1f} ({r['cf_gt']:.1f})")
        f = scores["frechet"].get(m)
        mark = "**" if m == chosen else ""
        lines.append(f"| {mark}{m}{mark} | " + " | ".join(cells) + f" | {'' if f is None else f'{f:.1f}'} | "
                     f"{', '.join(passed.get(m, [])) if m != 'gray' else ''} |")
    return "\n".join(lines) + "\n"


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``evaluate generalist``."""
    p.add_argument("--expert", default=str(shipped_experts_dir() / "generalist"), help="the generalist plugin folder")
    p.add_argument("--data", action="append", default=None, help="data roots the generalist was trained on")
    p.add_argument("--max-side", type=int, default=256, help="held-out photos: short side capped at this")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set-default", action="store_true",
                   help="store the chosen decoding in the plugin's expert.json")


def run_eval(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Any]:
    """Score the candidates, write ``decode_selection.{json,md}`` beside the plugin, optionally set the default."""
    from ..plugins import validate_folder
    from ..routing import RoutingTable

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    folder = Path(args.expert)
    spec = validate_folder(folder, RoutingTable.load().known_classes())
    manifest = dict(spec.manifest)
    roots = [Path(r) for r in (args.data or ["../shared/data"])]
    categories = tuple(manifest["data"]["categories"])
    per_category, per_root = required_hold_out(manifest, str(folder), " to choose the decoding on")
    sets = held_out_photos(roots, categories, per_category, args.max_side, per_root)
    scores = score_candidates(spec.build(), sets, PerceptualScorer())
    chosen, passed = choose_decode(scores)
    command = "python -m ensemble_color evaluate generalist " + shlex.join(argv if argv is not None
                                                                          else sys.argv[3:])
    result = {"command": command, "rule": __doc__.split("**The rule**")[1].strip(), "chosen": chosen,
              "qualifies_on": passed, **scores}
    atomic_write_bytes(folder / "decode_selection.json", (json.dumps(result, indent=1) + "\n").encode())
    table = markdown(scores, chosen, passed)
    atomic_write_bytes(folder / "decode_selection.md", table.encode())
    print(table)
    print(f"chosen: {chosen}")
    if args.set_default:
        set_decoding(folder, chosen, command)
    return result


def set_decoding(folder: Path, name: str, command: str) -> None:
    """Store candidate ``name`` as the generalist plugin's decoding (its ``config``, every decoding key
    replaced) and record in ``metrics.decode_selection`` that this rule chose it, by what command.

    The plugin carries the generalist's *own* decoding (it alone, on its held-out photos). The
    pipeline runs it as its ``decode`` option says when it colours backgrounds (the defaults' rule,
    ``bench/tune_defaults.py``), so the two rules no longer write one place.
    """
    manifest = json.loads((folder / "expert.json").read_text(encoding="utf-8"))
    manifest["config"] = with_decoding(manifest["config"], name)
    manifest.setdefault("metrics", {})["decode_selection"] = {"chosen": name, "command": command}
    atomic_write_json(folder / "expert.json", manifest)
    print(f"{folder / 'expert.json'}: config decode = {CANDIDATES[name]}")
