"""The evidence: routed ensemble vs single models vs the seed's hard merge — quality and speed, one run.

    python bench/compare.py [--data ../shared/data] [--composites 100] [--limit N] [--repeats 5]

Methods (all see only L; all measured on exactly the same images):
  gray                 ab = 0
  generalist (soft)    the generalist alone, annealed-mean decoding of its 313-bin head
  generalist (reg)     the generalist alone, its regression head
  <specialist> alone   each specialist on the whole image
  seed merge           every specialist colours the whole image; each pixel takes the colour of the
                       specialist picked by the hard arg-max route (no blending, no crops)
  routed (shipped)     the pipeline as shipped: soft blend, experts on crops, generalist fallback
  routed (gen. router) the same with the generalist's segmentation head as router
  routed + context     the shipped pipeline with --context 0.2 0.5 (subjects filling much of the frame
                       take the background too; opt-in, quality only)
Data: each category's val split and the seeded val composites. Writes docs/results.md + .json,
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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from ensemble_color import metrics
from ensemble_color.color import join_l_ab, rgb_to_l
from ensemble_color.composite import SUBJECT_CONTEXT_RAMP, ExpertRoute, choose_fallback, compose, upsample_ab
from ensemble_color.evaluate import evaluate, load_datasets, markdown
from ensemble_color.io import to_pil
from ensemble_color.perceptual import PerceptualScorer
from ensemble_color.pipeline import Pipeline, working_size

SPECIALISTS = ("scenes", "faces", "birds", "animals")
AbMethod = Callable[[torch.Tensor], torch.Tensor]  # L (1, h, w) -> ab (2, h, w)


@contextmanager
def decoding(pipe: Pipeline, mode: str) -> Iterator[None]:
    """Temporarily switch the generalist's decoding (soft / regression / …)."""
    model = pipe.experts["generalist"].model
    old = model.decode
    model.decode = mode
    try:
        yield
    finally:
        model.decode = old


def alone(pipe: Pipeline, name: str, decode: str | None = None) -> AbMethod:
    def run(L: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if decode is None:
                return pipe.experts[name].run(L[None])[0].cpu()
            with decoding(pipe, decode):
                return pipe.experts[name].run(L[None])[0].cpu()
    return run


def seed_merge(pipe: Pipeline) -> AbMethod:
    """Hard arg-max merge of full-frame specialist outputs (the original ResNet-18 ensemble method)."""
    names = [n for n in SPECIALISTS if n in pipe.experts]
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


def build_methods(shipped: Pipeline, gen_routed: Pipeline | None) -> dict[str, AbMethod]:
    m: dict[str, AbMethod] = {"gray": gray}
    if "generalist" in shipped.experts:
        m["generalist (soft)"] = alone(shipped, "generalist", "soft")
        m["generalist (reg)"] = alone(shipped, "generalist", "regression")
    m.update({f"{n} alone": alone(shipped, n) for n in SPECIALISTS if n in shipped.experts})
    m["seed merge"] = seed_merge(shipped)
    m["routed (shipped)"] = routed(shipped)
    if gen_routed is not None:
        m["routed (generalist router)"] = routed(gen_routed)
    m["routed + context"] = routed(shipped.with_options(context=SUBJECT_CONTEXT_RAMP))
    return m


def full_res(method: AbMethod, rgb: torch.Tensor, work: int) -> torch.Tensor:
    """RGB full-res -> L -> working size -> method -> upsample -> join: every non-pipeline method's path."""
    L = rgb_to_l(rgb[None])[0]
    Lw = F.interpolate(L[None], size=working_size(*L.shape[-2:], work), mode="bilinear", antialias=True,
                       align_corners=False)[0]
    return compose(L, method(Lw))


def speed(shipped: Pipeline, gen_routed: Pipeline | None, images: list[torch.Tensor], sizes: list[str],
          repeats: int) -> list[dict]:
    """Median seconds per method per size over ``images`` x ``repeats``, interleaved round-robin so noise hits
    all methods alike."""
    methods: dict[str, Callable[[torch.Tensor], object]] = {}
    work = shipped.options.work_size
    if "generalist" in shipped.experts:
        gen = alone(shipped, "generalist")
        methods["generalist alone"] = lambda rgb: full_res(gen, rgb, work)
    sm = seed_merge(shipped)
    methods["seed merge"] = lambda rgb: full_res(sm, rgb, work)
    methods["routed (shipped)"] = shipped.colorize
    if gen_routed is not None:
        methods["routed (generalist router)"] = gen_routed.colorize
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
    pipe = Pipeline.load(device="cpu", router="generalist" if method == "routed (generalist router)" else "embedded")
    rgb = speed_images(data, 1)[0]
    w, h = map(int, size.split("x"))
    rgb = F.interpolate(rgb[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    work = pipe.options.work_size
    fn = {"generalist alone": lambda x: full_res(alone(pipe, "generalist"), x, work),
          "seed merge": lambda x: full_res(seed_merge(pipe), x, work),
          "routed (shipped)": pipe.colorize,
          "routed (generalist router)": pipe.colorize}[method]
    with torch.inference_mode():
        fn(rgb)
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across fork + exec, so a worker started by
    # this (model-laden) process would report the parent's high-water mark instead of its own
    from app_load import server_memory_mb  # bench/ is this script's folder, hence on sys.path

    print(server_memory_mb(os.getpid())["VmHWM"])


def speed_images(data: str, n: int) -> list[torch.Tensor]:
    """The first ``n`` val composites (several subjects, so several experts run), timed at every size."""
    from ensemble_color.train.composites import val_composites

    return [torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 for rgb, _ in val_composites(data, n=n, size=256)]


def load_pipelines() -> tuple[Pipeline, Pipeline | None]:
    shipped = Pipeline.load(device="cpu")
    gen_routed = Pipeline.load(device="cpu", router="generalist") if "generalist" in shipped.experts else None
    return shipped, gen_routed


def contact_sheet(methods: dict[str, AbMethod], images: list[torch.Tensor], path: Path, cols: list[str]) -> None:
    """Ten composites (rows) x (gray input, each method, ground truth) (columns)."""
    rows = []
    for lab in images:
        L = lab[:1]
        tiles = [join_l_ab(L[None], torch.zeros(1, 2, *L.shape[-2:]))[0]]
        tiles += [join_l_ab(L[None], methods[c](L.clone())[None])[0] for c in cols]
        tiles.append(join_l_ab(L[None], lab[None, 1:])[0])
        rows.append(torch.cat(tiles, dim=2))
    to_pil(torch.cat(rows, dim=1)).save(path)


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], sets, strict=True):
        for m, v in results[ds].items():
            if "curve" not in v or (m.endswith(" alone") and not m.startswith("generalist")):
                continue
            ax.plot(metrics.AUC_THRESHOLDS.numpy(), v["curve"], label=f"{m} ({v['auc']:.3f})")
        ax.set_title(ds, fontsize=9)
        ax.set_xlabel("ab error threshold")
        ax.set_xlim(0, 60)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of pixels within threshold")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--composites", type=int, default=100)
    ap.add_argument("--limit", type=int, default=None, help="at most N images per val split")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speed-images", type=int, default=4, help="val composites timed (each at every size)")
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1024x768"])
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--no-perceptual", action="store_true", help="skip agree@1 / Fréchet (needs the train extra)")
    ap.add_argument("--memory-worker", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_worker:
        memory_worker(*args.memory_worker, args.data)
        return
    torch.manual_seed(0)
    shipped, gen_routed = load_pipelines()
    methods = build_methods(shipped, gen_routed)
    folders = [f"{args.data}/colorize/{c}/val" for c in SPECIALISTS]
    datasets = load_datasets(folders, args.composites, args.data, args.limit)
    results = evaluate(methods, datasets, None if args.no_perceptual else PerceptualScorer())
    out = Path(args.out)
    fig_dir = out.parent / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(results, fig_dir / "ab_error_curves.png")
    comp_key = next(k for k in datasets if k.startswith("composites"))
    sheet_cols = [c for c in ["generalist (soft)", "seed merge", "routed (shipped)"] if c in methods]
    contact_sheet(methods, datasets[comp_key][:10], fig_dir / "composites_contact_sheet.png", sheet_cols)
    speed_rows = speed(shipped, gen_routed, speed_images(args.data, args.speed_images), args.sizes, args.repeats)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "options": shipped.options.__dict__, "router": shipped.router.name, "experts": sorted(shipped.experts),
            "command": "python bench/compare.py " + " ".join(sys.argv[1:])}
    for ds in results.values():
        for v in ds.values():
            if "curve" in v:  # the perceptual "ground truth" row has none
                v["curve"] = [round(x, 5) for x in v["curve"]]
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "quality": results, "speed": speed_rows}, indent=1))
    speed_md = ["| input | method | median s | × generalist alone | × seed merge | peak RSS MB (fresh process) |",
                "|---|---|---:|---:|---:|---:|"]
    speed_md += [f"| {r['size']} | {r['method']} | {r['median_s']:.3f} | "
                 f"{r['vs_generalist']:.2f} | {r['vs_seed_merge']:.2f} | {r['peak_rss_mb']:.0f} |"
                 if r["vs_generalist"] is not None else
                 f"| {r['size']} | {r['method']} | {r['median_s']:.3f} | - | {r['vs_seed_merge']:.2f} | "
                 f"{r['peak_rss_mb']:.0f} |" for r in speed_rows]
    reading_path = out.parent / "results_reading.md"
    reading = reading_path.read_text() if reading_path.exists() else "(no reading written yet)\n"
    doc = ["# Results: routed ensemble vs single models vs the seed's hard merge", "",
           f"Generated by `{meta['command']}` — do not edit by hand; the reading below is kept in "
           "`docs/results_reading.md`.", "",
           f"Pipeline options: `{meta['options']}`; router `{meta['router']}`; experts {meta['experts']}; "
           f"{meta['threads']} CPU threads, torch {meta['torch']}.", "",
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
    print("\n".join(doc))


if __name__ == "__main__":
    main()
