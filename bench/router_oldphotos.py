"""Routers on photos as users have them: old prints, grain, fading; historical portraits; every skin tone.

    python bench/router_oldphotos.py --routers router runs/export/router_v14 --ext $EXT \\
        [--bias '{"animal": 0.75}'] [--out bench/results/router_oldphotos]

The first router is the baseline (the shipped one); every figure is measured for each router in one run.

* **Val masks, clean and degraded**: main-pack faces, birds and animals val masks and the extension pack's
  person (CCP, CamVid), bird and animal val masks (``--per-category`` evenly spaced of each), each scored clean
  and as an old print by ``ensemble_color.train.degrade`` (halftone, grain, fading, mixed; one seeded draw
  per image, the same for every router): person, bird and animal IoU.
* **Historical portraits**: the 40 CC0 portraits of ``../shared/examples/historical`` all show a person; the
  figure is how many have at least 10 % of their pixels routed ``person`` with probability > 0.5; beside it (a
  figure, not a check), how many have 10 % routed ``animal`` (none shows an animal: every such pixel is a person
  or the background taken for one).
* **Skin tones**: UTKFace's val faces (extension pack; the race code 0-4 is in the file name: White, Black,
  Asian, Indian, Others). A face counts as found when the mean ``person`` probability over the central half of
  the aligned crop (inside the face) is above 0.5; recall per group and the spread between groups. The shipped
  people expert's L2ab per group (alone, on the whole crop) is reported beside it. The same faces turned into old
  prints (``mixed`` degradation, one seeded draw per face) give a second recall per group: a figure, not a check
  of the rule. The halftone val prints are also split by whether ``ensemble_color.descreen`` finds their screen
  (a screen finer than about 2.2 px is aliased into moiré and cannot be found): how many, and the person IoU of
  each part, per router (a figure, not a check).
* **Single pasted subjects** (seed 0, 60 per class, as ``evaluate router``): share routed > 0.5.

``--bias`` applies a logit bias to every router after the first (the shipped router's own calibration is in
its config; a retrained candidate is measured with the same one).

**The rule**, the calibration, each candidate's note and the descreening rule are in
``docs/router_rule.md`` (each written and committed before what it judges was measured); the
report applies them (its verdict lines).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from router_calibration import calibrate, calibrate_person, load_spec, train_prints  # bench/ is on sys.path

from ensemble_color.color import gray_to_l
from ensemble_color.data.images import list_images, read_rgb
from ensemble_color.data.masks import load_masked
from ensemble_color.data.roots import UTKFACE_GROUPS, utkface_groups
from ensemble_color.descreen import detect_screen
from ensemble_color.eval.metrics import l2ab
from ensemble_color.eval.router import (
    IoUCounter,
    predict_labels,
    route_probs,
    single_subject_recall,
    single_subject_sets,
)
from ensemble_color.io import atomic_write_bytes, atomic_write_json, load_image
from ensemble_color.routing import Router, read_router_config
from ensemble_color.train.degrade import degrade_rgb

REPO = Path(__file__).resolve().parent.parent
CONDITIONS = ("clean", "halftone", "grain", "fading", "mixed")
RACES = UTKFACE_GROUPS
#: a portrait counts as found when at least this share of its pixels is routed person with probability > 0.5
FOUND_SHARE = 0.10


def val_sets(data: Path, ext: Path | None, per_category: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per condition, the same val (RGB uint8, labels) pairs, clean or degraded once with a per-image seed."""
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for root in [data] + ([ext] if ext else []):
        m = load_masked(root, "val", limit=per_category)
        pairs += list(zip(m.images, m.masks, strict=True))
    out = {"clean": pairs}
    for k, cond in enumerate(CONDITIONS[1:], 1):
        out[cond] = [(degrade_rgb(rgb, np.random.default_rng([k, i]), cond), m) for i, (rgb, m) in enumerate(pairs)]
    return out


def as_old_prints(faces: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Each group's faces degraded once (``mixed``), seeded by group and index: the same prints for every router."""
    return {race: [degrade_rgb(rgb, np.random.default_rng([99, g, i]), "mixed") for i, rgb in enumerate(imgs)]
            for g, (race, imgs) in enumerate(faces.items())}


def historical_shares(router: Router, folder: Path) -> dict[str, dict[str, float]]:
    """Per portrait, per route class, the share of its pixels routed to that class with probability > 0.5."""
    out = {}
    for path in list_images(folder):
        rgb = (load_image(path).rgb.permute(1, 2, 0) * 255).round().byte().numpy()
        over = (route_probs(router, rgb) > 0.5).float().mean((1, 2))
        out[path.stem] = {c: round(float(v), 4) for c, v in zip(router.route_classes, over, strict=True)}
    return out


def utk_faces(ext: Path, per_group: int) -> dict[str, list[np.ndarray]]:
    """UTKFace val crops by ethnicity group (from ``age_gender_race_date`` in the file name), evenly spaced."""
    groups = utkface_groups(sorted((ext / "colorize" / "faces" / "val").glob("utkface__*")), per_group)
    return {race: [read_rgb(p) for p in groups.get(race, [])] for race in RACES}


def utk_recall(router: Router, faces: dict[str, list[np.ndarray]]) -> dict[str, float]:
    person = router.route_classes.index("person")
    out = {}
    for race, imgs in faces.items():
        found = []
        for rgb in imgs:
            h, w = rgb.shape[:2]
            p = route_probs(router, rgb)[person][h // 4: h - h // 4, w // 4: w - w // 4]
            found.append(float(p.mean()) > 0.5)
        out[race] = round(float(np.mean(found)), 4) if found else float("nan")
    return out


def people_expert_l2ab(faces: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """The shipped people expert alone on each crop: mean L2ab per group (what a found face gets coloured)."""
    from ensemble_color.color import rgb_to_lab
    from ensemble_color.pipeline import Pipeline

    pipe = Pipeline.load(device="cpu", experts_dirs=[], router="background")
    expert = pipe.experts["people"]
    out = {}
    for race, imgs in faces.items():
        errs = []
        for rgb in imgs:
            lab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
            with torch.inference_mode():
                ab = expert.run(lab[:, :1])
            errs.append(float(l2ab(ab, lab[:, 1:]).mean()))
        out[race] = round(float(np.mean(errs)), 3)
    return out


def screens_found(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[bool]:
    """Per print, whether ``ensemble_color.descreen`` finds a halftone screen in it (the same for every router)."""
    return [detect_screen(gray_to_l(torch.from_numpy(rgb[None, ..., 0].astype(np.float32) / 255))) is not None
            for rgb, _ in pairs]  # gray prints: R = G = B


def iou_by_condition(router: Router, sets: dict[str, list],
                     screened: list[bool]) -> tuple[dict[str, dict[str, float | None]], dict[str, float | int | None]]:
    """Per condition, the IoU of each class; and the halftone prints split by whether their screen is found
    (``screened``, one flag per print): counts and person IoU of each part, from the same predictions."""
    out = {}
    parts = {True: IoUCounter(), False: IoUCounter()}
    for cond, pairs in sets.items():
        counter = IoUCounter()
        for j, (rgb, labels) in enumerate(pairs):
            pred = predict_labels(router, rgb)
            counter.add(pred, labels)
            if cond == "halftone":
                parts[screened[j]].add(pred, labels)
        out[cond] = {k: None if v is None else round(v, 4) for k, v in counter.result()["iou"].items()}
    split = {"found": sum(screened), "prints": len(screened), "person_iou_found": parts[True].result()["iou"]["person"],
             "person_iou_missed": parts[False].result()["iou"]["person"]}
    return out, split


def verdict(base: dict, cand: dict) -> tuple[bool, list[str]]:
    """The rule written before any retrained router was measured (docs/router_rule.md)."""
    checks = [
        ("more historical portraits found", cand["historical_found"] > base["historical_found"]),
        *[(f"person IoU higher on {c}", cand["iou"][c]["person"] > base["iou"][c]["person"])
          for c in ("halftone", "mixed")],
        *[(f"clean {k} IoU >= 0.98x", cand["iou"]["clean"][k] >= 0.98 * base["iou"]["clean"][k])
          for k in ("person", "bird", "animal")],
        *[(f"single pasted {k} >= 0.98x", cand["single"][k] >= 0.98 * base["single"][k]) for k in ("bird", "animal")],
        *[(f"UTKFace {r} recall within 0.01", cand["utk_recall"][r] >= base["utk_recall"][r] - 0.01)
          for r in base["utk_recall"]],
    ]
    return all(ok for _, ok in checks), [f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks]


def descreen_verdict(plain: dict, descreened: dict) -> tuple[bool, list[str]]:
    """The descreening rule (docs/router_rule.md)."""
    checks = [
        ("as many historical portraits found", descreened["historical_found"] >= plain["historical_found"]),
        ("person IoU higher on halftone", descreened["iou"]["halftone"]["person"] > plain["iou"]["halftone"]["person"]),
        *[(f"clean {k} IoU within 0.005", descreened["iou"]["clean"][k] >= plain["iou"]["clean"][k] - 0.005)
          for k in ("person", "bird", "animal")],
    ]
    return all(ok for _, ok in checks), [f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks]


def markdown(rows: dict[str, dict], command: str) -> str:
    names = list(rows)
    lines = [f"# Routers on old photos\n\n`{command}`\n", "| figure | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    lines.append("| historical portraits with a person found (of 40) | "
                 + " | ".join(str(rows[n]["historical_found"]) for n in names) + " |")
    if all("historical_as_animal" in rows[n] for n in names):
        lines.append("| historical portraits with >= 10 % routed animal (of 40; none shows one) | "
                     + " | ".join(str(rows[n]["historical_as_animal"]) for n in names) + " |")
    for cond in CONDITIONS:
        for k in ("person", "bird", "animal"):
            vals = [rows[n]["iou"][cond][k] for n in names]
            lines.append(f"| {k} IoU, val masks {cond} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    for k in ("person", "bird", "animal"):
        ratios = ["; ".join(f"{rows[n]['iou'][c][k] / rows[n]['iou']['clean'][k]:.3f}"
                            for c in ("halftone", "grain", "fading")) for n in names]
        lines.append(f"| {k} IoU / clean IoU: halftone; grain; fading | " + " | ".join(ratios) + " |")
    for k in ("bird", "animal", "person"):
        lines.append(f"| single pasted {k}s routed > 0.5 | "
                     + " | ".join(f"{rows[n]['single'][k]:.3f}" for n in names) + " |")
    for r in RACES:
        lines.append(f"| UTKFace val recall, {r} (n={rows[names[0]]['utk_n'][r]}) | "
                     + " | ".join(f"{rows[n]['utk_recall'][r]:.3f}" for n in names) + " |")
    if all("halftone_split" in rows[n] for n in names):
        split = [rows[n]["halftone_split"] for n in names]
        lines.append(f"| halftone val prints whose screen is found (of {split[0]['prints']}) | "
                     + " | ".join(str(h["found"]) for h in split) + " |")
        for key, what in (("person_iou_found", "found"), ("person_iou_missed", "not found")):
            lines.append(f"| person IoU, halftone prints with the screen {what} | "
                         + " | ".join("-" if h[key] is None else f"{h[key]:.3f}" for h in split) + " |")
    for key, what in (("utk_recall", ""), ("utk_recall_old", " as old prints")):
        if not all(key in rows[n] for n in names):
            continue
        if what:
            for r in RACES:
                lines.append(f"| UTKFace val recall{what}, {r} | "
                             + " | ".join(f"{rows[n][key][r]:.3f}" for n in names) + " |")
        lines.append(f"| UTKFace recall{what} spread (max - min) | " + " | ".join(
            f"{max(rows[n][key].values()) - min(rows[n][key].values()):.3f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routers", nargs="+", default=["router"])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--ext", type=Path, default=None, help="the extension pack (person masks, UTKFace)")
    ap.add_argument("--historical", type=Path, default=REPO.parent / "shared" / "examples" / "historical")
    ap.add_argument("--per-category", type=int, default=150)
    ap.add_argument("--per-group", type=int, default=200, help="UTKFace val faces per ethnicity group")
    ap.add_argument("--bias", default=None, help="logit bias (JSON) for every router after the first")
    ap.add_argument("--calibrate", action="store_true",
                    help="choose each candidate's bird/animal logit bias on single subjects "
                         "(docs/router_rule.md; every router after the first but the baseline descreened)")
    ap.add_argument("--calibrate-seed", type=int, default=6, help="seed of the calibration's single subjects")
    ap.add_argument("--calibrate-person", action="store_true",
                    help="add a person logit bias to every candidate, chosen on train-split masks clean and as "
                         "old prints (docs/router_rule.md, 'A person bias')")
    ap.add_argument("--person-seed", type=int, default=30, help="seed of the person calibration's old prints")
    ap.add_argument("--person-per-category", type=int, default=40)
    ap.add_argument("--single-seed", type=int, default=0, help="seed of the single pasted subjects (rule 3)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "router_oldphotos")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.ext is None or not (args.ext / "colorize").is_dir():
        raise SystemExit("error: --ext: the extension pack is needed (person masks and UTKFace); see EXTEND.md")
    base = args.routers[0]

    def plain(spec: str) -> str:
        return spec.removesuffix("+descreen")

    candidates = [spec for spec in args.routers[1:] if plain(spec) != plain(base)]
    calibrated = {s: calibrate(s, args.data, args.calibrate_seed) for s in candidates} if args.calibrate else {}
    person_cal = {}
    if args.calibrate_person:
        prints = train_prints([args.data, args.ext], args.person_per_category, args.person_seed)
        for s in candidates:
            bias = calibrated[s]["chosen"] if s in calibrated else read_router_config(Path(plain(s)))[1].get(
                "logit_bias") or {}
            person_cal[s] = calibrate_person(s, bias, prints)
    # a person calibration that chooses no bias leaves no candidate (docs/router_rule.md, "A person bias")
    unbiased = [s for s, cal in person_cal.items() if not cal["chosen"]["person"]]
    candidates = [s for s in candidates if s not in unbiased]
    routers = [s for s in args.routers if s not in unbiased] if candidates or not unbiased else []
    sets = val_sets(args.data, args.ext, args.per_category) if routers else {}
    screened = screens_found(sets["halftone"]) if routers else []
    singles = single_subject_sets(args.data, n=60, seed=args.single_seed) if routers else {}
    faces = utk_faces(args.ext, args.per_group) if routers else {}
    old_faces = as_old_prints(faces)
    rows: dict[str, dict] = {}
    for i, spec in enumerate(routers):
        options = {"logit_bias": json.loads(args.bias)} if args.bias and i > 0 else {}
        if spec in calibrated or spec in person_cal:
            options = {"logit_bias": (person_cal.get(spec) or calibrated[spec])["chosen"]}
        router = load_spec(spec, options)
        with torch.inference_mode():
            hist = historical_shares(router, args.historical)
            iou, split = iou_by_condition(router, sets, screened)
            rows[spec] = {
                "historical_found": sum(v["person"] >= FOUND_SHARE for v in hist.values()),
                "historical_as_animal": sum(v["animal"] >= FOUND_SHARE for v in hist.values()),
                "historical_person_share": {k: v["person"] for k, v in hist.items()},
                "historical_animal_share": {k: v["animal"] for k, v in hist.items()},
                "iou": iou,
                "single": {k: round(v["share_over_half"], 3)
                           for k, v in single_subject_recall(router, singles).items()},
                "utk_recall": utk_recall(router, faces),
                "utk_recall_old": utk_recall(router, old_faces),
                "halftone_split": split,
                "utk_n": {r: len(v) for r, v in faces.items()},
            }
        print(spec, {k: v for k, v in rows[spec].items() if not k.endswith("_share")}, flush=True)
    expert = people_expert_l2ab(faces) if routers else {}
    # a router against the baseline (as both would run: descreened or not), descreening against its own router
    verdicts = {spec: verdict(rows[base], rows[spec]) for spec in candidates
                if spec.endswith("+descreen") == base.endswith("+descreen")}
    verdicts |= {spec: descreen_verdict(rows[plain(spec)], rows[spec])
                 for spec in args.routers if spec.endswith("+descreen") and plain(spec) in rows}
    command = "python bench/router_oldphotos.py " + " ".join(
        ["--routers", *args.routers, "--ext", "$EXT", "--per-category", str(args.per_category),
         "--per-group", str(args.per_group), "--single-seed", str(args.single_seed)]
        + (["--bias", f"'{args.bias}'"] if args.bias else [])
        + (["--calibrate", "--calibrate-seed", str(args.calibrate_seed)] if args.calibrate else [])
        + (["--calibrate-person", "--person-seed", str(args.person_seed), "--person-per-category",
            str(args.person_per_category)] if args.calibrate_person else []))
    md = markdown(rows, command) if rows else (f"# Routers on old photos\n\n`{command}`\n\nNo candidate: the "
                                               "person calibration chose no bias (docs/router_rule.md).\n")
    for spec, cal in calibrated.items():
        tried = "; ".join(f"{t['bias']}: birds {t['bird']:.3f}, animals {t['animal']:.3f}" for t in cal["tried"])
        md += f"\nCalibration of {spec} on seed-{args.calibrate_seed} singles: chose {cal['chosen']} ({tried})\n"
    for spec, cal in person_cal.items():
        tried = "; ".join(f"person {t['person']}: mIoU clean {t['miou_clean']:.4f}, mixed {t['miou_mixed']:.4f}"
                          for t in cal["tried"])
        md += (f"\nPerson calibration of {spec} on train-split masks (seed {args.person_seed}): chose "
               f"{cal['chosen']} ({tried})\n")
    md += "" if not expert else "\nShipped people expert alone, L2ab on UTKFace val by group: " + ", ".join(
        f"{r} {v}" for r, v in expert.items()) + "\n"
    for spec, (ok, checks) in verdicts.items():
        descreening = spec.endswith("+descreen") and plain(spec) in rows
        against = plain(spec) if descreening else base
        outcome = ("descreening on" if ok else "descreening off") if descreening else (
            "replaces it" if ok else "does not replace it")
        md += f"\n**{spec} against {against}: {outcome}**\n\n"
        md += "\n".join(f"- {c}" for c in checks) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"),
                      {"command": command, "routers": rows, "people_expert_l2ab": expert,
                       "calibration": calibrated or None, "person_calibration": person_cal or None,
                       "verdicts": {s: {"replaces": ok, "checks": c} for s, (ok, c) in verdicts.items()}})
    atomic_write_bytes(args.out.with_suffix(".md"), md.encode())
    print(md)


if __name__ == "__main__":
    main()
