"""train pseudo-masks: a router's confident pixels on clean photos become a mask root the router trainer reads."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_color.cli import main
from ensemble_color.data.composites import IGNORE, LABELS
from ensemble_color.data.masks import load_masked
from ensemble_color.data.roots import utkface_groups
from ensemble_color.train.pseudo_masks import confident_labels

CLASSES = ("background", "person", "bird", "animal")


def test_only_confident_person_and_background_pixels_are_labelled():
    probs = torch.zeros(4, 2, 3)
    probs[:, 0, 0] = torch.tensor([0.05, 0.95, 0.0, 0.0])  # a sure person
    probs[:, 0, 1] = torch.tensor([0.92, 0.08, 0.0, 0.0])  # sure background
    probs[:, 0, 2] = torch.tensor([0.3, 0.6, 0.1, 0.0])  # a likely, not sure, person
    probs[:, 1, :] = torch.tensor([0.0, 0.0, 0.0, 1.0])[:, None]  # a sure animal: not a person photo's lesson
    labels = confident_labels(probs, CLASSES, 0.9)
    assert labels[0].tolist() == [LABELS["person"], LABELS["background"], IGNORE]
    assert (labels[1] == IGNORE).all()


def test_faces_are_grouped_by_their_utkface_code_and_thinned_evenly(tmp_path):
    names = [f"utkface__{20 + i}_0_1_2017.jpg.chip.jpg" for i in range(5)] + ["utkface__30_1_3_2017.jpg.chip.jpg",
                                                                               "lfw_someone.jpg"]
    groups = utkface_groups([tmp_path / n for n in names], per_group=3)
    assert {g: len(v) for g, v in groups.items()} == {"Black": 3, "Indian": 1, "all": 1}
    assert [p.name for p in groups["Black"]] == [names[0], names[2], names[4]]


@pytest.fixture
def faces_pack(tmp_path):
    folder = tmp_path / "pack" / "colorize" / "faces" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, race in enumerate((0, 1, 1, 3)):
        img = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"utkface__{20 + i}_0_{race}_2017.jpg.chip.jpg")
    return tmp_path / "pack"


def test_the_written_root_is_read_by_the_router_trainer_and_the_photos_are_links(faces_pack, tmp_path):
    out = tmp_path / "pseudo"
    argv = ["train", "pseudo-masks", "--data", str(faces_pack), "--out", str(out), "--per-group", "1",
            "--confidence", "0", "--min-person", "0"]
    assert main(argv) == 0
    record = json.loads((out / "pseudo_masks.json").read_text())
    assert record["groups"] == {"Black": {"photos": 1, "kept": 1}, "Indian": {"photos": 1, "kept": 1},
                                "White": {"photos": 1, "kept": 1}}
    links = sorted((out / "colorize" / "faces" / "train").iterdir())
    assert len(links) == 3 and all(p.is_symlink() and p.resolve().parent == (faces_pack / "colorize" / "faces"
                                                                               / "train").resolve() for p in links)
    masked = load_masked(out, "train", clean=False)
    assert len(masked.images) == 3
    for rgb, mask in zip(masked.images, masked.masks, strict=True):
        assert mask.shape == rgb.shape[:2]
        assert set(np.unique(mask)) <= {LABELS["person"], LABELS["background"]}  # confidence 0: all labelled


def test_a_photo_without_enough_sure_person_pixels_is_left_out(faces_pack, tmp_path):
    out = tmp_path / "pseudo"
    assert main(["train", "pseudo-masks", "--data", str(faces_pack), "--out", str(out), "--confidence", "1.01"]) == 0
    assert all(g["kept"] == 0 for g in json.loads((out / "pseudo_masks.json").read_text())["groups"].values())
    assert not list((out / "route" / "masks" / "faces" / "train").iterdir())


def test_it_refuses_to_write_into_the_pack_it_reads(faces_pack):
    with pytest.raises(SystemExit, match="would write into the pack"):
        main(["train", "pseudo-masks", "--data", str(faces_pack), "--out", str(faces_pack)])
