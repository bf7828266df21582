"""Speed and memory of the full pipeline vs a single expert, measured side by side in one run.

    python bench/speed.py [--repeats 7] [--out bench/results/speed] [--variants default torch onnxruntime]

For each input size (512x512 and 1024x768 by default) it times, interleaved round by round so
machine noise hits every variant alike:
  * ``default``: the pipeline as it ships (``PipelineOptions()``: experts on torch, the router's
    segmenter on onnxruntime when it is installed, ``router_backend="auto"``), load-free colourisation
    (router + experts on crops + blend + full-res join); the router share is reported for it;
  * ``single_expert``: the fallback/background expert alone on the same working-size L, joined the
    same way (the cheapest honest colouriser at the same working size);
  * ``torch``: everything on torch (``router_backend="torch"``): what the router on onnxruntime buys;
  * ``onnxruntime``: the router's segmenter and the experts on onnxruntime (``--backend onnxruntime``,
    converted in memory at load), when onnxruntime is installed;
  * with ``--contiguous``, ``torch (contiguous)``: the all-torch pipeline with its weights put back in the
    default layout (the pipeline loads them channels-last, ``loading._torch_expert``): what that choice buys;
and reports medians, the ratio pipeline / single expert, the router's share of pipeline time, the
speed-up of the first variant over the others end to end and per stage (where the time goes), and peak
RSS (process high-water mark, so it only grows: read it per size in run order).
Writes JSON and Markdown.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from compare import load_before  # bench/ is this script's folder, hence on sys.path
from timing_env import env_note, threading_env

from ensemble_color.color import join_l_ab, rgb_to_l
from ensemble_color.composite import choose_fallback, upsample_ab
from ensemble_color.pipeline import Pipeline, working_size

STAGES = ("load_resize", "router", "experts", "compose")  #: ColorizeResult.seconds keys, in pipeline order


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: the photo every size is made from: the same content at every size, so the same experts run and the sizes
#: compare the pipeline's cost, not the routing of different images (a different low-pass noise image per
#: size once sent 512x512 to four experts and 1024x768 to two, and 512x512 looked slower than 1024x768)
PHOTO = Path(__file__).resolve().parent.parent / "examples" / "historical_woman_10.jpg"


def photo_like(h: int, w: int) -> torch.Tensor:
    """:data:`PHOTO` resized (and centre-cropped to the aspect) to (3, H, W): a real portrait at every size."""
    from ensemble_color.io import load_image

    rgb = load_image(PHOTO).rgb
    ph, pw = rgb.shape[-2:]
    s = max(h / ph, w / pw)
    big = torch.nn.functional.interpolate(rgb[None], size=(max(h, round(ph * s)), max(w, round(pw * s))),
                                          mode="bilinear", antialias=True, align_corners=False)[0]
    y0, x0 = (big.shape[-2] - h) // 2, (big.shape[-1] - w) // 2
    return big[:, y0:y0 + h, x0:x0 + w].clamp(0, 1).contiguous()


def single_expert_fn(pipe: Pipeline):
    name = choose_fallback(pipe.routes)
    expert = pipe.experts[name]

    @torch.inference_mode()
    def run(rgb: torch.Tensor) -> torch.Tensor:
        L = rgb_to_l(rgb[None])[0]
        h, w = working_size(*L.shape[-2:], pipe.options.work_size)
        Lw = torch.nn.functional.interpolate(L[None], size=(h, w), mode="bilinear", antialias=True,
                                             align_corners=False)
        ab = expert.run(Lw)[0].cpu()
        return join_l_ab(L, upsample_ab(ab, tuple(L.shape[-2:])))
    return run, name


#: variant -> the options it loads with (``threads`` added from the command line)
VARIANTS = {"default": {}, "torch": {"backend": "torch", "router_backend": "torch"},
            "onnxruntime": {"backend": "onnxruntime", "router_backend": "onnxruntime"}}


def contiguous_copy(args: argparse.Namespace) -> Pipeline:
    """The all-torch pipeline with every weight in the default (contiguous) memory layout."""
    p = Pipeline.load(args.experts, router=args.router, device="cpu", **VARIANTS["torch"])
    for expert in p.experts.values():
        expert.model.to(memory_format=torch.contiguous_format)
    if isinstance(p.router.segmenter, torch.nn.Module):
        p.router.segmenter.to(memory_format=torch.contiguous_format)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1024x768"], help="WxH")
    ap.add_argument("--router", default="embedded")
    ap.add_argument("--experts", action="append", default=[])
    ap.add_argument("--out", default="bench/results/speed")
    ap.add_argument("--threads", type=int, default=None, help="torch threads and each onnxruntime session's")
    ap.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                    help="the first is the one whose router share is reported; default: all three when "
                         "onnxruntime is installed, else default and torch (then the same pipeline)")
    ap.add_argument("--contiguous", action="store_true",
                    help="also time the torch pipeline with contiguous (not channels-last) weights")
    ap.add_argument("--before", default=None, metavar="COMMIT",
                    help="also time the default pipeline with the weights shipped at COMMIT (what new weights cost)")
    ap.add_argument("--note", default="", help="a line printed above the tables (e.g. 'measured under load')")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    backends = args.variants or ["default", "torch", *(["onnxruntime"] if has_ort else [])]
    pipes = {b: Pipeline.load(args.experts, router=args.router, device="cpu",
                              **VARIANTS[b], threads=args.threads) for b in backends}
    if args.contiguous:
        backends.append("torch (contiguous)")
        pipes[backends[-1]] = contiguous_copy(args)
    if args.before:  # the folder lives as long as main: experts are built lazily from it
        before_dir = tempfile.TemporaryDirectory(prefix="speed_before_")
        backends.append(f"weights at {args.before}")
        pipes[backends[-1]] = load_before(args.before, Path(before_dir.name))
    pipe = pipes[backends[0]]
    single, single_name = single_expert_fn(pipe)
    rows = []
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        img = photo_like(h, w)
        for p in pipes.values():
            p.colorize(img)  # warm-up: builds every expert, allocator settles
        single(img)
        t_pipe: dict[str, list[float]] = {b: [] for b in pipes}
        t_stage: dict[str, dict[str, list[float]]] = {b: {k: [] for k in STAGES} for b in pipes}
        t_single, t_router, results = [], [], {}
        for _ in range(args.repeats):
            for b, p in pipes.items():  # interleaved: the backends share every round's machine noise
                t0 = time.perf_counter()
                results[b] = p.colorize(img)
                t_pipe[b].append(time.perf_counter() - t0)
                for k in STAGES:
                    t_stage[b][k].append(results[b].seconds[k])
            t_router.append(results[backends[0]].seconds["router"])
            t0 = time.perf_counter()
            single(img)
            t_single.append(time.perf_counter() - t0)
        res = results[backends[0]]
        med_p, med_s = statistics.median(t_pipe[backends[0]]), statistics.median(t_single)
        row = {"size": size, "work_size": pipe.options.work_size, "backend": backends[0], "pipeline_s": med_p,
               "single_expert_s": med_s, "ratio_pipeline_over_single": med_p / med_s,
               "router_s": statistics.median(t_router),
               "router_share": statistics.median(r / p for r, p in zip(t_router, t_pipe[backends[0]], strict=True)),
               "experts_run": sorted(res.boxes), "peak_rss_mb_after": peak_rss_mb(),
               "pipeline_all_s": t_pipe[backends[0]], "single_all_s": t_single,
               "backends": {b: {"pipeline_s": statistics.median(t_pipe[b]), "pipeline_all_s": t_pipe[b],
                                "stages_s": {k: statistics.median(v) for k, v in t_stage[b].items()},
                                "experts_run": sorted(results[b].boxes)} for b in pipes}}
        rows.append(row)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
            "router": pipe.router.name, "experts": sorted(pipe.experts), "single_expert": single_name,
            "repeats": args.repeats, "image": f"{PHOTO.name} resized to each size (bench/speed.py photo_like)",
            "backends": backends,
            "variants": {b: VARIANTS.get(b, "default options, earlier weights" if b.startswith("weights at")
                                     else "all-torch, contiguous weights") for b in backends},
            "router_backends": {b: p.router.name for b, p in pipes.items()}, "note": args.note, "env": threading_env()}
    if has_ort:
        meta["onnxruntime"] = importlib.metadata.version("onnxruntime")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = ["| input | pipeline median (s) | single expert median (s) | ratio | router share | peak RSS (MB) |",
          "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['size']} | {r['pipeline_s']:.3f} | {r['single_expert_s']:.3f} | "
           f"{r['ratio_pipeline_over_single']:.2f} | {r['router_share']:.0%} | {r['peak_rss_mb_after']:.0f} |"
           for r in rows]
    md.append(f"\nrouter `{meta['router']}`, experts {meta['experts']}, single expert = `{single_name}`, "
              f"{meta['threads']} threads, {args.repeats} interleaved repeats, torch {meta['torch']}. {env_note()}")
    if len(pipes) > 1:
        md += backend_table(rows, backends, meta)
    if args.note:
        md.insert(0, f"**{args.note}**\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def backend_table(rows: list[dict], backends: list[str], meta: dict) -> list[str]:
    """Markdown: end-to-end medians per backend, the speed-up over the first, and per-stage medians."""
    base = backends[0]
    head = "| input | " + " | ".join(f"{b} (s)" for b in backends) + " | " + \
        " | ".join(f"{base} / {b}" for b in backends[1:]) + " | " + \
        " | ".join(f"{b}: {' / '.join(STAGES)} (ms)" for b in backends) + " |"
    md = ["", head, "|---|" + "---:|" * (2 * len(backends) - 1 + len(backends))]
    for r in rows:
        med = {b: r["backends"][b]["pipeline_s"] for b in backends}
        stages = [" / ".join(f"{r['backends'][b]['stages_s'][k] * 1000:.0f}" for k in STAGES) for b in backends]
        md.append(f"| {r['size']} | " + " | ".join(f"{med[b]:.3f}" for b in backends) + " | "
                  + " | ".join(f"{med[base] / med[b]:.2f}×" for b in backends[1:]) + " | " + " | ".join(stages) + " |")
    md.append(f"\nVariants measured in the same rounds, interleaved (routers: {meta['router_backends']}); "
              f"onnxruntime {meta.get('onnxruntime', '-')} can run the router's segmenter and the experts, torch "
              "always runs everything else (resize, routing table, crops, blend, guided upsampling, Lab join), so "
              "`router`/`experts` are what it can speed up.")
    return md


if __name__ == "__main__":
    main()
