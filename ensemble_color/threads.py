"""How many CPU threads to use: the cores this process may run on, less those other processes keep busy.

Why: torch and onnxruntime each default to one thread per core of the machine. On a 2-core machine with
another CPU-bound process running, two threads that must meet at every layer's barrier wait for the one
whose core is taken, and a run becomes 5-10x slower than with one thread (``bench/busy.py``). So the default
is measured, not assumed: the cores in ``os.sched_getaffinity`` (a container or ``taskset`` may allow fewer
than ``os.cpu_count``) minus the cores other processes used over a short sample of ``/proc/stat``. An
explicit ``--threads N`` always wins.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def usable_cores() -> list[int]:
    """The CPU ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def _cpu_jiffies(cores: list[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies summed over ``cores`` from /proc/stat; None where there is no /proc."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cores}
    busy = total = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            values = [int(v) for v in parts[1:9]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + values[4]
            total += sum(values)
            busy += sum(values) - idle
    return (busy, total) if total else None


def busy_cores(sample_s: float = 0.1) -> float:
    """Cores of :func:`usable_cores` that *other* processes kept busy over ``sample_s`` seconds (0 if unknown)."""
    cores = usable_cores()
    first, own0, t0 = _cpu_jiffies(cores), os.times(), time.monotonic()
    time.sleep(sample_s)
    second, own1, t1 = _cpu_jiffies(cores), os.times(), time.monotonic()
    if first is None or second is None or second[1] <= first[1]:
        return 0.0
    share = (second[0] - first[0]) / (second[1] - first[1])  # busy share of the usable cores
    own = (own1.user + own1.system - own0.user - own0.system) / max(t1 - t0, 1e-6)  # our own cores' worth
    return max(0.0, share * len(cores) - own)


def default_threads(sample_s: float = 0.1) -> int:
    """Threads that fit: usable cores less the ones other processes keep busy (at least 1)."""
    return max(1, len(usable_cores()) - round(busy_cores(sample_s)))


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (or :func:`default_threads`) and its inter-op pool to one
    thread (the pipeline runs one operator at a time; a second pool only competes); return the number, which
    callers also give onnxruntime (``PipelineOptions.threads``)."""
    import torch

    n = threads if threads and threads > 0 else default_threads()
    torch.set_num_threads(n)
    # settable once, before any inter-op work; a second pipeline in the same process keeps the first setting
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return n
