"""Old-photo degradations of the lightness channel, for training on inputs as users have them.

Why: every training photo is a clean modern one, while users bring halftone book prints, grainy film, faded,
scratched and JPEG-crushed scans. A model that never saw a 4 px halftone screen reads it as texture and
misses the face under it. Each transform here turns a clean L (float32, Lab units 0..100, shape (H, W)) into
a plausible old one of the same shape and range; only the *input* is degraded, targets and masks stay clean.

Every transform takes a ``numpy.random.Generator`` and draws all its parameters from it, so a seeded
generator gives the same output twice. :func:`degrade` chains a random subset in the order the damage
happens physically (exposure and fading in the print, the print's screen or the film's grain, the lens or
scanner blur, the paper, dust and scratches on top, then the scan's resampling and compression).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from ..color import l_to_gray, rgb_to_l

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _clip(L: np.ndarray) -> np.ndarray:
    return np.clip(L, 0.0, 100.0).astype(np.float32, copy=False)


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` px and renormalised to unit std (grain, paper, uneven exposure)."""
    n = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0.3:
        n = cv2.GaussianBlur(n, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return n / max(float(n.std()), 1e-6)


def halftone(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Amplitude-modulated dot screen as in book and newspaper prints, scanned and resized.

    The print is simulated at ``zoom`` (1-4, log-uniform) times the crop's size with a screen period of 3-8 px
    there (what a scan shows; 1-4 px at the crop's size, as a 4-5 px screen on a 600 px scan is at the router's
    input), blurred by the scanner, and brought back to the crop's size with area averaging, as the pipeline
    resizes a photo: the model sees the moiré and the residual dots it will meet.
    """
    h, w = L.shape
    zoom = float(np.exp(rng.uniform(0.0, np.log(4.0))))
    H, W = max(8, round(h * zoom)), max(8, round(w * zoom))
    big = cv2.resize(L, (W, H), interpolation=cv2.INTER_LINEAR) if (h, w) != (H, W) else L
    period = float(rng.uniform(3.0, 8.0))
    angle = np.deg2rad(float(rng.choice([45.0, 15.0, 75.0, 0.0], p=[0.55, 0.15, 0.15, 0.15])))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period) + phase[0]
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) * (2 * np.pi / period) + phase[1]
    spot = (2.0 - np.cos(u) - np.cos(v)) / 4.0  # 0 at a dot's centre, 1 between dots
    paper, ink = float(rng.uniform(80, 97)), float(rng.uniform(5, 30))
    darkness = np.clip((paper - big) / max(paper - ink, 1.0), 0, 1)
    # A dot of coverage d covers the spots below its level; the map is close to linear in area.
    inked = spot < darkness
    out = np.where(inked, ink, paper).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.1)) * period / 4.0)
    if (h, w) != (H, W):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
    return _clip(out)


def grain(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Film grain: clumped noise, strongest in the mid-tones, 1.5-8 L units."""
    amount = float(rng.uniform(1.5, 8.0))
    n = _smooth_noise(L.shape, float(rng.uniform(0.0, 1.5)), rng)
    mid = 0.35 + 0.65 * (1.0 - np.abs(L / 50.0 - 1.0))
    return _clip(L + amount * mid * n)


def blur(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus (a disc), a soft lens (Gaussian) or camera shake (a line at a random angle)."""
    kind = rng.integers(3)
    if kind == 0:
        r = int(rng.integers(1, 4))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(np.float32)
    elif kind == 1:
        return _clip(cv2.GaussianBlur(L, (0, 0), float(rng.uniform(0.6, 2.0)), borderType=cv2.BORDER_REFLECT))
    else:
        n = int(rng.integers(3, 10))
        k = np.zeros((n, n), np.float32)
        k[n // 2, :] = 1
        rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        k = cv2.warpAffine(k, rot, (n, n))
    return _clip(cv2.filter2D(L, -1, k / max(float(k.sum()), 1e-6), borderType=cv2.BORDER_REFLECT))


def fade(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fading and bad tone: lifted or crushed blacks, dulled whites, a gamma; contrast down to 40 %."""
    lo = float(rng.uniform(0, 30)) if rng.random() < 0.7 else float(rng.uniform(-15, 0))
    hi = float(rng.uniform(70, 100)) if rng.random() < 0.8 else float(rng.uniform(100, 115))
    if hi - lo < 40:
        hi = lo + 40
    gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    return _clip(lo + (hi - lo) * (np.clip(L, 0, 100) / 100.0) ** gamma)


def uneven_exposure(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vignetting and a light gradient across the frame (uneven printing or lighting of the scan)."""
    h, w = L.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = h * rng.uniform(0.35, 0.65), w * rng.uniform(0.35, 0.65)
    r2 = ((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2
    vignette = 1.0 - float(rng.uniform(0.1, 0.8)) * r2 / max(float(r2.max()), 1e-6)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (xx / w - 0.5) * np.cos(theta) + (yy / h - 0.5) * np.sin(theta)
    gain = vignette * (1.0 + float(rng.uniform(-0.35, 0.35)) * ramp)
    return _clip(L * gain)


def paper(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paper texture: a fine fibre noise and a blotchy low-frequency one, multiplicative."""
    fine = _smooth_noise(L.shape, float(rng.uniform(0.5, 1.5)), rng) * float(rng.uniform(0.01, 0.03))
    coarse = _smooth_noise(L.shape, float(rng.uniform(6, 20)), rng) * float(rng.uniform(0.02, 0.07))
    return _clip(L * (1.0 + fine + coarse))


def dust_scratches(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dust specks, hair-thin scratches and a crease (bright or dark, as on the print or the negative)."""
    h, w = L.shape
    out = L.copy()
    area = h * w
    for _ in range(int(rng.integers(area // 8000, area // 1500 + 2))):
        value = 100.0 if rng.random() < 0.6 else 0.0
        cv2.circle(out, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(0, 3)), value, -1)
    for _ in range(int(rng.integers(0, 5))):
        x0 = float(rng.uniform(0, w))
        x1 = x0 + float(rng.uniform(-0.15, 0.15)) * w
        value = 100.0 if rng.random() < 0.6 else 5.0
        cv2.line(out, (round(x0), 0), (round(x1), h - 1), value, 1, lineType=cv2.LINE_AA)
    if rng.random() < 0.4:  # a crease: a curved band, bright on one side and dark on the other
        pts = np.stack([np.linspace(0, w - 1, 12), h * rng.uniform(0.1, 0.9) + np.cumsum(rng.normal(0, h / 40, 12))], 1)
        pts = pts.round().astype(np.int32)[:, None]
        cv2.polylines(out, [pts], False, 100.0, 2, lineType=cv2.LINE_AA)
        cv2.polylines(out, [pts + np.array([[[0, 2]]], np.int32)], False, 10.0, 1, lineType=cv2.LINE_AA)
    mix = float(rng.uniform(0.5, 1.0))
    return _clip(L * (1 - mix) + out * mix)


def jpeg(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A low-quality JPEG (quality 8-40): blocks and ringing, as in web copies of scans."""
    q = int(rng.integers(8, 41))
    ok, buf = cv2.imencode(".jpg", np.clip(L * 2.55, 0, 255).round().astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always encodes a 2-D uint8 array
        raise RuntimeError("JPEG encoding failed")
    return _clip(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 2.55)


def resample(L: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Downscale then upscale (a small scan or a thumbnail blown up): detail lost, edges soft or jagged."""
    h, w = L.shape
    f = float(rng.uniform(0.25, 0.6))
    small = cv2.resize(L, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_LINEAR if rng.random() < 0.7 else cv2.INTER_NEAREST
    return _clip(cv2.resize(small, (w, h), interpolation=interp))


#: every transform by name, in the physical order :func:`degrade` applies them
TRANSFORMS: dict[str, Transform] = {
    "fade": fade,
    "uneven_exposure": uneven_exposure,
    "halftone": halftone,
    "grain": grain,
    "blur": blur,
    "paper": paper,
    "dust_scratches": dust_scratches,
    "resample": resample,
    "jpeg": jpeg,
}
#: chance of each transform in a random mixed degradation (halftone and grain exclude each other)
MIX_PROBABILITY: dict[str, float] = {
    "fade": 0.6, "uneven_exposure": 0.35, "halftone": 0.35, "grain": 0.45, "blur": 0.35, "paper": 0.3,
    "dust_scratches": 0.3, "resample": 0.2, "jpeg": 0.3,
}
#: named degradations for evaluation: one family each, and the random mix used in training
PRESETS: dict[str, tuple[str, ...]] = {
    "halftone": ("halftone",),
    "grain": ("grain",),
    "fading": ("fade", "uneven_exposure"),
    "mixed": (),  # empty = drawn from MIX_PROBABILITY
}


def mix_probabilities(overrides: dict[str, float] | None) -> dict[str, float]:
    """:data:`MIX_PROBABILITY` with some chances replaced (a training run that needs more of one old-print
    family, e.g. halftone); unknown names and chances outside [0, 1] are refused."""
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"unknown transforms {unknown} (known: {', '.join(TRANSFORMS)})")
    bad = sorted(k for k, v in overrides.items() if not 0.0 <= v <= 1.0)
    if bad:
        raise ValueError(f"chances must be in [0, 1]: {bad}")
    return {**MIX_PROBABILITY, **overrides}


def mixed_chain(rng: np.random.Generator, probability: dict[str, float] = MIX_PROBABILITY) -> list[str]:
    """A random, physically ordered chain of at least one transform (halftone excludes grain), each drawn with
    its chance in ``probability``."""
    chain = [name for name in TRANSFORMS if rng.random() < probability[name]]
    if "halftone" in chain and "grain" in chain:
        chain.remove("grain" if rng.random() < 0.5 else "halftone")
    if not chain:
        chain = [str(rng.choice(list(TRANSFORMS)))]
    return chain


def degrade(L: np.ndarray, rng: np.random.Generator, preset: str = "mixed",
            probability: dict[str, float] = MIX_PROBABILITY) -> np.ndarray:
    """Degrade one L image (H, W) in Lab units by a preset of :data:`PRESETS` (``probability``: the chances of
    the ``mixed`` preset); same shape, range 0..100."""
    if preset not in PRESETS:
        raise ValueError(f"unknown degradation {preset!r} (known: {', '.join(PRESETS)})")
    if L.ndim != 2:
        raise ValueError(f"degrade takes one L image (H, W), got shape {L.shape}")
    names = list(PRESETS[preset]) or mixed_chain(rng, probability)
    out = np.ascontiguousarray(L, dtype=np.float32)
    for name in names:
        out = TRANSFORMS[name](out, rng)
    return out


def degrade_rgb(rgb: np.ndarray, rng: np.random.Generator, preset: str = "mixed") -> np.ndarray:
    """An RGB uint8 photo as a degraded gray one (RGB uint8, R = G = B): for evaluating on old-print inputs
    with the same code that scores clean photos."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255
    L = rgb_to_l(t)[0].numpy()
    gray = l_to_gray(torch.from_numpy(degrade(L, rng, preset)))
    return np.repeat((gray * 255).round().byte().numpy()[..., None], 3, axis=2)
