import pytest
import torch

from ensemble_color.composite import (
    ExpertRoute,
    alone_experts,
    blend,
    compose,
    compose_lab,
    expert_weights,
    plan_regions,
    region_box,
    share_context,
    upsample_ab,
)

CLASSES = ("background", "person", "bird", "animal")
EXPERTS = [ExpertRoute("scenes", ("background",)), ExpertRoute("faces", ("person",)),
           ExpertRoute("birds", ("bird",))]  # no animal expert: animals go to the fallback


def _probs(h=32, w=48):
    p = torch.zeros(4, h, w)
    p[0] = 1.0
    return p


def test_hard_mask_gives_exactly_that_experts_ab_in_its_region():
    p = _probs()
    p[0, 8:20, 10:30], p[2, 8:20, 10:30] = 0.0, 1.0
    weights = expert_weights(p, CLASSES, EXPERTS)
    boxes, final = plan_regions(weights, "scenes", threshold=0.02, margin=4, multiple=8, min_fraction=0.0)
    assert set(boxes) == {"scenes", "birds"}
    layers = {"scenes": torch.full((2, 32, 48), -20.0), "birds": torch.full((2, 32, 48), 35.0)}
    ab = blend(layers, final)
    assert torch.equal(ab[:, 8:20, 10:30], torch.full((2, 12, 20), 35.0))
    assert torch.equal(ab[:, 22:, :], torch.full((2, 10, 48), -20.0))
    b = boxes["birds"]
    assert b.y0 <= 8 and b.y1 >= 20 and b.x0 <= 10 and b.x1 >= 30
    assert (b.y1 - b.y0) % 8 == 0 and (b.x1 - b.x0) % 8 == 0


def test_soft_masks_blend_linearly_and_weights_sum_to_one():
    p = _probs()
    ramp = torch.linspace(0, 1, 48).expand(32, 48)
    p[0], p[1] = 1 - ramp, ramp
    weights = expert_weights(p, CLASSES, EXPERTS)
    _, final = plan_regions(weights, "scenes", threshold=0.0, margin=0, multiple=1, min_fraction=0.0)
    total = sum(final.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    ab = blend({"scenes": torch.zeros(2, 32, 48), "faces": torch.full((2, 32, 48), 10.0)}, final)
    assert torch.allclose(ab[0, 5], 10 * ramp[0], atol=1e-5)  # linear cross-fade: no seam


def test_unclaimed_class_goes_to_fallback_and_shared_class_is_split():
    p = _probs()
    p[0, :, :24], p[3, :, :24] = 0.0, 1.0  # animal: no expert
    w = expert_weights(p, CLASSES, EXPERTS)
    assert torch.equal(w["scenes"], torch.ones(32, 48))
    shared = [*EXPERTS, ExpertRoute("birds2", ("bird",))]
    p2 = _probs()
    p2[0], p2[2] = 0.0, 1.0
    w2 = expert_weights(p2, CLASSES, shared)
    assert torch.allclose(w2["birds"], torch.full((32, 48), 0.5)) and torch.allclose(w2["birds2"], w2["birds"])


def test_declared_fallback_takes_unclaimed_mass():
    experts = [*EXPERTS, ExpertRoute("generalist", (), fallback=True)]
    p = _probs()
    p[0], p[3] = 0.0, 1.0
    assert torch.equal(expert_weights(p, CLASSES, experts)["generalist"], torch.ones(32, 48))


def test_negligible_region_is_not_run():
    p = _probs()
    p[0, 0, 0], p[1, 0, 0] = 0.0, 1.0  # one pixel of person
    boxes, final = plan_regions(expert_weights(p, CLASSES, EXPERTS), "scenes", 0.02, 4, 8, min_fraction=0.002)
    assert "faces" not in boxes and torch.allclose(final["scenes"], torch.ones(32, 48))


def test_region_box_none_when_empty():
    assert region_box(torch.zeros(10, 10), 0.02, 2, 8) is None


def test_output_l_is_input_l_exactly_and_ab_upsampling_is_bilinear():
    torch.manual_seed(0)
    L = torch.rand(1, 60, 90) * 100
    ab = torch.zeros(2, 20, 30)
    ab[:, :, 15:] = 40.0
    lab = compose_lab(L, ab)
    assert torch.equal(lab[:1], L)
    up = upsample_ab(ab, (60, 90))
    values = set(torch.unique(up[0]).tolist())
    assert len(values) > 2  # nearest-neighbour would give only {0, 40}


def test_guided_upsampling_follows_full_res_edges():
    from ensemble_color.composite import guided_upsample_ab

    # full-res L has a sharp vertical edge at x = 50; colour differs on each side of it
    L_full = torch.full((1, 64, 100), 30.0)
    L_full[:, :, 50:] = 80.0
    ideal = torch.where(L_full > 55, torch.tensor(40.0), torch.tensor(-40.0)).expand(2, -1, -1)

    def down(x):
        return torch.nn.functional.interpolate(x[None], size=(16, 25), mode="bilinear", antialias=True)[0]

    L_low, ab_low = down(L_full), down(ideal)  # what a working-size expert would see and predict
    guided = guided_upsample_ab(ab_low, L_low, L_full)
    plain = upsample_ab(ab_low, (64, 100))
    assert (guided - ideal).abs().mean() < 0.5 * (plain - ideal).abs().mean()
    assert torch.equal(compose_lab(L_full, ab_low, L_work=L_low)[:1], L_full)


def test_a_halftone_print_is_upsampled_along_its_descreened_l_and_keeps_its_own_l():
    from ensemble_color.color import rgb_to_lab
    from ensemble_color.descreen import descreen, detect_screen
    from ensemble_color.pipeline import working_l

    yy, xx = torch.meshgrid(torch.arange(384.0), torch.arange(512.0), indexing="ij")
    tone = 30.0 + 40.0 * (xx > 256).float()  # a dark and a light half
    dots = 12.0 * torch.sin(xx * 2.2) * torch.sin(yy * 2.2)  # a screen of ~3 px period
    L_full = (tone + dots)[None]
    screen = detect_screen(L_full)
    assert screen is not None
    seen = descreen(L_full, screen)
    L_work = working_l(seen, 128)
    ab_work = torch.where(L_work > 50, 30.0, -30.0).expand(2, -1, -1).contiguous()  # colour follows the halves

    def dot_chroma(rgb: torch.Tensor) -> float:
        ab = rgb_to_lab(rgb[None])[0, 1:, :, 240:272]  # across the edge, where the colour follows L
        smooth = torch.nn.functional.avg_pool2d(ab[None], 5, 1, 2, count_include_pad=False)[0]
        return (ab - smooth).norm(dim=0)[8:-8, :].mean().item()

    along_print = compose(L_full, ab_work, 1.0, L_work)
    along_seen = compose(L_full, ab_work, 1.0, L_work, guide=seen)
    assert dot_chroma(along_seen) < 0.5 * dot_chroma(along_print)
    lab = rgb_to_lab(along_seen[None])[0]
    assert (lab[0] - L_full[0]).abs().max() < 0.6  # the screen itself stays in the output's lightness


@pytest.mark.parametrize(("radius", "shape"), [(1, (1, 1, 7, 9)), (2, (1, 6, 19, 24)), (3, (2, 2, 8, 5))])
def test_box_filter_is_the_replicate_padded_window_mean(radius, shape):
    """The guided filter's separable box sums equal avg_pool2d over the replicate-padded map, edges included
    (also for maps smaller than the window)."""
    from ensemble_color.composite import _box

    x = torch.randn(*shape, generator=torch.Generator().manual_seed(radius))
    k = 2 * radius + 1
    ref = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)
    torch.testing.assert_close(_box(x, radius), ref, atol=1e-6, rtol=1e-6)
    assert _box(x, radius).shape == x.shape


GENERALIST = [ExpertRoute("generalist", (), fallback=True), *EXPERTS, ExpertRoute("animals", ("animal",))]


def _soft_scene_with_bird(h=64, w=64):
    """Background everywhere, a bird square in the middle; softmax-like leftovers (1.5 %) on the other classes."""
    p = torch.full((4, h, w), 0.015)
    p[0] = 0.955
    p[0, 24:40, 24:40], p[2, 24:40, 24:40] = 0.015, 0.955
    return p


def test_fallback_is_not_run_for_thin_leftovers_and_weights_still_sum_to_one():
    w = expert_weights(_soft_scene_with_bird(), CLASSES, GENERALIST)
    boxes_always, _ = plan_regions(w, "generalist", 0.02, 4, 8, 0.002, fallback_min=0.0)
    boxes, final = plan_regions(w, "generalist", 0.02, 4, 8, 0.002, fallback_min=0.1)
    assert "generalist" in boxes_always  # leftovers under the crop threshold add up to 3 % everywhere ...
    assert "generalist" not in boxes  # ... which no longer costs a full-frame run
    total = sum(final.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_fallback_still_runs_where_a_class_has_no_specialist():
    p = _soft_scene_with_bird()
    p[0, :, :16], p[3, :, :16] = 0.005, 0.985  # animals, but the animals expert is not installed
    experts = GENERALIST[:-1]
    boxes, final = plan_regions(expert_weights(p, CLASSES, experts), "generalist", 0.02, 4, 8, 0.002, 0.1)
    assert "generalist" in boxes and boxes["generalist"].x0 == 0
    assert final["generalist"][:, :16].min() > 0.95


def test_assign_overrides_the_manifests_claims():
    p = _probs()
    w = expert_weights(p, CLASSES, GENERALIST, assign={"background": ("generalist",)})
    assert torch.equal(w["generalist"], torch.ones(32, 48)) and w["scenes"].sum() == 0
    shared = expert_weights(p, CLASSES, GENERALIST, assign={"background": ("scenes", "generalist", "absent")})
    assert torch.allclose(shared["scenes"], torch.full((32, 48), 0.5))
    assert torch.allclose(shared["generalist"], shared["scenes"])


def test_crop_quantile_ignores_scattered_specks_but_keeps_the_region():
    p = _probs(64, 64)
    p[0, 20:40, 20:40], p[2, 20:40, 20:40] = 0.0, 1.0  # a bird
    for y, x in [(1, 1), (62, 3), (2, 60), (60, 61)]:  # four single-pixel false positives in the corners
        p[0, y, x], p[2, y, x] = 0.4, 0.6
    w = expert_weights(p, CLASSES, EXPERTS)
    naive = region_box(w["birds"], 0.02, 0, 1)
    assert (naive.y0, naive.y1, naive.x0, naive.x1) == (1, 63, 1, 62)  # four specks stretch it to the frame
    box = region_box(w["birds"], 0.02, 0, 1, quantile=0.01)
    assert (box.y0, box.y1, box.x0, box.x1) == (20, 40, 20, 40)
    _, final = plan_regions(w, "scenes", 0.02, 2, 1, 0.0, fallback_min=0.1, quantile=0.01)
    total = sum(final.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert final["scenes"][1, 1] == 1.0  # the speck outside the bird's crop is coloured by the scenes expert


def test_pixels_left_with_no_weight_go_to_the_fallback():
    experts = [ExpertRoute("generalist", (), fallback=True), ExpertRoute("faces", ("person",))]
    p = torch.zeros(4, 32, 32)
    p[1] = 1.0
    p[1, 10:30, 10:30], p[2, 10:30, 10:30] = 0.0, 1.0  # a bird, and no bird expert
    p[1, 0, 0], p[2, 0, 0] = 0.0, 1.0  # one stray bird pixel: the quantile box leaves it out
    w = expert_weights(p, CLASSES, experts)
    boxes, final = plan_regions(w, "generalist", 0.02, 0, 1, 0.0, fallback_min=0.5, quantile=0.2)
    total = sum(final.values())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)  # nothing is left uncoloured
    assert final["generalist"][0, 0] == 1.0 and final["generalist"][10, 10] == 1.0
    assert boxes["generalist"].y0 == 0 and boxes["generalist"].x0 == 0


def _subjects(bird_area: float, person_area: float = 0.0, h: int = 20, w: int = 50) -> torch.Tensor:
    """Background everywhere except a bird block (and a person block) covering the given frame shares."""
    p = _probs(h, w)
    nb, npers = round(bird_area * w), round(person_area * w)
    p[0, :, :nb + npers] = 0.0
    p[2, :, :nb] = 1.0
    p[1, :, nb:nb + npers] = 1.0
    return p


def test_context_is_left_alone_when_subjects_are_small():
    p = _subjects(0.1)
    torch.testing.assert_close(share_context(p, CLASSES, (0.2, 0.5)), p)
    torch.testing.assert_close(share_context(_subjects(0.6), CLASSES, None), _subjects(0.6))


def test_context_goes_to_the_subjects_in_proportion_to_their_area():
    p = _subjects(0.4, person_area=0.2)  # subjects fill 60 % >= 50 %: all background moves
    out = share_context(p, CLASSES, (0.2, 0.5))
    torch.testing.assert_close(out.sum(0), torch.ones(20, 50))
    assert float(out[0].max()) == 0.0
    bg = p[0] > 0.5
    torch.testing.assert_close(out[2][bg], torch.full_like(out[2][bg], 2 / 3))  # bird 40 of 60 % of subject area
    torch.testing.assert_close(out[1][bg], torch.full_like(out[1][bg], 1 / 3))
    torch.testing.assert_close(out[:, ~bg], p[:, ~bg])  # subject pixels keep their own class


def test_context_share_ramps_linearly_between_the_two_areas():
    p = _subjects(0.3)  # halfway between 0.2 and 0.4
    out = share_context(p, CLASSES, (0.2, 0.4))
    bg = p[0] > 0.5
    torch.testing.assert_close(out[0][bg], torch.full_like(out[0][bg], 0.5))
    torch.testing.assert_close(out[2][bg], torch.full_like(out[2][bg], 0.5))


def test_alone_experts_by_share_of_the_blend_weight():
    w = torch.zeros(4, 4)
    w[:, :1] = 1.0  # the specialist holds a quarter of the photo
    weights = {"birds": w, "generalist": 1.0 - w}
    assert alone_experts({"generalist": torch.ones(4, 4)}) == {"generalist"}
    assert alone_experts(weights) == set()  # default: alone only without any other expert
    assert alone_experts(weights, 0.75) == {"generalist"}
    assert alone_experts(weights, 0.8) == set()
    assert alone_experts(weights, 0.25) == {"birds", "generalist"}


@pytest.mark.parametrize("guided", [True, False])
def test_banded_compose_equals_joining_the_composed_lab(monkeypatch, guided):
    """compose() does its full-resolution steps band by band; the bands must not show in the photo."""
    from ensemble_color import color
    from ensemble_color.color import join_l_ab

    torch.manual_seed(3)
    L_full = torch.rand(1, 41, 30) * 100
    L_low = torch.nn.functional.interpolate(L_full[None], size=(10, 8), mode="bilinear", antialias=True)[0]
    ab_low = (torch.rand(2, 10, 8) - 0.5) * 120
    L_work = L_low if guided else None
    expected = join_l_ab(*compose_lab(L_full, ab_low, 1.3, L_work).split([1, 2]))
    monkeypatch.setattr(color, "BAND_PIXELS", 30 * 4)  # 4 rows a band: 11 bands, the last one short
    got = compose(L_full, ab_low, 1.3, L_work)
    assert got.shape == (3, 41, 30)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("size", [(41, 30), (768, 1024)])
def test_guided_upsampling_restores_colour_that_follows_lightness(size):
    """Where ab is a linear function of L, the guided filter's A·L + B recovers it at full resolution: the
    sharp edges of L's blocks, which the working size sees blurred, come back sharp (up to the filter's
    regulariser); bilinear upsampling keeps them blurred."""
    from ensemble_color.composite import guided_upsample_ab

    torch.manual_seed(4)
    blocks = 20.0 + 60.0 * torch.rand(1, 1, -(-size[0] // 8), -(-size[1] // 8))
    L_full = torch.nn.functional.interpolate(blocks, scale_factor=8, mode="nearest")[0, :, :size[0], :size[1]]
    truth = torch.cat([0.5 * (L_full - 50.0), -0.3 * (L_full - 50.0)])
    low = (max(2, size[0] // 4), max(2, size[1] // 4))

    def down(x):
        return torch.nn.functional.interpolate(x[None], size=low, mode="bilinear", antialias=True)[0]

    guided = guided_upsample_ab(down(truth), down(L_full), L_full)
    plain = upsample_ab(down(truth), size)
    assert guided.shape == truth.shape == (2, *size)
    assert (guided - truth).abs().mean() < 0.25 * (plain - truth).abs().mean()
