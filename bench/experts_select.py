"""Whether retrained experts replace the shipped ones: the rule, fixed before any candidate was measured.

    python bench/experts_select.py --data ../shared/data --data $EXT --candidates runs/export_v2 \
        [--baseline experts] [--out bench/results/experts_select]

**Measured on** the candidate's own held-out *train* photos, the hold-out its ``expert.json`` records
(``data.roots.required_hold_out``; v2: 40 per category from each root), grouped by category and data root:
the candidate never trained on them; the baseline may have (v1 held out 40 per category spread over the roots
together, so it trained on most of v2's main-pack hold-out). The comparison is tilted against the candidate only.
Val splits stay for the reports (``bench/experts_report.py``). Each expert alone on the whole photo at its
native size, input L only, as in the report.

**Rule** (written 2026-12-02, before specialists v2 were trained): a candidate replaces the
baseline of the same name when, over those groups,

1. its mean L2ab (the mean of the groups' means) is lower than the baseline's;
2. on no group is its L2ab more than ``GROUP_SLACK`` (2 %) above the baseline's;
3. on every group where the baseline's colourfulness is within 25 % of ground truth, the candidate's is too
   (the specialists' colourfulness check must not get worse); 20 % for the generalist (its own tolerance).

The generalist is judged by the same rule, each model decoded as its ``expert.json`` says (the candidate's
decoding chosen first, on its own held-out photos, by ``evaluate generalist --set-default``).

**Generalist addendum** (written 2026-12-02, before generalist v5 was trained): since earlier that day the
shipped generalist decodes as the *pipeline's* rule chose (``bench/tune_defaults.py --set-decode``), not as its
own rule did. So a generalist candidate replaces the baseline only if it passes rules 1-3 twice: decoded as its
own rule chose (as above), and with ``--same-decoding`` (the candidate decoded as the baseline's ``expert.json``
says), so that the weights, not a change of decoding, carry the win. Once it replaces, both decoding rules are
re-run (``evaluate generalist --set-default``, then ``tune_defaults --knobs decode saturation --set-decode``).
[Note, later on 2026-12-02, before v5 was measured: the pipeline's decoding moved from the plugin's manifest to the
pipeline option ``PipelineOptions.decode`` (``--set-decode`` is gone; ``tune_defaults``' ``decode`` knob tunes the
option). The rule is unchanged; v5's second pass runs against the baseline manifest as it stood when the addendum
was written (blend 0.75, which is also the option's default).]
[2026-12-02, before generalist v6 (v3 trained on at 256 px crops, ``STAGES=v6
scripts/train_generalist.sh``) trained: v6 is judged by this addendum unchanged, against v3. The baseline's
``expert.json`` now says regression x1.5, so the second pass decodes v6 that way.]

**Rule for specialists that choose colours** (``--rule perceptual``; written 2026-12-07, before any
``resnet18-deconv-ctx`` specialist was trained). L2ab rewards the brownish average, so it is a guard here, not the
goal. On the same held-out train groups, scored with the Lite0 judge (``eval.perceptual``: Fréchet distance and
agree@1; no candidate trains through or is conditioned on Lite0), a candidate replaces the baseline when

1. its Fréchet distance and its palette distance are each lower than the baseline's on most groups (more than
   half), and on no group more than 5 % above the baseline's;
2. its colourfulness is within 15 % of the ground truth's on every group;
3. its agree@1 (mean over groups) is not below the baseline's;
4. its L2ab (mean over groups) is at most 5 % above the baseline's.

[2026-12-07, before any Fréchet distance of a candidate was measured: reports give a Fréchet distance only from
``eval.perceptual.MIN_FRECHET_IMAGES`` (100) photos and a group has 20-40, so the Fréchet half of check 1 is judged
once, on the expert's held-out photos of all its groups together (``all held-out``, 40-80 photos): lower than the
baseline's. So few photos bias a Fréchet distance upwards, by the same amount for both models on the same photos.]

[2026-12-07, before any adversarial run: the adversarial phase (``train.adversarial``) is judged by this rule
unchanged. One candidate: the trunk-trained context birds specialist (``scripts/train_experts.sh``, its ``CTX_FREEZE=``
line) + 200 critic steps + 400 joint steps of 16 crops at lr 1e-4, critic factor 0.25, the last weights exported,
decoding then chosen by its rule (``ADV=0.25 CTX_INIT=runs/export_ctx_full``). No other factor or length is
measured against this rule before it is judged.]

[2026-12-07, before any colourfulness-term run: the colourfulness term (``train.losses.colourfulness_gap``) is
judged by this rule unchanged. One candidate: the context scenes specialist (``runs/export_ctx``, measured
above: closest to passing, short on colourfulness) + 400 steps of 24 crops at lr 3e-4, trunk frozen, term weight
0.1, the last weights exported, decoding then chosen by its rule (``CF=0.1 CTX_INIT=runs/export_ctx
ONLY=scenes``). The weight was fixed from gradients at the warm start, before any run: on three batches of 24 scene
crops the term's gradient on the output is 19-22 x the pixel loss's (its gap 0.19-0.27: the output's colourfulness
20-27 points under the truth's), so at 0.1 its pull is about twice the pixel loss's. No other weight is measured
against this rule before it is judged; if it passes, the same recipe is run for people, birds and animals, each
from its context specialist and judged by this rule unchanged.]

[2026-12-07, later, before any colourfulness-term run: the pipeline routes ``background`` to the generalist, so
the scenes specialist is seldom what a user sees, while the people specialist colours every face. The same recipe
(weight 0.1, 400 steps, lr 3e-4, from ``runs/export_ctx``) therefore makes one candidate for each of people,
scenes and animals, run in that order and each judged by this rule unchanged, whatever the others' outcome.
Birds are left out: their context specialist was trained with its trunk (``runs/export_ctx_full``) and the
adversarial phase was their candidate.]

[2026-12-07, after people and scenes were measured: the animals candidate of that note is built later, by the same
recipe, once the cores were free of the router's candidates; judged by this rule unchanged.]

[2026-12-07, before the colourfulness-term candidate was measured: a group of fewer than ``MIN_GROUP`` (10)
held-out photos is reported but not judged by checks 1-4 (it stays in the pooled Fréchet distance). The main pack
leaves 1 held-out scene: its colourfulness (110.7, against the extension's 43.0) cannot be "a group's", and the
mean agree@1 over groups gave that one photo half the weight. Re-read with this note, the context scenes candidate
measured earlier still keeps the baseline (Fréchet, colourfulness and agree@1 still fail).]

[2026-12-07, before any pooled-embedding run: every colourfulness-term candidate came within 15 % of the truth's
colourfulness on more groups but raised the Fréchet distance, so saturation alone is not what real photos look like
to an ImageNet network. The pooled-embedding term (``train.losses.EmbeddingGap``: the output's global-pooled
embedding of a frozen **Lite2**, never the judging Lite0, pulled to its truth's) is added beside the colourfulness
term, its gradient pull on the first decoder stage equal to the reconstruction's (factor 1, VQGAN's balance,
``train.adversarial.adaptive_weight``; no other factor measured). Otherwise the colourfulness candidates' recipe
(weight 0.1, 400 steps of 24 crops, lr 3e-4, trunk frozen, from ``runs/export_ctx``, the last weights exported,
decoding chosen by its rule): ``EMB=1 CF=0.1 CTX=1 CTX_INIT=runs/export_ctx``. One candidate each for animals
(closest to passing with the colourfulness term alone), people and scenes, built in that order and each judged by
this rule unchanged, whatever the others' outcome.]

[2026-12-07 21:45 UTC, after the scenes candidate of the embedding note was measured, before any run of what
follows: the three embedding candidates lowered the pooled Fréchet distance (animals 50.9 vs 51.8, people 41.8 vs
48.2, scenes 61.8 vs 78.0), and each fell about 16 % short of its truth's colourfulness (animals 24.3 vs 29.0,
scenes 36.0 vs 43.0; people's full-body group further). The colourfulness term's weight is doubled to 0.2, the
embedding term and everything else unchanged (``EMB=1 CF=0.2 CTX=1 CTX_INIT=runs/export_ctx``). One candidate:
animals, the closest (its agree@1 rose; only colourfulness, 16 % short, and palette distance failed), judged by
this rule unchanged. No other weight is measured against this rule before it is judged.]

[2026-12-08 00:05 UTC, before any palette-term run: the animals candidate at colourfulness weight 0.2 passed the
colourfulness, Fréchet and agree@1 checks together for the first time and failed the palette distance (7.32 vs
6.62) and L2ab (5.5 % above): the colours it chooses are vivid and the photos look more real to an ImageNet network,
but they are not the truth's colours in the truth's proportions (a white dog on grass turns yellow-green). The
palette term (``train.losses.palette_gap``: sliced Wasserstein-1 between the output's and the truth's ab pixels of
each crop, placement ignored; network-free) is added, its gradient pull on the first decoder stage equal to the
reconstruction's (factor 1, as the embedding term's; no other factor measured); everything else is that
candidate's recipe (``PAL=1 EMB=1 CF=0.2 CTX=1 CTX_INIT=runs/export_ctx``). One candidate: animals, judged by this
rule unchanged. If it passes, the same recipe makes one candidate each for people and scenes, each judged by this
rule unchanged. The term is the training form of check 1's palette distance, so the Fréchet distance, agree@1 and
the contact sheet, which it does not see, say whether a pass is real.]

Writes JSON + Markdown with every group's figures and each check's outcome; with ``--sheet N``, a contact sheet per
expert of N held-out photos (gray | baseline | candidate | truth) to judge by eye beside the figures.

``--candidate-gain G`` is a diagnosis, not a decision: every candidate runs at output gain ``G`` (e.g. the
baseline's) instead of the one its ``expert.json`` records, to tell what the weights bring from what the gain
the candidate's run chose brings; its report says so and its verdicts ship nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from compare import comparison_tiles  # bench/ is this script's folder, hence on sys.path
from v0_models import renamed_copies

from ensemble_color.color import rgb_to_lab
from ensemble_color.data.roots import hold_out, list_photos, required_hold_out
from ensemble_color.eval.evaluate import build_methods, evaluate
from ensemble_color.eval.perceptual import PerceptualScorer
from ensemble_color.io import load_image, to_pil
from ensemble_color.nets.multihead_unet import DECODE_KEYS
from ensemble_color.pipeline import Pipeline
from ensemble_color.plugins import validate_folder
from ensemble_color.routing import RoutingTable
from ensemble_color.visualize import contact_sheet, fit_square

#: how much worse than the baseline one group may be while the mean improves (rule 2)
GROUP_SLACK = 0.02
#: colourfulness tolerance of the specialists (rule 3), and per expert where its own check says otherwise
CF_TOLERANCE = 0.25
CF_TOLERANCE_OF = {"generalist": 0.2}


def held_out_groups(roots: list[Path], manifest: dict) -> dict[str, list[torch.Tensor]]:
    """``<root>:<category>`` -> Lab images of the held-out train photos the manifest's hold-out names."""
    per_category, per_root = required_hold_out(manifest, manifest["name"])
    _, held = hold_out(list_photos(roots, tuple(manifest["data"]["categories"]), "train"), per_category, per_root)
    groups: dict[str, list[torch.Tensor]] = {}
    for p in held:
        groups.setdefault(f"{p.root.name}:{p.category}", []).append(rgb_to_lab(load_image(p.path).rgb[None])[0])
    return groups


def baseline_decoding(folder: Path) -> dict | None:
    """The decoding keys of a generalist plugin's config, ``None`` for each it leaves at the model's default, as
    an override for :func:`v0_models.renamed_copies`; ``None`` for a specialist (it has no decoding)."""
    manifest = json.loads((folder / "expert.json").read_text(encoding="utf-8"))
    if "decode" not in manifest.get("config", {}):
        return None
    return {k: manifest["config"].get(k) for k in DECODE_KEYS}


def verdict(groups: dict[str, dict[str, dict]], base: str, cand: str, cf_tolerance: float = CF_TOLERANCE
            ) -> tuple[bool, list[tuple[str, bool]]]:
    """The rule of the module docstring on ``{group: {method: summary}}``: (replace?, (check, passed))."""
    def within(cf: float, gt: float) -> bool:
        return abs(cf - gt) <= cf_tolerance * gt

    mean = {m: float(np.mean([g[m]["l2ab"] for g in groups.values()])) for m in (base, cand)}
    worse = [n for n, g in groups.items() if g[cand]["l2ab"] > (1 + GROUP_SLACK) * g[base]["l2ab"]]
    lost_cf = [n for n, g in groups.items() if within(g[base]["cf"], g[base]["cf_gt"])
               and not within(g[cand]["cf"], g[cand]["cf_gt"])]
    checks = [(f"mean L2ab lower ({mean[cand]:.3f} vs {mean[base]:.3f})", mean[cand] < mean[base]),
              (f"no group > {GROUP_SLACK:.0%} worse" + (f" (worse: {', '.join(worse)})" if worse else ""), not worse),
              (f"colourfulness within {cf_tolerance:.0%} kept" + (f" (lost: {', '.join(lost_cf)})" if lost_cf else ""),
               not lost_cf)]
    return all(ok for _, ok in checks), checks


#: the perceptual rule's pooled set: its Fréchet distance (docstring)
POOLED = "all held-out"
#: the perceptual rule's tolerances (docstring)
WORSE_SLACK, CF_TOLERANCE_PERCEPTUAL, L2AB_SLACK = 0.05, 0.15, 0.05
#: the perceptual rule judges groups of at least this many photos (dated note in the docstring)
MIN_GROUP = 10


def verdict_perceptual(groups: dict[str, dict[str, dict]], base: str, cand: str,
                       pooled: dict[str, float] | None = None) -> tuple[bool, list[tuple[str, bool]]]:
    """The perceptual rule of the module docstring on ``{group: {method: summary}}`` and the pooled Fréchet
    distances ``{method: distance}`` (the dated note): (replace?, (check, passed)). Groups under
    :data:`MIN_GROUP` photos are left out (a check says which)."""
    checks = []
    small = [f"{n} ({g[cand]['n']} photos)" for n, g in groups.items() if g[cand]["n"] < MIN_GROUP]
    groups = {n: g for n, g in groups.items() if g[cand]["n"] >= MIN_GROUP}
    if small:
        checks.append((f"groups under {MIN_GROUP} photos not judged: {', '.join(small)}", bool(groups)))
    if not groups:
        return False, checks
    if pooled is not None:
        checks.append((f"Fréchet on all held-out photos {pooled[cand]:.1f} vs {pooled[base]:.1f}",
                       pooled[cand] < pooled[base]))
    for key, name in ((("palette", "palette distance"),) if pooled is not None
                      else (("frechet", "Fréchet"), ("palette", "palette distance"))):
        lower = sum(g[cand][key] < g[base][key] for g in groups.values())
        worse = [n for n, g in groups.items() if g[cand][key] > (1 + WORSE_SLACK) * g[base][key]]
        checks.append((f"{name} lower on {lower} of {len(groups)} groups", lower * 2 > len(groups)))
        checks.append((f"{name} nowhere > {WORSE_SLACK:.0%} worse" + (f" (worse: {', '.join(worse)})" if worse
                                                                     else ""), not worse))
    off = [n for n, g in groups.items() if abs(g[cand]["cf"] - g[cand]["cf_gt"]) > CF_TOLERANCE_PERCEPTUAL
           * g[cand]["cf_gt"]]
    checks.append((f"colourfulness within {CF_TOLERANCE_PERCEPTUAL:.0%} of the truth on every group"
                   + (f" (off: {', '.join(off)})" if off else ""), not off))
    mean = {k: {m: float(np.mean([g[m][k] for g in groups.values()])) for m in (base, cand)}
            for k in ("agree1", "l2ab")}
    checks.append((f"agree@1 {mean['agree1'][cand]:.3f} vs {mean['agree1'][base]:.3f}",
                   mean["agree1"][cand] >= mean["agree1"][base]))
    checks.append((f"L2ab {mean['l2ab'][cand]:.2f} vs {mean['l2ab'][base]:.2f} (at most {L2AB_SLACK:.0%} above)",
                   mean["l2ab"][cand] <= (1 + L2AB_SLACK) * mean["l2ab"][base]))
    return all(ok for _, ok in checks), checks


def eyes_sheet(methods: dict, sets: dict[str, list[torch.Tensor]], n: int, path: Path, size: int = 192) -> None:
    """``n`` held-out photos evenly spaced over all groups, one row each: gray | each method | truth (JPEG)."""
    photos = [lab for group in sets.values() for lab in group]
    rows = [[fit_square(tile, size) for tile in comparison_tiles(methods, photos[i], list(methods))]
            for i in np.linspace(0, len(photos) - 1, min(n, len(photos))).round().astype(int)]
    to_pil(contact_sheet(rows)).save(path, quality=88)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=None, help="data roots (default ../shared/data)")
    ap.add_argument("--candidates", type=Path, required=True, help="plugin folder of the retrained specialists")
    ap.add_argument("--baseline", type=Path, default=Path("experts"), help="plugin folder they would replace")
    ap.add_argument("--out", default="bench/results/experts_select")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--candidate-gain", type=float, default=None,
                    help="diagnosis: run the candidates at this output gain instead of their recorded one")
    ap.add_argument("--same-decoding", action="store_true",
                    help="decode each generalist candidate as its baseline's expert.json says (the addendum's "
                         "second pass)")
    ap.add_argument("--rule", choices=("l2ab", "perceptual"), default="l2ab",
                    help="which written rule decides (docstring): the L2ab rule or the perceptual one")
    ap.add_argument("--sheet", type=int, default=0, metavar="N",
                    help="also write OUT_<name>.jpg: N held-out photos, gray | baseline | candidate | truth")
    args = ap.parse_args()
    if args.same_decoding and args.candidate_gain is not None:
        raise SystemExit("error: --same-decoding and --candidate-gain measure different things; give one")
    if args.threads:
        torch.set_num_threads(args.threads)
    roots = [Path(r) for r in (args.data or ["../shared/data"])]
    known = RoutingTable.load().known_classes()
    names = sorted(p.parent.name for p in args.candidates.glob("*/expert.json")
                   if (args.baseline / p.parent.name / "expert.json").is_file())
    if not names:
        raise SystemExit(f"error: no expert of {args.candidates} has a namesake in {args.baseline}")
    with tempfile.TemporaryDirectory(prefix="experts_select_") as tmp:
        renamed_copies(args.baseline, Path(tmp), suffix="-base", only=names)
        for name in names:
            override = None if args.candidate_gain is None else {"ab_gain": args.candidate_gain}
            if args.same_decoding:
                override = baseline_decoding(args.baseline / name)
            renamed_copies(args.candidates, Path(tmp), suffix="-cand", only=[name], config=override)
        pipe = Pipeline.load([Path(tmp)], router="background", device="cpu", use_shipped=False)
        for expert in pipe.experts.values():
            _ = expert.model  # load while the folder exists
    report: dict = {"command": "python bench/experts_select.py " + " ".join(sys.argv[1:]), "experts": {},
                    "diagnosis_gain": args.candidate_gain, "same_decoding": args.same_decoding}
    md = ["# Retrained specialists against the shipped ones (held-out train photos)", "",
          f"Generated by `{report['command']}`. Rule: `bench/experts_select.py` (docstring).", "",
          *([f"**Diagnosis, not a decision**: the candidates run at output gain {args.candidate_gain}, not the "
             "gain their runs chose; these verdicts ship nothing.", ""] if args.candidate_gain is not None else []),
          *(["**Same decoding**: each generalist candidate decoded as its baseline's `expert.json` says (the "
             "generalist addendum's second pass; a generalist replaces only when both passes say so).", ""]
            if args.same_decoding else []),
          "| specialist | group | photos | L2ab baseline | L2ab candidate | colourfulness baseline / candidate (GT) |"
          + (" palette baseline / candidate | agree@1 baseline / candidate |" if args.rule == "perceptual" else ""),
          "|---|---|---:|---:|---:|---|" + ("---:|---:|" if args.rule == "perceptual" else "")]
    scorer = PerceptualScorer() if args.rule == "perceptual" else None
    verdicts = []
    for name in names:
        manifest = validate_folder(args.candidates / name, known).manifest
        base, cand = f"expert:{name}-base", f"expert:{name}-cand"
        sets = held_out_groups(roots, manifest)
        methods = build_methods([base, cand], pipe)
        groups = evaluate(methods, sets, scorer, pooled=POOLED)
        if args.sheet:
            eyes_sheet(methods, sets, args.sheet, Path(f"{args.out}_{name}.jpg"))
        pooled = {m: v["frechet"] for m, v in groups.pop(POOLED).items()} if scorer is not None else None
        ok, checks = (verdict_perceptual(groups, base, cand, pooled) if scorer is not None
                      else verdict(groups, base, cand, CF_TOLERANCE_OF.get(name, CF_TOLERANCE)))
        for g, r in groups.items():
            md.append(f"| {name} | {g} | {r[cand]['n']} | {r[base]['l2ab']:.2f} | {r[cand]['l2ab']:.2f} | "
                      f"{r[base]['cf']:.1f} / {r[cand]['cf']:.1f} ({r[base]['cf_gt']:.1f}) |"
                      + (f" {r[base]['palette']:.2f} / {r[cand]['palette']:.2f} | "
                         f"{r[base]['agree1']:.3f} / {r[cand]['agree1']:.3f} |"
                         if scorer is not None else ""))
        decision = "replace" if ok else "keep the baseline"
        verdicts.append(f"* **{name}: {decision if args.candidate_gain is None else 'diagnosis: ' + decision}** — "
                        + "; ".join(f"{c}: {'yes' if v else 'no'}" for c, v in checks))
        report["experts"][name] = {"replace": ok and args.candidate_gain is None, "passes_rule": ok,
                                   "checks": checks, "groups": {
            g: {m: {k: v for k, v in s.items() if k not in ("curve", "l2ab_per_image")} for m, s in r.items()}
            for g, r in groups.items()}}
    text = "\n".join([*md, "", *verdicts]) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
