"""The evidence: routed ensemble vs single models vs the seed's hard merge — quality and speed, one run.

    python bench/compare.py --data ../shared/data --data $EXT [--composites 100] [--limit 100] [--repeats 5]

Methods (all see only L; all measured on exactly the same images):
  gray                 ab = 0
  v0 pipeline          the pipeline with the v0 weights (router and experts at ``v0_models.V0_COMMIT``,
                       restored from git by ``bench/v0_models.py``), today's code and defaults
  generalist alone     the generalist on the whole image, decoded as its manifest says (its own rule)
  <specialist> alone   each specialist (every expert claiming a route) on the whole image
  seed merge           every specialist colours the whole image; each pixel takes the colour of the
                       specialist picked by the hard arg-max route (no blending, no crops)
  routed (shipped)     the pipeline as shipped: soft blend, experts on crops, generalist fallback
  routed (before)      with ``--before COMMIT``: the pipeline with the router and experts shipped at COMMIT
                       (restored from git), today's code and defaults: what a change of weights brought
Data: every category's val split of every data root and the seeded val composites (of the first root).
The acceptance checks (written before the first run) head the report. Writes docs/results.md + .json,
docs/figures/ab_error_curves.png and docs/figures/composites_contact_sheet.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from timing_env import env_note, threading_env  # bench/ is this script's folder, hence on sys.path

from ensemble_color.color import join_l_ab, rgb_to_l
from ensemble_color.composite import ExpertRoute, choose_fallback, compose, upsample_ab
from ensemble_color.eval import metrics
from ensemble_color.eval.evaluate import evaluate, load_datasets, markdown
from ensemble_color.eval.perceptual import PerceptualScorer
from ensemble_color.io import to_pil
from ensemble_color.pipeline import Pipeline, PipelineOptions, working_size

CATEGORIES = ("scenes", "faces", "people", "birds", "animals")
ROUTED = "routed (shipped)"
BEFORE = "routed (before)"
#: colourfulness tolerance of the colour checks (the experts' perceptual rule: within 15 % of the truth)
CF_TOLERANCE = 0.15
AbMethod = Callable[[torch.Tensor], torch.Tensor]  # L (1, h, w) -> ab (2, h, w)


def alone(pipe: Pipeline, name: str) -> AbMethod:
    def run(L: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return pipe.experts[name].run(L[None])[0].cpu()
    return run


def specialists(pipe: Pipeline) -> list[str]:
    """The experts that claim a route class (the generalist is the fallback and claims none)."""
    return [n for n, e in pipe.experts.items() if e.spec.routes]


def seed_merge(pipe: Pipeline) -> AbMethod:
    """Hard arg-max merge of full-frame specialist outputs (the original ResNet-18 ensemble method)."""
    names = specialists(pipe)
    routes = [ExpertRoute(n, pipe.experts[n].spec.routes) for n in names]
    fallback = choose_fallback(routes)
    owner = {c: next((r.name for r in routes if c in r.routes), fallback) for c in pipe.router.route_classes}

    def run(L: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            hard = pipe.router(L[None])[0].argmax(0)
            ab = torch.zeros(2, *L.shape[-2:])
            outputs = {n: pipe.experts[n].run(L[None])[0].cpu() for n in names}
            for i, c in enumerate(pipe.router.route_classes):
                mask = hard == i
                ab[:, mask] = outputs[owner[c]][:, mask]
            return ab
    return run


def routed(pipe: Pipeline) -> AbMethod:
    def run(L: torch.Tensor) -> torch.Tensor:
        res = pipe.colorize(join_l_ab(L[None], torch.zeros(1, 2, *L.shape[-2:]))[0])
        return upsample_ab(res.ab_work, tuple(L.shape[-2:]))
    return run


def gray(L: torch.Tensor) -> torch.Tensor:
    return torch.zeros(2, *L.shape[-2:])


def build_methods(shipped: Pipeline, v0: Pipeline | None, before: Pipeline | None = None) -> dict[str, AbMethod]:
    m: dict[str, AbMethod] = {"gray": gray}
    if v0 is not None:
        m["v0 pipeline"] = routed(v0)
    if "generalist" in shipped.experts:
        m["generalist alone"] = alone(shipped, "generalist")
    m.update({f"{n} alone": alone(shipped, n) for n in specialists(shipped)})
    m["seed merge"] = seed_merge(shipped)
    m[ROUTED] = routed(shipped)
    if before is not None:
        m[BEFORE] = routed(before)
    return m


def checks(results: dict, speed_rows: list[dict]) -> list[tuple[str, bool, str]]:
    """The acceptance checks: (criterion, met, the numbers behind it)."""
    out = []
    comp = next((k for k in results if k.startswith("composites")), None)
    singles = [k for k in results if k != comp]
    for ds in [*singles, *([comp] if comp else [])]:
        r, g = results[ds][ROUTED], results[ds]["gray"]
        ok = r["l2ab"] < g["l2ab"] and r["auc"] > g["auc"] and r.get("agree1", 1) > g.get("agree1", 0)
        out.append((f"beats gray on {ds} (L2ab, AuC, agree@1)", ok,
                    f"{r['l2ab']:.2f} vs {g['l2ab']:.2f}; {r['auc']:.4f} vs {g['auc']:.4f}; "
                    f"{r.get('agree1', float('nan')):.3f} vs {g.get('agree1', float('nan')):.3f}"))
    for ds in singles:
        single = {m: v["l2ab"] for m, v in results[ds].items() if m.endswith(" alone")}
        best = min(single, key=single.get)
        r = results[ds][ROUTED]["l2ab"]
        out.append((f"within 1 % L2ab of the best single model on {ds}", r <= 1.01 * single[best],
                    f"{r:.2f} vs {single[best]:.2f} ({best})"))
        cf = results[ds][ROUTED]
        out.append((f"colourfulness within 20 % on {ds}", abs(cf["cf_gap"]) <= 0.2 * cf["cf_gt"],
                    f"{cf['cf']:.1f} vs {cf['cf_gt']:.1f}"))
    if comp:
        r = results[comp][ROUTED]["l2ab"]
        for rival in ("generalist alone", "seed merge"):
            if rival in results[comp]:
                o = results[comp][rival]["l2ab"]
                out.append((f"≥ 3 % L2ab below {rival} on the composites", r <= 0.97 * o, f"{r:.2f} vs {o:.2f}"))
    out += colour_checks(results, comp, singles)
    for row in speed_rows:
        if row["size"] == "1024x768" and row["method"] == ROUTED:
            out.append(("≥ 1.4× faster than the seed merge at 1024×768", row["vs_seed_merge"] <= 1 / 1.4,
                        f"{1 / row['vs_seed_merge']:.2f}×"))
    return out


def colour_checks(results: dict, comp: str | None, singles: list[str]) -> list[tuple[str, bool, str]]:
    """Checks of colour, not of pixel error (they need the perceptual scores): on every set the routed default
    has lower Fréchet and palette distances than the previous default (with ``--before``) and colourfulness
    within 15 % of the truth; on the composites it beats the generalist alone and the seed merge in Fréchet and
    palette distance. (Agree@1 above gray's and L2ab below gray's are the "beats gray" checks of :func:`checks`.)"""
    out = []
    for ds in [*singles, *([comp] if comp else [])]:
        r = results[ds][ROUTED]
        if "frechet" not in r:
            return []
        if BEFORE in results[ds]:
            b = results[ds][BEFORE]
            out.append((f"Fréchet and palette below the previous default on {ds}",
                        r["frechet"] < b["frechet"] and r["palette"] < b["palette"],
                        f"{r['frechet']:.1f} vs {b['frechet']:.1f}; {r['palette']:.2f} vs {b['palette']:.2f}"))
        out.append((f"colourfulness within {CF_TOLERANCE:.0%} of the truth on {ds}",
                    abs(r["cf_gap"]) <= CF_TOLERANCE * r["cf_gt"], f"{r['cf']:.1f} vs {r['cf_gt']:.1f}"))
    if comp:
        r = results[comp][ROUTED]
        for rival in ("generalist alone", "seed merge"):
            if rival in results[comp]:
                o = results[comp][rival]
                out.append((f"Fréchet and palette below {rival} on the composites",
                            r["frechet"] < o["frechet"] and r["palette"] < o["palette"],
                            f"{r['frechet']:.1f} vs {o['frechet']:.1f}; {r['palette']:.2f} vs {o['palette']:.2f}"))
    return out


def full_res(method: AbMethod, rgb: torch.Tensor, work: int) -> torch.Tensor:
    """RGB full-res -> L -> working size -> method -> upsample -> join: every non-pipeline method's path."""
    L = rgb_to_l(rgb[None])[0]
    Lw = F.interpolate(L[None], size=working_size(*L.shape[-2:], work), mode="bilinear", antialias=True,
                       align_corners=False)[0]
    return compose(L, method(Lw))


def speed(shipped: Pipeline, images: list[torch.Tensor], sizes: list[str], repeats: int) -> list[dict]:
    """Median seconds per method per size over ``images`` x ``repeats``, interleaved round-robin so noise hits
    all methods alike."""
    methods: dict[str, Callable[[torch.Tensor], object]] = {}
    work = shipped.options.work_size
    if "generalist" in shipped.experts:
        gen = alone(shipped, "generalist")
        methods["generalist alone"] = lambda rgb: full_res(gen, rgb, work)
    sm = seed_merge(shipped)
    methods["seed merge"] = lambda rgb: full_res(sm, rgb, work)
    methods[ROUTED] = shipped.colorize
    rows = []
    for size in sizes:
        w, h = map(int, size.split("x"))
        rgbs = [F.interpolate(im[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
                for im in images]
        times: dict[str, list[float]] = {k: [] for k in methods}
        for fn in methods.values():
            fn(rgbs[0])  # warm-up
        for _ in range(repeats):
            for rgb in rgbs:
                for k, fn in methods.items():
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        fn(rgb)
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            rows.append({"size": size, "method": k, "median_s": v,
                         "vs_generalist": v / med["generalist alone"] if "generalist alone" in med else None,
                         "vs_seed_merge": v / med["seed merge"],
                         "peak_rss_mb": memory_of(k, size)})
    return rows


def memory_of(method: str, size: str) -> float:
    """Peak RSS (MB) of a fresh process that loads the models and colours one image with ``method``."""
    proc = subprocess.run([sys.executable, __file__, "--memory-worker", method, size], capture_output=True,
                          text=True, timeout=600, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def memory_worker(method: str, size: str, data: str) -> None:
    # only the pipeline this method uses (experts are built lazily, on first use): RSS is the method's own
    pipe = Pipeline.load(device="cpu")
    rgb = speed_images(data, 1)[0]
    w, h = map(int, size.split("x"))
    rgb = F.interpolate(rgb[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    work = pipe.options.work_size
    fn = {"generalist alone": lambda x: full_res(alone(pipe, "generalist"), x, work),
          "seed merge": lambda x: full_res(seed_merge(pipe), x, work),
          ROUTED: pipe.colorize}[method]
    with torch.inference_mode():
        fn(rgb)
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a worker started by
    # this (model-laden) process would report the parent's high-water mark instead of its own
    from app_load import server_memory_mb  # bench/ is this script's folder, hence on sys.path

    print(server_memory_mb(os.getpid())["VmHWM"])


def speed_images(data: str, n: int) -> list[torch.Tensor]:
    """The first ``n`` val composites (several subjects, so several experts run), timed at every size."""
    from ensemble_color.data.composites import val_composites

    return [torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 for rgb, _ in val_composites(data, n=n, size=256)]


def load_v0(folder: Path) -> Pipeline:
    """The v0 pipeline restored from git into ``folder`` (``bench/v0_models.py``), today's code and defaults, but
    its generalist decoding as its manifest says (today's ``decode`` default was chosen for today's weights)."""
    from v0_models import V0_COMMIT, extract

    extract(V0_COMMIT, ["experts", "router"], folder)
    return Pipeline.load([folder / "experts"], device="cpu", use_shipped=False, router=str(folder / "router"),
                         options=PipelineOptions(decode={}))


def load_before(commit: str, folder: Path) -> Pipeline:
    """The router and experts shipped at ``commit`` (``ensemble_color/weights``, restored from git into
    ``folder``), with today's code and defaults."""
    from v0_models import extract

    extract(commit, ["ensemble_color/weights/experts", "ensemble_color/weights/router"], folder)
    weights = folder / "ensemble_color" / "weights"
    return Pipeline.load([weights / "experts"], device="cpu", use_shipped=False, router=str(weights / "router"))


def comparison_tiles(methods: dict[str, AbMethod], lab: torch.Tensor, cols: list[str]) -> list[torch.Tensor]:
    """One Lab photo (3, H, W) as sRGB tiles: the gray input, each method of ``cols``, the ground truth."""
    L = lab[:1]
    tiles = [join_l_ab(L[None], torch.zeros(1, 2, *L.shape[-2:]))[0]]
    tiles += [join_l_ab(L[None], methods[c](L.clone())[None])[0] for c in cols]
    tiles.append(join_l_ab(L[None], lab[None, 1:])[0])
    return tiles


def contact_sheet(methods: dict[str, AbMethod], images: list[torch.Tensor], path: Path, cols: list[str]) -> None:
    """Ten composites (rows) x (gray input, each method, ground truth) (columns)."""
    rows = [torch.cat(comparison_tiles(methods, lab, cols), dim=2) for lab in images]
    to_pil(torch.cat(rows, dim=1)).save(path)


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    ncol = min(5, len(sets))
    nrow = -(-len(sets) // ncol)
    fig, grid = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.8 * nrow), squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(sets):]:
        ax.axis("off")
    for ax, ds in zip(axes, sets, strict=False):
        for m, v in results[ds].items():
            if "curve" not in v or (m.endswith(" alone") and not m.startswith("generalist")):
                continue
            ax.plot(metrics.AUC_THRESHOLDS.numpy(), v["curve"], label=f"{m} ({v['auc']:.3f})")
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("ab error threshold")
        ax.set_xlim(0, 60)
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("fraction of pixels within threshold")
    axes[len(sets) - 1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def check_lines(rows: list[tuple[str, bool, str]]) -> list[str]:
    met = sum(ok for _, ok, _ in rows)
    return [f"{met} of {len(rows)} criteria met.", "", "| criterion | met | figures |", "|---|---|---|",
            *[f"| {c} | {'yes' if ok else '**no**'} | {f} |" for c, ok, f in rows], ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", action="append", default=None, help="data roots (default ../shared/data)")
    ap.add_argument("--composites", type=int, default=100)
    ap.add_argument("--limit", type=int, default=100, help="at most N evenly spaced images per val split")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speed-images", type=int, default=4, help="val composites timed (each at every size)")
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1024x768"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--no-v0", action="store_true", help="skip the v0 pipeline (needs the git history)")
    ap.add_argument("--before", default=None, metavar="COMMIT",
                    help="also measure the pipeline with the weights shipped at COMMIT (the previous default)")
    ap.add_argument("--no-perceptual", action="store_true", help="skip agree@1 / Fréchet (needs the train extra)")
    ap.add_argument("--memory-worker", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    roots = args.data or ["../shared/data"]
    if args.memory_worker:
        memory_worker(*args.memory_worker, roots[0])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shipped = Pipeline.load(device="cpu")
    with tempfile.TemporaryDirectory(prefix="compare_v0_") as tmp:
        v0 = None if args.no_v0 else load_v0(Path(tmp))
        before = load_before(args.before, Path(tmp) / "before") if args.before else None
        methods = build_methods(shipped, v0, before)
        folders = [f"{r}/colorize/{c}/val" for r in roots for c in CATEGORIES if Path(r, "colorize", c, "val").is_dir()]
        datasets = load_datasets(folders, args.composites, roots[0], args.limit)
        results = evaluate(methods, datasets, None if args.no_perceptual else PerceptualScorer())
        out = Path(args.out)
        fig_dir = out.parent / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        plot_curves(results, fig_dir / "ab_error_curves.png")
        comp_key = next(k for k in datasets if k.startswith("composites"))
        sheet_cols = [c for c in ["v0 pipeline", "generalist alone", "seed merge", BEFORE, ROUTED] if c in methods]
        contact_sheet(methods, datasets[comp_key][:10], fig_dir / "composites_contact_sheet.png", sheet_cols)
    speed_rows = speed(shipped, speed_images(roots[0], args.speed_images), args.sizes, args.repeats)
    done = checks(results, speed_rows)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "options": shipped.options.__dict__, "router": shipped.router.name, "experts": sorted(shipped.experts),
            "command": "python bench/compare.py " + " ".join(sys.argv[1:]), "env": threading_env()}
    for ds in results.values():
        for v in ds.values():
            if "curve" in v:  # the perceptual "ground truth" row has none
                v["curve"] = [round(x, 5) for x in v["curve"]]
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "checks": done, "quality": results,
                                                    "speed": speed_rows}, indent=1))
    speed_md = ["| input | method | median s | × generalist alone | × seed merge | peak RSS MB (fresh process) |",
                "|---|---|---:|---:|---:|---:|"]
    speed_md += [f"| {r['size']} | {r['method']} | {r['median_s']:.3f} | "
                 f"{'-' if r['vs_generalist'] is None else format(r['vs_generalist'], '.2f')} | "
                 f"{r['vs_seed_merge']:.2f} | {r['peak_rss_mb']:.0f} |" for r in speed_rows]
    reading_path = out.parent / "results_reading.md"
    reading = reading_path.read_text() if reading_path.exists() else "(no reading written yet)\n"
    doc = ["# Results: routed ensemble vs single models vs the seed's hard merge", "",
           f"Generated by `{meta['command']}` — do not edit by hand; the reading below is kept in "
           "`docs/results_reading.md`.", "",
           f"Pipeline options: `{meta['options']}`; router `{meta['router']}`; experts {meta['experts']}; "
           f"{meta['threads']} CPU threads, torch {meta['torch']}. {env_note()}", "",
           "## Checks (written before the run)", "", *check_lines(done),
           "## Reading", "", reading, "## Quality", "",
           "Every method sees only L. L2ab = mean Euclidean ab error (Lab units), AuC = area under the cumulative "
           "ab-error curve for thresholds 0-150 (normalised), colourfulness = Hasler & Süsstrunk; gap = method − "
           "ground truth.", "", markdown(results), "![ab error curves](figures/ab_error_curves.png)", "",
           "Contact sheet (10 val composites): gray input | " + " | ".join(sheet_cols) + " | ground truth", "",
           "![composites](figures/composites_contact_sheet.png)", "", "## Speed and memory", "",
           f"Median of {args.repeats} interleaved rounds over the first {args.speed_images} val composites, each "
           "resized to the input size (so the router finds several subjects); every method produces the "
           "full-resolution result. Peak RSS is that of "
           "a fresh process loading the pipeline the method uses and colouring one image.", "", *speed_md, ""]
    out.with_suffix(".md").write_text("\n".join(doc))
    print("\n".join(check_lines(done)))


if __name__ == "__main__":
    main()
