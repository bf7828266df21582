"""The shipped weights on fixed photos give the recorded result: a change of weights, routing table or default
options is noticed (regenerate with ``python tests/make_golden.py`` when the change is meant)."""

from __future__ import annotations

import json

import pytest
from make_golden import GOLDEN, golden, weight_digests

pytestmark = pytest.mark.slow

AB_TOLERANCE = 0.5     #: Lab units, per 8x8 cell: float rounding across CPUs stays far below this
SHARE_TOLERANCE = 0.01


def test_shipped_weights_are_the_recorded_ones() -> None:
    recorded = json.loads(GOLDEN.read_text())["weights"]
    assert weight_digests() == recorded, "shipped weights changed: run python tests/make_golden.py and commit"


def test_shipped_pipeline_gives_the_recorded_colours() -> None:
    recorded = json.loads(GOLDEN.read_text())["photos"]
    now = golden()["photos"]
    assert now.keys() == recorded.keys()
    for name, want in recorded.items():
        got = now[name]
        for cls, share in want["route_shares"].items():
            assert abs(got["route_shares"][cls] - share) <= SHARE_TOLERANCE, (name, cls)
        worst = max(abs(a - b) for ra, rb in zip(got["ab_grid"], want["ab_grid"], strict=True)
                    for a, b in zip(ra, rb, strict=True))
        assert worst <= AB_TOLERANCE, f"{name}: ab moved by {worst:.2f} in some cell"
