import json

import pytest
import torch

from ensemble_color.cli import main
from ensemble_color.plugins import PluginError, read_state_dict, write_state_dict
from ensemble_color.train.soup import interpolate


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(3, 4, generator=g), "bn.num_batches_tracked": torch.tensor(seed)}


def test_the_ends_are_the_two_models_and_the_middle_their_mean():
    a, b = _state(1), _state(2)
    assert torch.equal(interpolate(a, b, 0.0)["w"], a["w"]) and torch.equal(interpolate(a, b, 1.0)["w"], b["w"])
    mid = interpolate(a, b, 0.5)
    assert torch.allclose(mid["w"], (a["w"] + b["w"]) / 2) and mid["bn.num_batches_tracked"] == 2


def test_models_of_different_architectures_are_refused():
    a, b = _state(1), _state(2)
    with pytest.raises(PluginError, match="shape"):
        interpolate(a, {**b, "w": torch.zeros(4, 3)}, 0.5)
    with pytest.raises(PluginError, match="different tensors"):
        interpolate(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError):
        interpolate(a, b, 1.5)


def test_the_command_writes_a_folder_that_says_what_it_is(tmp_path):
    for name, seed in (("base", 1), ("tuned", 2)):
        (tmp_path / name).mkdir()
        write_state_dict(tmp_path / name / "model.safetensors", _state(seed))
        (tmp_path / name / "config.json").write_text(json.dumps({"ensemble_color": {"command": name}}))
    (tmp_path / "tuned" / "routing_table.json").write_text("{}")
    argv = ["train", "soup", "--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned"),
            "--alpha", "0.25", "--out", str(tmp_path / "soup"), "--logit-bias", '{"animal": 1.0}']
    assert main(argv) == 0
    own = json.loads((tmp_path / "soup" / "config.json").read_text())["ensemble_color"]
    assert own["soup"]["alpha"] == 0.25 and own["soup"]["tuned_command"] == "tuned"
    assert own["command"].startswith("python -m ensemble_color train soup") and own["logit_bias"] == {"animal": 1.0}
    assert (tmp_path / "soup" / "routing_table.json").is_file()
    w = read_state_dict(tmp_path / "soup" / "model.safetensors")["w"]
    assert torch.allclose(w, 0.75 * _state(1)["w"] + 0.25 * _state(2)["w"])
    with pytest.raises(SystemExit, match="overwrite"):
        main([*argv[:-4], "--out", str(tmp_path / "tuned")])
