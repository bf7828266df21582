"""Hostile input files for tests and benchmarks, generated from a seed (no binary fixtures in the repository).

Why: a colouriser is given whatever an archive holds: truncated downloads, bit rot, empty files, text with an
image extension, decompression bombs, 16-bit and float scans, CMYK, palette and animated files, EXIF-rotated
phone photos, 1x1 and 4x1500 slivers. :func:`write_hostile_folder` writes such a folder and says which files
must be coloured (``valid``), which must be refused with a one-line error (``bad``) and which may go either
way (``either``: a flipped bit in entropy-coded data often still decodes).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

Maker = Callable[[np.random.Generator], tuple[str, bytes]]


def _photo(rng: np.random.Generator, h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w, 1), y * 255 / max(h, 1), (x + y) * 127 / max(h + w, 1)], -1)
    noise = rng.integers(0, 40, (h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return arr[..., :channels] if channels < 3 else arr


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gray_jpeg(rng: np.random.Generator) -> tuple[str, bytes]:
    return ".jpg", _save(Image.fromarray(_photo(rng)[..., 0]), "JPEG", quality=90)


def _color_png(rng: np.random.Generator) -> tuple[str, bytes]:
    return ".png", _save(Image.fromarray(_photo(rng)), "PNG")


def _gray16_png(rng: np.random.Generator) -> tuple[str, bytes]:
    arr = (_photo(rng)[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    return ".png", _save(Image.fromarray(arr), "PNG")


def _float_tiff(rng: np.random.Generator) -> tuple[str, bytes]:
    arr = _photo(rng)[..., 0].astype(np.float32) / 255
    return ".tif", _save(Image.fromarray(arr), "TIFF")


def _cmyk_jpeg(rng: np.random.Generator) -> tuple[str, bytes]:
    return ".jpg", _save(Image.fromarray(_photo(rng)).convert("CMYK"), "JPEG")


def _palette_png(rng: np.random.Generator) -> tuple[str, bytes]:
    return ".png", _save(Image.fromarray(_photo(rng)).convert("P"), "PNG")


def _rgba_png(rng: np.random.Generator) -> tuple[str, bytes]:
    rgba = np.concatenate([_photo(rng), rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)], -1)
    return ".png", _save(Image.fromarray(rgba), "PNG")


def _exif_rotated(rng: np.random.Generator) -> tuple[str, bytes]:
    im = Image.fromarray(_photo(rng)[..., 0])
    exif = Image.Exif()
    exif[0x0112] = int(rng.choice([3, 6, 8]))  # orientation: 180, 90 CW, 90 CCW
    return ".jpg", _save(im, "JPEG", exif=exif.tobytes())


def _tiny(rng: np.random.Generator) -> tuple[str, bytes]:
    h, w = [(1, 1), (2, 3), (4, 1500), (1500, 4), (1, 200)][int(rng.integers(5))]
    return ".png", _save(Image.fromarray(_photo(rng, h, w)[..., 0]), "PNG")


def _animated_gif(rng: np.random.Generator) -> tuple[str, bytes]:
    frames = [Image.fromarray(_photo(rng, 32, 40)[..., 0]).convert("P") for _ in range(3)]
    return ".gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)


def _webp(rng: np.random.Generator) -> tuple[str, bytes]:
    return ".webp", _save(Image.fromarray(_photo(rng)), "WEBP", quality=80)


def _one_bit(rng: np.random.Generator) -> tuple[str, bytes]:
    return ".png", _save(Image.fromarray(_photo(rng)[..., 0] > 128), "PNG")


VALID: dict[str, Maker] = {
    "gray_jpeg": _gray_jpeg, "color_png": _color_png, "gray16_png": _gray16_png, "float_tiff": _float_tiff,
    "cmyk_jpeg": _cmyk_jpeg, "palette_png": _palette_png, "rgba_png": _rgba_png, "exif_rotated": _exif_rotated,
    "tiny": _tiny, "animated_gif": _animated_gif, "webp": _webp, "one_bit": _one_bit,
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zeros: a few hundred KB that decode to ``width*height``
    pixels (900 MP by default): what a decompression bomb looks like."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _bomb(rng: np.random.Generator) -> tuple[str, bytes]:
    side = int(rng.choice([12000, 20000, 30000]))
    return ".png", png_bomb(side, side)


def _header_only_giant(rng: np.random.Generator) -> tuple[str, bytes]:
    """A PNG whose header claims 60000 x 60000 and whose data is missing."""
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return ".png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _truncated(rng: np.random.Generator) -> tuple[str, bytes]:
    suffix, data = [_gray_jpeg, _color_png, _webp][int(rng.integers(3))](rng)
    return suffix, data[: int(len(data) * rng.uniform(0.2, 0.7))]


def _empty(rng: np.random.Generator) -> tuple[str, bytes]:
    return str(rng.choice([".jpg", ".png", ".gif", ".mp4"])), b""


def _text(rng: np.random.Generator) -> tuple[str, bytes]:
    return str(rng.choice([".jpg", ".png", ".tif", ".mp4", ".gif"])), b"this is not an image\n" * 20


BAD: dict[str, Maker] = {
    "bomb": _bomb, "giant_header": _header_only_giant, "truncated": _truncated, "empty": _empty, "text": _text,
}


def _bit_flipped(rng: np.random.Generator) -> tuple[str, bytes]:
    suffix, data = [_gray_jpeg, _color_png, _animated_gif, _float_tiff][int(rng.integers(4))](rng)
    buf = bytearray(data)
    for pos in rng.integers(len(buf) // 10, len(buf), int(rng.integers(1, 12))):
        buf[pos] ^= 1 << int(rng.integers(8))
    return suffix, bytes(buf)


EITHER: dict[str, Maker] = {"bit_flipped": _bit_flipped}


@dataclass
class HostileFolder:
    """Which generated files must be written, refused, or may go either way."""

    valid: list[Path] = field(default_factory=list)
    bad: list[Path] = field(default_factory=list)
    either: list[Path] = field(default_factory=list)

    @property
    def all(self) -> list[Path]:
        return self.valid + self.bad + self.either


def write_hostile_folder(folder: str | Path, n: int = 40, seed: int = 0, bombs: bool = True) -> HostileFolder:
    """Write ``n`` files (kinds in rotation: valid, bad, either) into ``folder``; deterministic for a seed.

    Every kind appears once before any repeats, so ``n >= 18`` covers them all. ``bombs=False`` leaves out
    the decompression bombs (they take ~0.1 s each to write).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds = [("valid", k, f) for k, f in VALID.items()] + [("bad", k, f) for k, f in BAD.items()
                                                              if bombs or k != "bomb"]
    kinds += [("either", k, f) for k, f in EITHER.items()]
    out = HostileFolder()
    for i in range(n):
        group, kind, make = kinds[i % len(kinds)]
        suffix, data = make(rng)
        path = folder / f"{i:03d}_{kind}{suffix}"
        path.write_bytes(data)
        getattr(out, group).append(path)
    return out
