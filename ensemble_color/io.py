"""Image I/O: decode anything Pillow reads into a float RGB tensor, save atomically, fail clearly.

Why here and not in the pipeline: every front end (CLI, app, evaluation) must treat EXIF rotation,
16-bit, palette, RGBA and CMYK files the same way, and must never leave a half-written output.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .limits import DEFAULT_LIMITS, megapixels, pixel_limit_message

#: Refuse larger images (decompression bombs, accidental 400 MP scans); override with max_pixels.
DEFAULT_MAX_PIXELS = DEFAULT_LIMITS.max_pixels


class ImageLoadError(ValueError):
    """A file that cannot be used as input; ``str(err)`` is a one-line message naming the file."""


@dataclass(frozen=True)
class LoadedImage:
    """An input photo as float sRGB (3, H, W) in [0, 1], plus what the user should be told about it."""

    rgb: torch.Tensor
    source: str
    was_color: bool
    bit_depth: int
    alpha: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the full-resolution image."""
        return int(self.rgb.shape[-1]), int(self.rgb.shape[-2])


def _to_float_rgb(im: Image.Image) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Any Pillow mode -> (H, W, 3) float32 in [0, 1], bit depth, optional alpha (uint8)."""
    alpha = None
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        depth = 16
        arr = arr / (65535.0 if arr.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0)
        return np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2), depth, None
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        return np.repeat(np.clip(arr, 0, 1)[..., None], 3, axis=2), 32, None
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        alpha = np.asarray(im)[..., 3].copy()
    if im.mode == "1":
        im = im.convert("L")
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return rgb, 8, alpha


def check_size(size: tuple[int, int], source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse too large images from their header, before any pixel is decoded.

    Tiny or thin ones (2x2, 4x1500) are fine: the pipeline's models pad their input to their size
    multiple and crop the result back (``LoadedExpert.run``, the router's resize).
    """
    w, h = size
    if message := pixel_limit_message(source, "image", w, h, max_pixels, "max_pixels"):
        raise ImageLoadError(message)
    if w < 1 or h < 1:
        raise ImageLoadError(f"{source}: image is {w}x{h}: it has no pixels")


def decode_image(data: Image.Image, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Normalise an opened Pillow image (EXIF rotation, mode, depth) into a :class:`LoadedImage`."""
    check_size(data.size, source, max_pixels)
    try:
        im = ImageOps.exif_transpose(data)
        rgb, depth, alpha = _to_float_rgb(im)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"{source}: cannot decode image ({err})") from None
    spread = float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max()) if rgb.size else 0.0
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return LoadedImage(rgb=tensor, source=source, was_color=spread > 2.5 / 255, bit_depth=depth, alpha=alpha)


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read an image file; raise :class:`ImageLoadError` with a one-line reason on any problem."""
    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory")
    return read_image(path, str(path), max_pixels)


def read_image(file: str | Path | BinaryIO, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode a path or an open binary file (e.g. bytes fetched from a remote filesystem, ``batch``);
    ``source`` names it in the one-line :class:`ImageLoadError`, so every reader fails the same way.

    Every exception of the decoder becomes that file's error: on malformed data Pillow's plugins raise
    ``struct.error``, ``IndexError``, ``EOFError`` or ``zlib.error`` as well as ``OSError``, and one bad file
    must never stop the others. Pillow's own bomb check (twice its ``MAX_IMAGE_PIXELS``) fires inside
    ``Image.open``, before ours can read the header, so it is reported as our limit."""
    try:
        with Image.open(file) as im:
            check_size(im.size, source, max_pixels)  # a 200 KB PNG can hold 225 MP: check before load()
            im.load()
            return decode_image(im, source, max_pixels)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{source}: not an image file (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(f"{source}: over the {megapixels(max_pixels)} limit (max_pixels): {err}") from None
    except MemoryError:
        raise ImageLoadError(f"{source}: not enough memory to decode it") from None
    except Exception as err:  # see the docstring: the decoder's failure is this file's error
        raise ImageLoadError(f"{source}: corrupt or truncated image ({type(err).__name__}: {err})") from None


def to_pil(rgb: torch.Tensor | np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """(3, H, W) float tensor in [0, 1] or (H, W, 3) uint8 array -> Pillow RGB(A) image."""
    if isinstance(rgb, torch.Tensor):
        arr = (rgb.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    else:
        arr = rgb
    im = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    if alpha is not None and alpha.shape == arr.shape[:2]:
        im.putalpha(Image.fromarray(np.ascontiguousarray(alpha, dtype=np.uint8)))
    return im


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0o666 less the process umask. ``mkstemp`` makes its files
    0o600, which an output renamed into place would keep (a web server or another user could not read it).
    The umask is read from /proc where there is one: setting it to read it is process-wide, not thread-safe."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename; the file gets
    the mode a plain ``open()`` would give it (:func:`new_file_mode`)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: object) -> None:
    """``obj`` as indented JSON with a final newline, written by :func:`atomic_write_bytes` (manifests, configs,
    cards: a reader never sees half a file)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
            ".bmp": "BMP"}


def encode_image(im: Image.Image, path: str | Path, quality: int = 95) -> bytes:
    """The file bytes for ``path``, format chosen by its extension (shared by local and remote writers)."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported output extension {path.suffix!r} (use {', '.join(_FORMATS)})")
    if fmt in ("JPEG", "BMP") and im.mode == "RGBA":
        im = im.convert("RGB")
    buf = _io.BytesIO()
    im.save(buf, format=fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def save_image(im: Image.Image, path: str | Path, quality: int = 95) -> None:
    """Encode by extension and write atomically (a crash never leaves a truncated output)."""
    atomic_write_bytes(path, encode_image(im, path, quality))
