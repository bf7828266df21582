import torch

from ensemble_color.composite import (
    ExpertRoute,
    blend,
    compose_lab,
    expert_weights,
    plan_regions,
    region_box,
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
