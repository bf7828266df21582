"""Speed and memory of the full pipeline vs a single expert, measured side by side in one run.

    python bench/speed.py [--repeats 7] [--out bench/results/speed]

For each input size (512x512 and 1024x768 by default) it times, interleaved round by round so
machine noise hits every variant alike:
  * ``pipeline``: load-free colourisation (router + experts on crops + blend + full-res join);
  * ``single_expert``: the fallback/background expert alone on the same working-size L, joined the
    same way (the cheapest honest colouriser at the same working size);
and reports medians, the ratio pipeline / single expert, the router's share of pipeline time, and
peak RSS (process high-water mark, so it only grows: read it per size in run order).
Writes JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from ensemble_color.color import join_l_ab, rgb_to_l
from ensemble_color.composite import choose_fallback, upsample_ab
from ensemble_color.pipeline import Pipeline, working_size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def photo_like(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A deterministic smooth gray test image (low-pass noise), (3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 1, h // 16 + 1, w // 16 + 1, generator=g)
    img = torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return img[0].expand(3, -1, -1).contiguous()


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sizes", nargs="+", default=["512x512", "1024x768"], help="WxH")
    ap.add_argument("--router", default="embedded")
    ap.add_argument("--experts", action="append", default=[])
    ap.add_argument("--out", default="bench/results/speed")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = Pipeline.load(args.experts, router=args.router, device="cpu")
    single, single_name = single_expert_fn(pipe)
    rows = []
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        img = photo_like(h, w)
        pipe.colorize(img)  # warm-up: builds every expert, allocator settles
        single(img)
        t_pipe, t_single, t_router = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = pipe.colorize(img)
            t_pipe.append(time.perf_counter() - t0)
            t_router.append(res.seconds["router"])
            t0 = time.perf_counter()
            single(img)
            t_single.append(time.perf_counter() - t0)
        med_p, med_s = statistics.median(t_pipe), statistics.median(t_single)
        rows.append({"size": size, "work_size": pipe.options.work_size, "pipeline_s": med_p, "single_expert_s": med_s,
                     "ratio_pipeline_over_single": med_p / med_s, "router_s": statistics.median(t_router),
                     "router_share": statistics.median(r / p for r, p in zip(t_router, t_pipe, strict=True)),
                     "experts_run": sorted(res.boxes), "peak_rss_mb_after": peak_rss_mb(),
                     "pipeline_all_s": t_pipe, "single_all_s": t_single})
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor(),
            "router": pipe.router.name, "experts": sorted(pipe.experts), "single_expert": single_name,
            "repeats": args.repeats, "image": "synthetic smooth gray (bench/speed.py photo_like)"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = ["| input | pipeline median (s) | single expert median (s) | ratio | router share | peak RSS (MB) |",
          "|---|---:|---:|---:|---:|---:|"]
    md += [f"| {r['size']} | {r['pipeline_s']:.3f} | {r['single_expert_s']:.3f} | "
           f"{r['ratio_pipeline_over_single']:.2f} | {r['router_share']:.0%} | {r['peak_rss_mb_after']:.0f} |"
           for r in rows]
    md.append(f"\nrouter `{meta['router']}`, experts {meta['experts']}, single expert = `{single_name}`, "
              f"{meta['threads']} threads, {args.repeats} interleaved repeats, torch {meta['torch']}.")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
