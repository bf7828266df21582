import torch

from ensemble_color.color import join_l_ab, rgb_to_lab
from ensemble_color.eval import metrics
from ensemble_color.eval.evaluate import Scores, evaluate, gray_method, markdown


def _images():
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 24, 32)
    return [rgb_to_lab(rgb[i:i + 1])[0] for i in range(2)]


def test_identity_gives_capped_psnr_zero_l2_full_auc():
    images = _images()
    lookup = iter(images)  # evaluate scores images in order, so the oracle can replay the truth

    def oracle(L):
        return next(lookup)[1:].clone()  # ground-truth ab for the image being scored

    res = evaluate({"oracle": oracle}, {"two": images})["two"]["oracle"]
    assert res["psnr"] == metrics.PSNR_CAP
    assert res["l2ab"] == 0.0
    assert abs(res["auc"] - 1.0) < 1e-6
    assert abs(res["ssim"] - 1.0) < 1e-4
    assert abs(res["cf_gap"]) < 1e-3


def test_gray_baseline_equals_mean_chroma():
    images = _images()
    res = evaluate({"gray": gray_method}, {"two": images})["two"]["gray"]
    expected_l2 = sum(torch.linalg.vector_norm(lab[1:], dim=0).mean().item() for lab in images) / 2
    assert abs(res["l2ab"] - expected_l2) < 1e-4
    assert res["cf"] < 0.5  # gray output has (almost) no colourfulness
    assert res["psnr"] < metrics.PSNR_CAP


def test_auc_of_constant_error():
    err = torch.full((1, 4, 4), 75.0)
    # fraction <= t is 0 for t < 75 and 1 from 75 on: area = (150 - 75 + 0.5) / 150 with trapezoids
    assert abs(metrics.auc(err).item() - (75.5 / 150)) < 1e-6


def test_markdown_has_a_row_per_method():
    images = _images()[:1]
    table = markdown(evaluate({"gray": gray_method, "gray2": gray_method}, {"one": images}))
    assert "| gray |" in table and "| gray2 |" in table and "### one" in table


def test_scores_curve_is_monotone():
    s = Scores()
    lab = _images()[0]
    s.add(torch.zeros(2, 24, 32), lab)
    curve = torch.tensor(s.summary()["curve"])
    assert torch.all(curve[1:] >= curve[:-1]) and curve[-1] <= 1


def test_summary_keeps_each_images_l2ab_for_paired_comparisons():
    s = Scores()
    images = _images()[:2]
    s.add(torch.zeros(2, *images[0].shape[-2:]), images[0])
    s.add(images[1][1:].clone(), images[1])  # perfect colours: zero error
    per_image = s.summary()["l2ab_per_image"]
    assert len(per_image) == 2 and per_image[1] == 0.0 and per_image[0] > 0.0
    assert abs(sum(per_image) / 2 - s.summary()["l2ab"]) < 1e-3


def test_palette_distance_ignores_placement_and_sees_other_colours() -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    ab = torch.randn(2, 40, 50, generator=g) * 20
    shuffled = ab.reshape(2, -1)[:, torch.randperm(2000, generator=g)].reshape(2, 40, 50)
    assert metrics.palette_distance(ab, shuffled) < 1.0  # same colours, other places
    assert metrics.palette_distance(ab, ab * 0) > 10.0   # gray against colour
    shifted = ab + torch.tensor([15.0, 0.0]).view(2, 1, 1)
    assert abs(metrics.palette_distance(ab, shifted) - 15.0 * 2 / torch.pi) < 1.5  # mean |cos| x 15


def test_pooled_frechet_is_taken_over_every_set_together() -> None:
    """``pooled``: one Fréchet distance per method over all sets' images, from the features the sets were scored
    with (here a stand-in scorer: the image's mean RGB and its square as features)."""
    from ensemble_color.eval.perceptual import frechet_distance

    def scorer(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = rgb.mean((-2, -1))
        return torch.softmax(m, 1), torch.cat([m, m * m], 1)

    torch.manual_seed(0)
    sets = {name: [torch.cat([torch.rand(1, 8, 8) * 100, torch.randn(2, 8, 8) * 20]) for _ in range(4)]
            for name in ("a", "b")}
    methods = {"gray": gray_method}
    out = evaluate(methods, sets, scorer, pooled="all")
    truth = torch.cat([scorer(join_l_ab(lab[None, :1], lab[None, 1:]))[1] for s in sets.values() for lab in s])
    gray = torch.cat([scorer(join_l_ab(lab[None, :1], torch.zeros(1, 2, 8, 8)))[1]
                      for s in sets.values() for lab in s])
    assert out["all"]["gray"]["n"] == 8
    assert abs(out["all"]["gray"]["frechet"] - frechet_distance(gray, truth)) < 1e-6
    assert out["a"]["gray"]["frechet"] is None  # a set of 4 is below the per-set minimum
    assert "all" not in evaluate(methods, sets, scorer)
