"""Training throughput of the expert architecture at 128 px crops: images per second, side by side.

    python bench/train_throughput.py [--data ../shared/data/colorize/birds/train] [--steps 12]

Variants (same data, same batches, interleaved step by step): fp32, fp32 channels-last,
bf16-autocast channels-last (what `train expert` uses on CPUs with native bf16). Each step is the
whole training step: batch sampling from the in-memory cache, Lab conversion, forward, backward,
optimiser. Reports medians and writes bench/results/train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ensemble_color.color import AB_RANGE
from ensemble_color.nets import create_model
from ensemble_color.train.data import CropSampler, ImageCache
from ensemble_color.train.loop import autocast_for, cpu_has_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/colorize/birds/train")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="bench/results/train_throughput")
    args = ap.parse_args()
    cache = ImageCache.from_folders([args.data], 256, limit=400)
    variants = {"fp32": (False, False), "fp32 channels-last": (True, False)}
    if cpu_has_bf16():
        variants["bf16 autocast channels-last"] = (True, True)
    state = {}
    for name, (cl, amp) in variants.items():
        torch.manual_seed(0)
        model = create_model("resnet18-deconv")
        if cl:
            model = model.to(memory_format=torch.channels_last)
        state[name] = (model, torch.optim.AdamW(model.parameters(), 1e-3), CropSampler(cache, 128, 0), cl, amp)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for step in range(args.steps + 2):
        for name, (model, opt, sampler, cl, amp) in state.items():
            t0 = time.perf_counter()
            lab = sampler.batch_lab(args.batch_size)
            L = lab[:, :1].contiguous(memory_format=torch.channels_last) if cl else lab[:, :1]
            with autocast_for(torch.device("cpu"), amp):
                pred = model(L)
            loss = F.mse_loss(pred.float() / AB_RANGE, lab[:, 1:] / AB_RANGE)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step >= 2:  # first two steps warm up allocators / oneDNN kernels
                times[name].append(time.perf_counter() - t0)
    rows = [{"variant": k, "median_step_s": statistics.median(v),
             "images_per_s": args.batch_size / statistics.median(v)} for k, v in times.items()]
    base = rows[0]["images_per_s"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "batch_size": args.batch_size,
            "crop": 128, "steps": args.steps}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = ["| variant | median step (s) | images/s | × fp32 |", "|---|---:|---:|---:|"]
    md += [f"| {r['variant']} | {r['median_step_s']:.3f} | {r['images_per_s']:.1f} | {r['images_per_s'] / base:.2f} |"
           for r in rows]
    md.append(f"\nresnet18-deconv, 128 px crops, batch {args.batch_size}, {meta['threads']} threads, "
              f"torch {meta['torch']}, median of {args.steps} interleaved steps.")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
