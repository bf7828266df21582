"""Thread defaults: the cores this process may use, less those other processes keep busy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from ensemble_color.threads import busy_cores, configure_threads, default_threads, usable_cores


def test_usable_cores_follow_the_affinity_mask() -> None:
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no sched_getaffinity on this platform")
    assert usable_cores() == sorted(os.sched_getaffinity(0))


def test_a_competing_process_takes_a_core_from_the_default() -> None:
    if len(usable_cores()) < 2:
        pytest.skip("one usable core: nothing to take")
    quiet = busy_cores(0.3)
    if quiet > len(usable_cores()) - 1.5:
        pytest.skip(f"other processes already keep {quiet:.1f} cores busy: no idle core to take")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        loaded = busy_cores(0.3)
        threads = default_threads(0.3)
    finally:
        hog.kill()
        hog.wait()
    assert loaded >= quiet + 0.6  # the busy loop shows as (almost) a whole core
    assert 1 <= threads <= len(usable_cores()) - 1


def test_configure_threads_sets_torch_and_an_explicit_number_wins() -> None:
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        n = configure_threads(None)
        assert 1 <= n <= len(usable_cores()) and torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
