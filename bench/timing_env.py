"""The environment variables that change how fast torch runs, recorded beside every timing.

Why: ``OMP_WAIT_POLICY=PASSIVE`` (which training beside other work wants: its threads sleep instead of spinning)
makes every parallel region of an inference pay a wake-up; on a 2-core machine the small compare run
(``bench/compare.py --limit 8 --composites 10``) measured the routed pipeline at 1024×768 0.076 s with the
default and 0.129 s with PASSIVE, and the seed merge 0.092 vs 0.134 s, so a timing taken under it says little
about what users get. Timings record the variables and warn about it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_BLOCKTIME")


def threading_env() -> dict[str, str]:
    """The threading variables set in this process's environment (empty: torch's defaults)."""
    return {k: os.environ[k] for k in VARIABLES if k in os.environ}


def env_note() -> str:
    """One line for a timing report: the variables, and a warning when they distort the timing."""
    env = threading_env()
    if not env:
        return "Threading environment: defaults (no OMP_/MKL_ variables set)."
    note = "Threading environment: " + ", ".join(f"{k}={v}" for k, v in env.items()) + "."
    if env.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        note += " **Measured with OMP_WAIT_POLICY=PASSIVE, which slows inference (see bench/timing_env.py): " \
                "not the default users run.**"
    return note


def write_report(out: Path, data: dict, lines: list[str]) -> None:
    """``out.json`` (the figures) and ``out.md`` (the table), and the table on stdout: what every bench writes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

