"""bench/experts_select.py's perceptual rule: what it judges and what it leaves out."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"


@pytest.fixture
def select(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the bench imports its sibling modules by name
    spec = importlib.util.spec_from_file_location("experts_select", BENCH / "experts_select.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(n, l2ab, cf, cf_gt, palette, agree1):
    return {"n": n, "l2ab": l2ab, "cf": cf, "cf_gt": cf_gt, "palette": palette, "agree1": agree1}


def test_a_group_of_one_photo_does_not_decide_and_the_others_still_do(select):
    groups = {"data:scenes": {"b": _summary(1, 38.0, 44.0, 110.0, 16.0, 1.0),
                              "c": _summary(1, 32.0, 41.0, 110.0, 14.0, 0.0)},
              "ext:scenes": {"b": _summary(39, 15.4, 31.0, 43.0, 8.1, 0.59),
                             "c": _summary(39, 15.0, 40.0, 43.0, 7.7, 0.6)}}
    ok, checks = select.verdict_perceptual(groups, "b", "c", {"b": 78.0, "c": 77.0})
    assert ok, checks
    assert any("data:scenes (1 photos)" in c for c, _ in checks)
    groups["ext:scenes"]["c"]["cf"] = 30.0  # 30 % short of the truth on the judged group
    assert not select.verdict_perceptual(groups, "b", "c", {"b": 78.0, "c": 77.0})[0]
    del groups["ext:scenes"]  # nothing left to judge: no verdict can replace
    assert not select.verdict_perceptual(groups, "b", "c", {"b": 78.0, "c": 77.0})[0]
