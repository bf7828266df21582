"""A small, resumable training loop shared by the expert, router and generalist trainers.

Why our own and not a framework: on two CPU cores the whole loop must be lean (bf16 autocast,
channels-last, in-memory batches), and resuming must restore the model, optimiser, schedule *and*
the batch sampler's random state so a resumed run is the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..plugins import write_state_dict


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 matmul (AVX512-BF16 / AMX): autocast then ~2x faster here."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def start_run(threads: int | None, seed: int, no_amp: bool) -> bool:
    """Common start of a trainer: torch threads, the seed; returns whether bf16 autocast is used."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return cpu_has_bf16() and not no_amp


def autocast_for(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast on CPU, fp16 on CUDA, nothing when disabled."""
    if not enabled:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class LoopConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup: int = 100
    val_every: int = 250
    ckpt_every: int = 250
    seed: int = 0
    amp: bool = True
    log_every: int = 20
    stop_at: int | None = None  #: stop (with a checkpoint) at this step; resume later with the same steps
    ema: float = 0.0  #: decay of an exponential moving average of the weights (0 = off); see :func:`train`


def cosine_lr(step: int, cfg: LoopConfig) -> float:
    """Linear warm-up then cosine decay to 2% of the peak: a schedule that needs no tuning per expert."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@dataclass
class TrainState:
    step: int = 0
    best_val: float = float("inf")
    best_step: int = -1
    seconds: float = 0.0
    images: int = 0


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters *and* buffers (BatchNorm statistics).

    Why: on a few hundred photos consecutive checkpoints of a fine-tune differ by more than the
    effect being selected for; the average over the last ~1/(1-decay) steps is smoother than any of them.
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def checkpoint_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint would ship: the moving average when the run kept one, else the live model."""
    if "ema" not in ckpt:
        return ckpt["model"]
    return {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}


@contextmanager
def weights_of(model: nn.Module, source: nn.Module | None) -> Iterator[None]:
    """Temporarily load ``source``'s weights into ``model`` (the trainers' closures validate ``model``)."""
    if source is None:
        yield
        return
    live = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(source.state_dict())
    try:
        yield
    finally:
        model.load_state_dict(live)


#: file name of a compact, committable resume point (see :func:`compact_checkpoint`)
COMPACT = "resume.safetensors"


def compact_checkpoint(run_dir: Path, out: Path | None = None) -> Path:
    """Shrink ``run_dir/checkpoint.pt`` to a committable ``resume.safetensors``: weights (and their moving
    average, and ``best.pt``'s weights when the run has chosen a best checkpoint so far) in fp16, step, schedule
    and sampler state as metadata; the optimiser moments are dropped.

    Why: a run that spans sessions must continue on a fresh machine, and the full checkpoint (fp32 weights,
    EMA and two Adam moments) is ~4x larger. On resume from it, AdamW restarts its moment estimates at the
    saved step (the learning-rate schedule continues where it was), which costs a brief re-warm-up, not
    the run.
    """
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    tensors = {f"model.{k}": v for k, v in ckpt["model"].items()}
    tensors |= {f"ema.{k}": v for k, v in ckpt.get("ema", {}).items() if isinstance(v, torch.Tensor)}
    if (run_dir / "best.pt").exists():  # else a resumed run would export its last weights, not its best
        best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
        tensors |= {f"best.{k}": v for k, v in best.items()}
    meta = {"state": json.dumps(ckpt["state"]), "sampler": ckpt["sampler"], "format": "ensemble_color-resume-1"}
    return write_state_dict(out or run_dir / COMPACT, tensors, fp16=True, metadata=meta)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``ensemble_color train compact``: for a run the session ends in the middle of (the trainer's own
    ``--compact`` writes the point only when the run stops by itself)."""
    p.add_argument("run_dirs", nargs="+", type=Path, help="run folders holding a checkpoint.pt")


def run(args: argparse.Namespace, argv: list[str] | None = None) -> None:
    for run_dir in args.run_dirs:
        if not (run_dir / "checkpoint.pt").is_file():
            raise SystemExit(f"error: {run_dir}: no checkpoint.pt to compact")
        out = compact_checkpoint(run_dir)
        print(f"{out}: {out.stat().st_size / 2**20:.1f} MiB")


def _load_compact(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    split: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "best": {}}
    for k, v in tensors.items():
        head, _, rest = k.partition(".")
        split[head][rest] = v
    return {**split, "state": json.loads(meta["state"]), "sampler": meta["sampler"]}


def train(model: nn.Module, run_dir: Path, cfg: LoopConfig,
          step_fn: Callable[[int], tuple[torch.Tensor, int, dict[str, float]]],
          validate: Callable[[], dict[str, float]], val_key: str,
          sampler_state: tuple[Callable[[], str], Callable[[str], None]],
          resume: bool = False, params: list | None = None,
          companions: dict[str, Any] | None = None) -> TrainState:
    """Run ``cfg.steps`` optimiser steps; ``step_fn(step)`` returns (loss, images, extra logs).

    Writes ``run_dir/checkpoint.pt`` (resume point), ``run_dir/best.pt`` (best ``val_key``, lower is
    better) and ``run_dir/log.jsonl``. With ``resume`` the run continues from its checkpoint.
    ``companions``: other trained objects the step function updates itself (an adversarial critic), each with
    ``state_dict``/``load_state_dict``; they are saved in and restored from ``checkpoint.pt`` (not in the compact
    resume point, which keeps the model only).
    """
    companions = companions or {}
    run_dir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, cfg))
    ema = weight_ema(model, cfg.ema) if cfg.ema else None
    state = TrainState()
    ckpt_path, best_path, log_path = run_dir / "checkpoint.pt", run_dir / "best.pt", run_dir / "log.jsonl"
    get_sampler_state, set_sampler_state = sampler_state
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        sched.load_state_dict(ckpt["sched"])
        state = TrainState(**ckpt["state"])
        set_sampler_state(ckpt["sampler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        torch.set_rng_state(ckpt["torch_rng"])
        for name, obj in companions.items():
            obj.load_state_dict(ckpt["companions"][name])
        print(f"resumed {run_dir} at step {state.step}")
    elif resume and (run_dir / COMPACT).exists():
        ckpt = _load_compact(run_dir / COMPACT)
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in ckpt["model"].items()})
        state = TrainState(**ckpt["state"])
        set_sampler_state(ckpt["sampler"])
        sched.last_epoch = state.step  # the schedule continues; AdamW's moments start afresh (compact_checkpoint)
        for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
            group["lr"] = base * cosine_lr(state.step, cfg)
        if ema is not None and ckpt["ema"]:
            ema_own = ema.state_dict()
            ema.load_state_dict({k: v.to(ema_own[k].dtype) for k, v in ckpt["ema"].items()})
        if ckpt["best"] and not best_path.exists():
            _atomic_torch_save({k: v.to(own[k].dtype) for k, v in ckpt["best"].items()}, best_path)
        torch.manual_seed(cfg.seed + state.step)
        print(f"resumed {run_dir} at step {state.step} from {COMPACT} (fresh optimiser moments)")
    elif not resume:
        log_path.unlink(missing_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def log(record: dict) -> None:
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        _atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "state": asdict(state), "sampler": get_sampler_state(),
                            "torch_rng": torch.get_rng_state(),
                            "companions": {name: obj.state_dict() for name, obj in companions.items()},
                            **({"ema": ema.state_dict()} if ema is not None else {})}, ckpt_path)

    bar = tqdm(total=cfg.steps, initial=state.step, desc=run_dir.name, mininterval=5, dynamic_ncols=True)
    window_t, window_n, running = time.perf_counter(), 0, None
    end = min(cfg.steps, cfg.stop_at) if cfg.stop_at is not None else cfg.steps
    while state.step < end:
        model.train()
        t0 = time.perf_counter()
        loss, n, extra = step_fn(state.step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        state.step += 1
        state.seconds += time.perf_counter() - t0
        state.images += n
        window_n += n
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if state.step % cfg.log_every == 0:
            ips = window_n / (time.perf_counter() - window_t)
            bar.set_postfix(loss=f"{running:.4f}", img_s=f"{ips:.0f}")
            log({"step": state.step, "loss": running, "img_per_s": ips, "lr": sched.get_last_lr()[0], **extra})
            window_t, window_n = time.perf_counter(), 0
        bar.update(1)
        if state.step % cfg.val_every == 0 or state.step == cfg.steps:
            model.eval()
            with weights_of(model, ema.module if ema is not None else None):
                with torch.inference_mode():
                    metrics = validate()
                if metrics[val_key] < state.best_val:
                    state.best_val, state.best_step = metrics[val_key], state.step
                    _atomic_torch_save(model.state_dict(), best_path)
            log({"step": state.step, "val": metrics})
            bar.write(f"step {state.step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            window_t = time.perf_counter()
        if state.step % cfg.ckpt_every == 0 or state.step in (cfg.steps, end):
            checkpoint()
    bar.close()
    if ema is not None and state.step >= cfg.steps:
        model.load_state_dict(ema.module.state_dict())
    return state


def train_throughput(state: TrainState) -> float:
    """Images per second of optimiser work (forward, backward, step, batch making), over the whole run."""
    return state.images / max(state.seconds, 1e-9)
