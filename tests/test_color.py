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


def test_join_clips_out_of_gamut():
    rgb = join_l_ab(torch.full((1, 1, 2, 2), 50.0), torch.full((1, 2, 2, 2), 300.0))
    assert rgb.min() >= 0 and rgb.max() <= 1
