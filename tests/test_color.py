import torch

from ensemble_color.color import gray_to_l, join_l_ab, lab_to_rgb, rgb_to_l, rgb_to_lab


def test_lab_round_trip_below_half_delta_e():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 32, 32)
    lab = rgb_to_lab(rgb)
    lab2 = rgb_to_lab(lab_to_rgb(lab))
    delta_e = torch.linalg.vector_norm(lab - lab2, dim=1)
    assert delta_e.max() < 0.5


def test_reference_points():
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    assert abs(rgb_to_l(white).item() - 100) < 0.05
    assert abs(rgb_to_l(black).item()) < 0.05
    red = rgb_to_lab(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert abs(red[0] - 53.24) < 0.1 and abs(red[1] - 80.09) < 0.2 and abs(red[2] - 67.20) < 0.2


def test_gray_has_no_chroma_and_l_is_monotone():
    g = torch.linspace(0, 1, 11).view(1, 1, 1, 11)
    L = gray_to_l(g).flatten()
    assert torch.all(L[1:] > L[:-1])
    lab = rgb_to_lab(g.expand(1, 3, 1, 11))
    assert lab[:, 1:].abs().max() < 0.01  # kornia D65 white: ~0.005 residual chroma


def test_join_keeps_l_and_hue_of_out_of_gamut_colours():
    torch.manual_seed(0)
    L = torch.rand(1, 1, 32, 32) * 100
    ab = torch.randn(1, 2, 32, 32) * 70  # most of these are far outside sRGB
    rgb = join_l_ab(L, ab)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert (lab_to_rgb(torch.cat([L, ab], 1)) - rgb).abs().max() > 0.05  # per-channel clipping would differ
    assert (rgb_to_l(rgb) - L).abs().max() < 0.2  # clipping each channel moves L by tens of units here
    back = rgb_to_lab(rgb)[:, 1:]
    chroma = back.norm(dim=1)
    cos = (back * ab).sum(1) / (chroma * ab.norm(dim=1)).clamp_min(1e-6)
    assert cos[chroma > 5].min() > 0.98  # the hue is kept: only the chroma shrinks
    assert (chroma <= ab.norm(dim=1) + 0.5).all()
    inside = torch.randn(1, 2, 32, 32) * 3
    mid = torch.full_like(L, 50.0)
    assert torch.equal(join_l_ab(mid, inside), lab_to_rgb(torch.cat([mid, inside], 1)))  # in gamut: untouched


def test_full_resolution_conversions_agree_with_kornia_in_and_out_of_gamut():
    """rgb_to_l and lab_to_rgb do only the work the pipeline needs; they must still be kornia's maths."""
    import kornia.color

    torch.manual_seed(1)
    rgb = torch.rand(2, 3, 24, 24)
    rgb[0, :, :4] = 0.0  # black and the sRGB/L* linear segments
    rgb[0, :, 4:8] = torch.linspace(0, 0.05, 24)
    assert (rgb_to_l(rgb) - kornia.color.rgb_to_lab(rgb)[:, :1]).abs().max() < 1e-4
    lab = torch.cat([torch.rand(2, 1, 24, 24) * 100, (torch.rand(2, 2, 24, 24) - 0.5) * 260], dim=1)
    assert (lab_to_rgb(lab) - kornia.color.lab_to_rgb(lab, clip=True)).abs().max() < 1e-5


def test_conversions_follow_kornia_across_each_curves_knee():
    """The sRGB and L* curves are spliced from two pieces (``color._spliced``); on a fine ramp through each knee
    (sRGB 0.04045, Y 0.008856 i.e. L* 8, linear 0.0031308) the result must stay kornia's piecewise one."""
    import kornia.color

    ramp = torch.linspace(0.0, 0.1, 4001)  # steps of 2.5e-5 through the sRGB knee
    rgb = torch.stack([ramp, ramp.flip(0), ramp * 0.5]).reshape(1, 3, 1, -1)
    assert (rgb_to_l(rgb) - kornia.color.rgb_to_lab(rgb)[:, :1]).abs().max() < 1e-4
    assert (gray_to_l(rgb[:, :1]) - kornia.color.rgb_to_lab(rgb[:, :1].expand(-1, 3, -1, -1))[:, :1]).abs().max() < 1e-4
    L = torch.linspace(0.0, 16.0, 4001)  # through L* 8 (f = 6/29) and sRGB's linear knee near L* 2.8
    lab = torch.stack([L, torch.zeros_like(L), torch.full_like(L, 3.0)]).reshape(1, 3, 1, -1)
    assert (lab_to_rgb(lab) - kornia.color.lab_to_rgb(lab, clip=True)).abs().max() < 1e-5


def test_gray_path_gives_the_l_of_the_replicated_rgb():
    g = torch.rand(1, 1, 16, 16)
    assert (gray_to_l(g) - rgb_to_l(g.expand(1, 3, 16, 16))).abs().max() < 1e-4


def test_conversions_stay_float32_under_autocast():
    rgb = torch.rand(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        L = rgb_to_l(rgb)
        out = join_l_ab(L, torch.zeros(1, 2, 8, 8))
        lab = rgb_to_lab(rgb)
    assert L.dtype == out.dtype == lab.dtype == torch.float32
    assert (L - rgb_to_l(rgb)).abs().max() < 1e-4
    assert (lab - rgb_to_lab(rgb)).abs().max() < 1e-4


def test_banded_conversions_equal_whole_image_ones(monkeypatch):
    """A large photo goes through in bands of rows (cache); a band edge must not show in the result."""
    from ensemble_color import color

    torch.manual_seed(2)
    rgb = torch.rand(2, 3, 37, 16)
    lab = torch.cat([rgb[:, :1] * 100, (rgb[:, 1:] - 0.5) * 200], dim=1)
    whole_l, whole_g, whole_rgb = rgb_to_l(rgb), gray_to_l(rgb[:, :1]), lab_to_rgb(lab)
    monkeypatch.setattr(color, "BAND_PIXELS", 16 * 5)  # 5 rows a band: 8 bands, the last one short
    assert (rgb_to_l(rgb) - whole_l).abs().max() < 1e-5
    assert (gray_to_l(rgb[:, :1]) - whole_g).abs().max() < 1e-5
    assert (lab_to_rgb(lab) - whole_rgb).abs().max() < 1e-6
    assert lab_to_rgb(lab).shape == whole_rgb.shape == (2, 3, 37, 16)
