"""bench/experts_select.py's perceptual rule: what it judges and what it leaves out."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_color.color import lab_to_rgb

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


def test_eyes_sheet_shows_gray_each_method_and_the_truth_row_by_row(select, tmp_path):
    def photo(a: float) -> torch.Tensor:
        return torch.stack([torch.full((40, 60), 60.0), torch.full((40, 60), a), torch.full((40, 60), -a)])

    sets = {"root:birds": [photo(10.0 * i) for i in range(5)], "ext:birds": [photo(-30.0)]}
    methods = {"blue": lambda L: torch.stack([torch.zeros_like(L[0]), torch.full_like(L[0], -40.0)]),
               "red": lambda L: torch.stack([torch.full_like(L[0], 50.0), torch.zeros_like(L[0])])}
    path = tmp_path / "sheet.jpg"
    select.eyes_sheet(methods, sets, 3, path, size=32)
    sheet = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float() / 255
    assert sheet.shape == (3 * 32 + 2 * 2, 4 * 32 + 3 * 2, 3)  # 3 rows; gray, 2 methods, truth

    def cell(row: int, col: int) -> torch.Tensor:  # the mean colour of a cell's centre
        return sheet[row * 34 + 8:row * 34 + 24, col * 34 + 8:col * 34 + 24].reshape(-1, 3).mean(0)

    for r in range(3):
        gray, blue, red = cell(r, 0), cell(r, 1), cell(r, 2)
        assert (gray.max() - gray.min()) < 0.03
        assert blue[2] > blue[0] + 0.1 and red[0] > red[2] + 0.1
    # evenly spaced over all groups: the first, a middle and the last photo (the extension's), each with its truth
    for r, lab in enumerate([sets["root:birds"][0], sets["root:birds"][2], sets["ext:birds"][0]]):
        truth = lab_to_rgb(lab[None, :, :1, :1])[0, :, 0, 0]
        assert torch.allclose(cell(r, 3), truth, atol=0.03)
