from dataclasses import replace

import torch

from ensemble_color.color import rgb_to_l
from ensemble_color.io import load_image
from ensemble_color.pipeline import Pipeline, working_size
from ensemble_color.routing import Router


class _LeftRightRouter(torch.nn.Module):
    """Left half person, right half background (as logits over the ensemble labels)."""

    def forward(self, L):
        out = torch.full((L.shape[0], 4, *L.shape[-2:]), -20.0)
        w = L.shape[-1]
        out[:, 1, :, : w // 2] = 20.0
        out[:, 0, :, w // 2:] = 20.0
        return out


def _pipe(tiny_experts, **opts):
    pipe = Pipeline.load([tiny_experts], router="background", use_shipped=False)
    return pipe.with_options(**opts) if opts else pipe


def test_full_resolution_output_and_l_preserved(tiny_experts, photo):
    pipe = _pipe(tiny_experts, work_size=64)
    im = load_image(photo)
    res = pipe.colorize(im, per_expert=True)
    assert res.rgb.shape == im.rgb.shape
    assert max(res.L_work.shape[-2:]) == 64
    L_in, L_out = rgb_to_l(im.rgb[None]), rgb_to_l(res.rgb[None])
    assert (L_in - L_out).abs().mean() < 1.0  # only gamut clipping/quantisation may move L
    assert set(res.per_expert) == set(pipe.experts)


def test_a_gray_photo_colours_alike_in_one_channel_or_three(tiny_experts):
    """Gray input takes a one-channel path to L (pipeline.image_l); it must be the same L as the RGB path's."""
    pipe = _pipe(tiny_experts, work_size=64)
    gray = torch.rand(1, 80, 120)
    one, three = pipe.colorize(gray), pipe.colorize(gray.expand(3, -1, -1))
    assert (one.rgb - three.rgb).abs().max() < 1e-5
    tinted = gray.expand(3, -1, -1).clone()
    tinted[0] += 0.05  # a colour photo: its own L, which the gray path would get wrong
    L_tinted = torch.nn.functional.interpolate(rgb_to_l(tinted.clamp(0, 1)[None]), size=one.L_work.shape[-2:],
                                               mode="bilinear", align_corners=False, antialias=True)[0]
    assert (pipe.colorize(tinted.clamp(0, 1)).L_work - L_tinted).abs().max() < 1e-4


def test_router_regions_pick_experts(tiny_experts):
    from ensemble_color.routing import RoutingTable

    pipe = _pipe(tiny_experts, context=None)  # no generalist installed: the default background assignment is moot
    m, classes = RoutingTable.load().matrix("ensemble")
    pipe.router = Router("lr", _LeftRightRouter(), m, classes, input_size=64, size_multiple=8)
    res = pipe.colorize(torch.rand(3, 64, 96))
    assert set(res.boxes) == {"faces", "scenes"}
    assert res.boxes["faces"].x0 == 0 and res.boxes["faces"].x1 < 96
    assert torch.allclose(res.weights["faces"][:, :40], torch.ones(64, 40), atol=1e-3)


def test_context_option_gives_a_dominant_subjects_background_to_its_expert(tiny_experts):
    from ensemble_color.routing import RoutingTable

    m, classes = RoutingTable.load().matrix("ensemble")
    router = Router("lr", _LeftRightRouter(), m, classes, input_size=64, size_multiple=8)
    image = torch.rand(3, 64, 96)
    plain, shared = _pipe(tiny_experts, context=None), _pipe(tiny_experts)  # context sharing is the default
    plain.router = shared.router = router
    assert set(plain.colorize(image).boxes) == {"faces", "scenes"}
    res = shared.colorize(image)  # the person fills half the frame: its expert takes the background too
    assert set(res.boxes) == {"faces"}
    torch.testing.assert_close(res.weights["faces"], torch.ones(64, 96))
    torch.testing.assert_close(res.probs, plain.colorize(image).probs)  # the routing overlay is unchanged


def test_default_gives_the_background_to_the_generalist_when_installed(tiny_experts):
    from conftest import make_expert

    from ensemble_color.routing import RoutingTable

    make_expert(tiny_experts, "generalist", [], seed=9, fallback=True)
    m, classes = RoutingTable.load().matrix("ensemble")
    router = Router("lr", _LeftRightRouter(), m, classes, input_size=64, size_multiple=8)
    default, manifests = _pipe(tiny_experts, context=None), _pipe(tiny_experts, context=None, assign={})
    default.router = manifests.router = router
    assert default.served_by()["background"] == "generalist" and manifests.served_by()["background"] == "scenes"
    assert set(default.colorize(torch.rand(3, 64, 96)).boxes) == {"faces", "generalist"}


def test_batch_equals_single(tiny_experts):
    pipe = _pipe(tiny_experts, work_size=80)
    a, b = torch.rand(3, 50, 70), torch.rand(3, 90, 60)
    batch = pipe.colorize_batch([a, b])
    for img, res in zip([a, b], batch, strict=True):
        single = pipe.colorize(img)
        assert torch.allclose(single.rgb, res.rgb, atol=1e-4)


def test_working_size_never_upscales():
    assert working_size(100, 50, 512) == (100, 50)
    assert working_size(1000, 500, 512) == (512, 256)


def test_disabled_experts_and_unknown_name(tiny_experts):
    pipe = Pipeline.load([tiny_experts], router="background", use_shipped=False, enabled=["scenes"])
    assert list(pipe.experts) == ["scenes"]
    import pytest

    with pytest.raises(ValueError, match="unknown expert"):
        Pipeline.load([tiny_experts], router="background", use_shipped=False, enabled=["nope"])


def test_same_size_images_share_a_forward_pass(tiny_experts, monkeypatch):
    pipe = _pipe(tiny_experts, work_size=64)
    calls = []
    expert = pipe.experts["scenes"]
    original = expert.run
    monkeypatch.setattr(expert, "run", lambda L: calls.append(L.shape[0]) or original(L))
    imgs = [torch.rand(3, 48, 64) for _ in range(3)]
    batch = pipe.colorize_batch(imgs)
    assert calls == [3]
    assert torch.allclose(pipe.colorize(imgs[1]).rgb, batch[1].rgb, atol=1e-5)


def _generalist_pipe(root, config: dict | None = None, **opts):
    """``root`` with a tiny multi-head generalist (decoding ``config`` on top of the tiny one) as the only expert;
    decoding as in the blend even alone (``decode_alone="blend"``) unless ``opts`` say otherwise."""
    import json

    from conftest import make_expert

    folder = make_expert(root, "generalist", [], arch="multihead-unet", seed=9, fallback=True)
    if config:
        manifest = json.loads((folder / "expert.json").read_text())
        manifest["config"].update(config)
        (folder / "expert.json").write_text(json.dumps(manifest))
    return Pipeline.load([root], router="background", use_shipped=False).with_options(
        **{"decode_alone": "blend", **opts})


def test_decode_option_decodes_the_generalist_in_the_blend_and_leaves_its_manifest_alone(tmp_path):
    import pytest

    img = torch.rand(3, 48, 64)
    manifest_says = _generalist_pipe(tmp_path / "a", {"decode": "regression", "reg_gain": 2.0}, decode={})
    option_says = _generalist_pipe(tmp_path / "b", {"decode": "soft", "T": 0.38},
                                   decode={"generalist": "regression x2"})
    plain = option_says.with_options(decode={})
    torch.testing.assert_close(option_says.colorize(img).ab_work, manifest_says.colorize(img).ab_work)
    assert not torch.allclose(plain.colorize(img).ab_work, option_says.colorize(img).ab_work, atol=0.1)
    loaded = option_says.experts["generalist"]
    assert loaded.model.decode == "soft"  # alone (evaluations, galleries) it decodes as its manifest says
    assert loaded.with_decoding("regression x2") is loaded.with_decoding("regression x2")  # built once, kept
    assert loaded.with_decoding("soft T=0.38") is loaded  # the manifest's own decoding needs no second model
    with pytest.raises(ValueError, match="unknown decoding 'median'"):
        option_says.with_options(decode={"generalist": "median"})


def test_decode_option_leaves_out_experts_without_a_decoding(tiny_experts, recwarn):
    pipe = _pipe(tiny_experts, decode={"scenes": "regression", "absent": "regression"})
    assert pipe.options.decode == {} and not recwarn.list


class _LeftHalfBird(torch.nn.Module):
    """A segmenter over the ensemble labels: the left half of every image is a bird, the rest background."""

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(L.shape[0], 4, *L.shape[-2:])
        logits[:, 0] = 10.0
        logits[:, 2, :, : L.shape[-1] // 2] = 20.0
        return logits


def test_decode_alone_manifest_colours_a_photo_without_subjects_as_the_generalist_alone(tmp_path):
    import pytest
    from conftest import make_expert

    from ensemble_color.routing import RoutingTable

    img = torch.rand(3, 48, 64)
    blend = _generalist_pipe(tmp_path / "g", {"decode": "soft", "T": 0.38}, decode={"generalist": "regression x2"})
    blend = blend.with_options(alone_share=1.0)
    alone = blend.with_options(decode_alone="manifest")
    manifest = blend.with_options(decode={})
    assert alone.colorize(img).boxes.keys() == {"generalist"}
    torch.testing.assert_close(alone.colorize(img).ab_work, manifest.colorize(img).ab_work)
    assert not torch.allclose(blend.colorize(img).ab_work, manifest.colorize(img).ab_work, atol=0.1)
    # beside a specialist the generalist is not alone: it decodes as in the blend under either setting
    make_expert(tmp_path / "g", "birds", ["bird"], seed=3)
    both = Pipeline.load([tmp_path / "g"], router="background", use_shipped=False).experts
    matrix, classes = RoutingTable.load().matrix("ensemble")
    router = Router("left-bird", _LeftHalfBird(), matrix, classes, input_size=64)
    shared = Pipeline(both, router, torch.device("cpu"), replace(blend.options, context=None))  # no sharing
    res_blend = shared.colorize(img)
    res_alone = shared.with_options(decode_alone="manifest").colorize(img)
    assert res_blend.boxes.keys() == {"generalist", "birds"}
    torch.testing.assert_close(res_alone.ab_work, res_blend.ab_work)
    # ... unless it carries at least alone_share of the photo's weight (here about half of it)
    share = float(res_blend.weights["generalist"].mean())
    assert 0.3 < share < 0.8
    below = shared.with_options(decode_alone="manifest", alone_share=share - 0.05).colorize(img)
    torch.testing.assert_close(below.ab_work, shared.with_options(decode={}).colorize(img).ab_work)
    above = shared.with_options(decode_alone="manifest", alone_share=min(1.0, share + 0.05)).colorize(img)
    torch.testing.assert_close(above.ab_work, res_blend.ab_work)
    with pytest.raises(ValueError, match="unknown decode_alone"):
        blend.with_options(decode_alone="sometimes")
    with pytest.raises(ValueError, match="alone_share"):
        blend.with_options(alone_share=0.0)
