"""Halftone descreening: a screen is found where there is one (and not in a smooth photo), blurring removes it,
and the pipeline's output still carries the original L."""

from __future__ import annotations

import numpy as np
import torch

from ensemble_color.color import rgb_to_l
from ensemble_color.descreen import descreen, detect_screen, without_screen
from ensemble_color.train.degrade import TRANSFORMS


def _smooth(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 1, h // 20, w // 20, generator=g)
    return (torch.nn.functional.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0, 0]
            .clamp(0, 1) * 80 + 10).numpy().astype(np.float32)


def _screened(L: np.ndarray, period: float) -> np.ndarray:
    """An AM halftone of ``L`` at 45 degrees with the given period (px), lightly blurred as a scan is."""
    h, w = L.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx + yy) / np.sqrt(2) * 2 * np.pi / period
    v = (yy - xx) / np.sqrt(2) * 2 * np.pi / period
    spot = (2 - np.cos(u) - np.cos(v)) / 4
    out = np.where(spot < (95 - L) / 85, 8.0, 95.0).astype(np.float32)
    return torch.nn.functional.avg_pool2d(torch.from_numpy(out)[None, None], 3, 1, 1)[0, 0].numpy()


def test_a_screen_is_found_with_its_period_and_a_smooth_photo_has_none() -> None:
    L = _smooth()
    assert detect_screen(torch.from_numpy(L)) is None
    for period in (3.0, 5.0, 7.5):
        screen = detect_screen(torch.from_numpy(_screened(L, period)))
        assert screen is not None, period
        assert abs(screen.period - period) / period < 0.15


def test_the_degradation_modules_halftone_is_found_too() -> None:
    found = sum(detect_screen(torch.from_numpy(TRANSFORMS["halftone"](_smooth(seed=s), np.random.default_rng(s))))
                is not None for s in range(8))
    assert found >= 5  # some draws put the screen near the crop's Nyquist limit, where it aliases away


def test_descreening_removes_the_screen_and_keeps_the_picture() -> None:
    L = _smooth()
    x = torch.from_numpy(_screened(L, 5.0))
    screen = detect_screen(x)
    assert screen is not None
    clean = descreen(x, screen)
    assert clean.shape == x.shape
    assert detect_screen(clean) is None
    # the shapes survive: the descreened print is close to the photo it was printed from
    assert (clean - torch.from_numpy(L)).abs().mean() < (x - torch.from_numpy(L)).abs().mean() / 2


def test_without_screen_descreens_a_print_and_returns_a_photo_itself() -> None:
    photo = torch.from_numpy(_smooth())
    assert without_screen(photo) is photo
    x = torch.from_numpy(_screened(_smooth(), 5.0))
    torch.testing.assert_close(without_screen(x), descreen(x, detect_screen(x)))


def test_pipeline_descreens_what_the_models_see_but_joins_the_original_l(tiny_experts) -> None:
    from ensemble_color.pipeline import Pipeline

    L = torch.from_numpy(_screened(_smooth(), 5.0))
    gray = torch.where(L > 50, 0.7, 0.35).expand(3, -1, -1).contiguous()  # a two-level print, inside the gamut
    pipe = Pipeline.load([tiny_experts], router="background", use_shipped=False, device="cpu")
    on = pipe.colorize(gray)
    off = pipe.with_options(descreen=False).colorize(gray)
    assert (on.L_work.std() < off.L_work.std())  # the screen's dots are gone from the working L
    full_l = rgb_to_l(gray[None])[0]
    assert (rgb_to_l(on.rgb[None])[0] - full_l).abs().max() < 1.0  # the output keeps the print's own L
