"""Data roots (data/roots.py): several packs, the people category, and ``data summary``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ensemble_color.cli import main
from ensemble_color.data.roots import counts_by_root, expand_data, summarize


def _img(path: Path, size=(24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(path)


def _mask(path: Path, size=(24, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ones((size[1], size[0]), np.uint8)).save(path)


def tiny_pack(root: Path) -> Path:
    for i in range(3):
        _img(root / "colorize" / "people" / "train" / f"p{i}.jpg")
    for i in range(2):
        _mask(root / "route" / "masks" / "people" / "train" / f"p{i}.png")
    _mask(root / "route" / "masks" / "people" / "train" / "orphan.png")
    for i in range(4):
        _img(root / "colorize" / "scenes" / "train" / f"s{i}.jpg")
    _img(root / "colorize" / "scenes" / "val" / "v0.jpg")
    with (root / "manifest.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "category", "split", "source"])
        w.writerows([[f"colorize/people/train/p{i}.jpg", "people", "train", "github:a/ccp@1"] for i in range(2)])
        w.writerow(["colorize/people/train/p2.jpg", "people", "train", "github:b/camvid@2"])
        w.writerows([[f"colorize/scenes/train/s{i}.jpg", "scenes", "train", "github:c/intel@3"] for i in range(4)])
    return root


def test_summary_counts_images_masks_sources_and_says_what_is_missing(tmp_path: Path):
    s = summarize(tiny_pack(tmp_path / "pack"))
    people = s["categories"]["people/train"]
    assert (people["images"], people["masks"]) == (3, 3)
    assert people["sources"] == {"github:a/ccp": 2, "github:b/camvid": 1}
    assert s["categories"]["scenes/train"]["images"] == 4 and s["categories"]["scenes/val"]["images"] == 1
    missing = "; ".join(s["missing"])
    assert "people/train: 1 masks without their image" in missing
    assert "people/train: 1 of 3 images without a mask" in missing
    assert "people: no val split" in missing
    assert "faces" in missing and "birds" in missing  # absent categories are named


def test_data_summary_cli(tmp_path: Path, capsys):
    pack = tiny_pack(tmp_path / "pack")
    assert main(["data", "summary", "--data", str(pack)]) == 0
    out = capsys.readouterr().out
    assert "| people/train | 3 | 3 |" in out
    assert main(["data", "summary", "--data", str(pack), "--data", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().out


def test_roots_expand_to_category_folders_and_counts_name_their_root(tmp_path: Path):
    a, b = tiny_pack(tmp_path / "a"), tiny_pack(tmp_path / "b")
    plain = tmp_path / "plain"
    _img(plain / "x.png")
    folders = expand_data([a, b, plain], ["people", "faces"], "train")
    assert folders == [a / "colorize/people/train", b / "colorize/people/train", plain]
    paths = [*sorted((a / "colorize/people/train").glob("*.jpg")), plain / "x.png"]
    counts = counts_by_root(paths)
    assert counts == {str(a): {"people/train": 3}, str(plain): {"": 1}}


def _photos(tmp_path: Path, counts: dict[str, int]) -> dict:
    from ensemble_color.data.roots import list_photos

    roots = []
    for name, n in counts.items():
        root = tmp_path / name
        for i in range(n):
            _img(root / "colorize" / "scenes" / "train" / f"{name}{i:03d}.jpg")
        roots.append(root)
    return list_photos(roots, ("scenes",), "train")


def test_hold_out_per_root_takes_the_count_from_every_root_and_spread_does_not(tmp_path: Path):
    from ensemble_color.data.roots import hold_out

    photos = _photos(tmp_path, {"small": 8, "big": 60})  # like the main pack next to the extension
    for per_root, expected in ((False, {"small": 1, "big": 5}), (True, {"small": 4, "big": 6})):
        train, held = hold_out(photos, 6, per_root)
        by_root = {r.name: sum(p.root == r for p in held) for r in {p.root for p in photos["scenes"]}}
        assert by_root == expected, (per_root, by_root)
        assert not set(held) & set(train["scenes"])
        assert len(held) + len(train["scenes"]) == 68
    # the default is the spacing the shipped models were trained with: evenly over both roots together
    assert hold_out(photos, 6)[1] == hold_out(photos, 6, False)[1]


def test_a_model_is_only_measured_on_the_hold_out_its_manifest_records():
    from ensemble_color.data.roots import hold_out_mismatch, hold_out_record

    spread = {"data": hold_out_record(40, per_root=False)}
    per_root = {"data": hold_out_record(40, per_root=True)}
    assert hold_out_mismatch(spread, 40, False) is None
    assert hold_out_mismatch(per_root, 40, True) is None
    assert "40 per category, not 40 per category per root" in hold_out_mismatch(spread, 40, True)
    assert hold_out_mismatch(per_root, 40, False) is not None
    assert hold_out_mismatch(spread, 20, False) is not None  # another count, other photos
    assert "no train photos" in hold_out_mismatch({"data": hold_out_record(0, False)}, 40, False)
    # manifests written before per_root existed held out spread over the roots
    assert hold_out_mismatch({"data": {"holdout_per_category": 40}}, 40, False) is None


def test_measuring_on_a_hold_out_needs_one_recorded():
    from ensemble_color.data.roots import hold_out_record, required_hold_out

    assert required_hold_out({"data": hold_out_record(40, per_root=True)}, "birds") == (40, True)
    with pytest.raises(SystemExit, match=r"^error: experts/x: expert\.json records no held-out train photos to"):
        required_hold_out({"data": hold_out_record(0, False)}, "experts/x", " to choose the decoding on")
