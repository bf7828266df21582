"""Old-photo degradations: each transform is seeded, keeps shape and range, and does the damage it names."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_color.train.degrade import PRESETS, TRANSFORMS, degrade, degrade_rgb, mix_probabilities, mixed_chain


def _scene(h: int = 96, w: int = 120) -> np.ndarray:
    """A smooth L image with a bright disc and a dark bar: edges and flat areas, values well inside 0..100."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    L = 30 + 40 * x / w
    L[(x - 60) ** 2 + (y - 48) ** 2 < 400] = 80
    L[10:20, 10:110] = 15
    return L.astype(np.float32)


def _highpass_energy(L: np.ndarray) -> float:
    return float(np.mean(np.diff(L, axis=0) ** 2) + np.mean(np.diff(L, axis=1) ** 2))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_is_seeded_and_keeps_shape_and_range(name: str) -> None:
    L = _scene()
    a = TRANSFORMS[name](L.copy(), np.random.default_rng(3))
    b = TRANSFORMS[name](L.copy(), np.random.default_rng(3))
    c = TRANSFORMS[name](L.copy(), np.random.default_rng(4))
    assert a.shape == L.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 100.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c), "another seed should draw other parameters"
    assert np.abs(a - L).mean() > 0.2, "the transform should change the photo"


def test_transforms_do_not_modify_their_input() -> None:
    L = _scene()
    before = L.copy()
    for fn in TRANSFORMS.values():
        fn(L, np.random.default_rng(0))
    np.testing.assert_array_equal(L, before)


def test_halftone_puts_a_screen_on_flat_areas() -> None:
    flat = np.full((128, 128), 50.0, np.float32)
    energies = [_highpass_energy(TRANSFORMS["halftone"](flat, np.random.default_rng(s))) for s in range(6)]
    assert min(energies) > 1.0  # a flat gray becomes dots (after the scan's blur and resize)
    # the mean tone survives the screen: a halftone reproduces gray levels by dot area
    out = TRANSFORMS["halftone"](flat, np.random.default_rng(0))
    assert abs(float(out.mean()) - 50.0) < 15.0


def test_grain_adds_noise_and_blur_removes_detail() -> None:
    L = _scene()
    assert _highpass_energy(TRANSFORMS["grain"](L, np.random.default_rng(1))) > _highpass_energy(L)
    assert _highpass_energy(TRANSFORMS["blur"](L, np.random.default_rng(1))) < _highpass_energy(L)


def test_fade_lowers_contrast_on_average() -> None:
    L = _scene()
    spreads = [float(np.ptp(TRANSFORMS["fade"](L, np.random.default_rng(s)))) for s in range(20)]
    assert np.median(spreads) < np.ptp(L)


def test_mixed_chain_is_ordered_and_never_empty() -> None:
    order = list(TRANSFORMS)
    for seed in range(50):
        chain = mixed_chain(np.random.default_rng(seed))
        assert chain and chain == sorted(chain, key=order.index)
        assert not {"halftone", "grain"} <= set(chain)


def test_mix_overrides_change_how_often_a_transform_is_drawn() -> None:
    more = mix_probabilities({"halftone": 0.9, "grain": 0.0})
    chains = [mixed_chain(np.random.default_rng(s), more) for s in range(200)]
    default = [mixed_chain(np.random.default_rng(s)) for s in range(200)]
    assert sum("halftone" in c for c in chains) > 1.5 * sum("halftone" in c for c in default)
    assert not any("grain" in c for c in chains)
    with pytest.raises(ValueError, match="unknown transforms"):
        mix_probabilities({"sepia": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mix_probabilities({"halftone": 1.5})


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_and_rgb_wrapper(preset: str) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    out = degrade_rgb(rgb, np.random.default_rng(5), preset)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(out, degrade_rgb(rgb, np.random.default_rng(5), preset))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        degrade(_scene(), np.random.default_rng(0), "sepia")
    with pytest.raises(ValueError, match="one L image"):
        degrade(np.zeros((2, 8, 8), np.float32), np.random.default_rng(0))
