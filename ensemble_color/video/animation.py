"""Animated GIF/PNG/WebP: colourised frame by frame like a clip, written back in the same format with the frame
durations and loop count kept (GIFs with one palette for all frames: a palette per frame would itself flicker)."""

from __future__ import annotations

import io as _io
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageSequence

from ..io import atomic_write_bytes
from ..limits import megapixels
from ..naming import ANIMATION_SUFFIXES, VIDEO_SUFFIXES
from .clips import (
    DEFAULT_MAX_ANIMATION_PIXELS,
    DEFAULT_MAX_FRAME_PIXELS,
    FOURCC,
    Progress,
    VideoError,
    VideoReport,
    _check_frame_size,
    _noting_color,
    colorize_frames,
    colorize_video,
    to_u8,
)
from .temporal import FlowCarry, TemporalOptions

if TYPE_CHECKING:
    from ..pipeline import Pipeline

#: Animated output extension -> Pillow format (an animation keeps its format).
ANIMATION_FORMATS = {".gif": "GIF", ".png": "PNG", ".apng": "PNG", ".webp": "WEBP"}



def is_animation(path: str | Path) -> bool:
    """True for a GIF/PNG/WebP file with more than one frame (reads the header only)."""
    path = Path(path)
    if path.suffix.lower() not in ANIMATION_SUFFIXES or not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:  # unreadable (or a bomb): the still-image path reports why, with the limit
        return False


def is_frame_sequence(path: str | Path) -> bool:
    """Whether the CLI treats ``path`` as frames (a video, or an animated image) rather than a still."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES or is_animation(path)


def output_suffix(src: str | Path) -> str:
    """Extension of a frame sequence's output: animations keep theirs, videos theirs if writable, else .mp4."""
    suffix = Path(src).suffix.lower()
    if suffix in ANIMATION_SUFFIXES and suffix not in VIDEO_SUFFIXES:
        return ".png" if suffix == ".apng" else suffix
    return suffix if suffix in FOURCC else ".mp4"


def colorize_animation(pipe: Pipeline, src: str | Path, dst: str | Path, *, stabilize: bool = True,
                       temporal: TemporalOptions | None = None, batch_size: int = 8,
                       max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
                       max_total_pixels: int = DEFAULT_MAX_ANIMATION_PIXELS,
                       progress: Progress | None = None) -> VideoReport:
    """Colourise an animated GIF/PNG/WebP into the same format, frame durations and loop count kept.

    GIF output uses one palette for every frame (a palette per frame would itself flicker).
    """
    src, dst = Path(src), Path(dst)
    fmt = ANIMATION_FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise ValueError(f"{dst}: unsupported animation extension {dst.suffix!r} (use {', '.join(ANIMATION_FORMATS)})")
    t0 = time.perf_counter()
    durations: list[int] = []
    try:
        with Image.open(src) as im:
            (w, h), n = im.size, int(getattr(im, "n_frames", 1))
            _check_frame_size(src, w, h, max_pixels)
            if n * w * h > max_total_pixels:
                raise VideoError(f"{src}: {n} frames of {w}x{h} = {megapixels(n * w * h)}, over the "
                                 f"{megapixels(max_total_pixels)} limit for animations (max_animation_pixels)")
            loop = im.info.get("loop")
            report = VideoReport(src, dst, 0, w, h, 0.0, stabilize)
            flow = FlowCarry(temporal) if stabilize else None
            out = []
            frames = _animation_frames(im, durations)
            for res in colorize_frames(pipe, _noting_color(frames, report), batch_size, flow):
                out.append(to_u8(res.rgb))
                if progress is not None:
                    progress(len(out), n)
    except VideoError:
        raise
    except Image.DecompressionBombError as err:
        raise VideoError(f"{src}: over the {megapixels(max_pixels)} limit (max_frame_pixels): {err}") from None
    except Exception as err:  # a decoder's failure on malformed data is this file's error
        raise VideoError(f"{src}: corrupt or truncated animation ({type(err).__name__}: {err})") from None
    if not out:
        raise VideoError(f"{src}: contains no frames")
    report.frames, report.cuts = len(out), list(flow.cuts) if flow is not None else []
    report.fps = 1000.0 * len(durations) / max(1, sum(durations))
    atomic_write_bytes(dst, encode_animation(out, durations, loop, fmt))
    report.seconds = time.perf_counter() - t0
    return report


def _animation_frames(im: Image.Image, durations: list[int]) -> Iterator[np.ndarray]:
    """Each frame composited as displayed, as RGB uint8; appends its duration (ms) to ``durations``."""
    for frame in ImageSequence.Iterator(im):
        durations.append(int(frame.info.get("duration", im.info.get("duration", 100)) or 100))
        yield np.array(frame.convert("RGB"))  # a writable copy (torch refuses read-only arrays)


def encode_animation(frames: Sequence[np.ndarray], durations: Sequence[int], loop: int | None, fmt: str) -> bytes:
    """Encode RGB frames as an animated ``fmt`` (GIF, PNG or WEBP) in memory."""
    images = [Image.fromarray(f) for f in frames]
    if fmt == "GIF":
        palette = _shared_palette(frames)
        images = [im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for im in images]
    options: dict = {"save_all": True, "append_images": images[1:], "duration": list(durations)}
    if loop is not None:
        options["loop"] = loop
    buf = _io.BytesIO()
    images[0].save(buf, format=fmt, **options)
    return buf.getvalue()


def _shared_palette(frames: Sequence[np.ndarray], samples: int = 16) -> Image.Image:
    """A 256-colour palette from up to ``samples`` evenly spaced frames stacked into one image."""
    idx = np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in idx], axis=0)
    return Image.fromarray(strip).quantize(256, method=Image.Quantize.MEDIANCUT)


def colorize_sequence(pipe: Pipeline, src: str | Path, dst: str | Path, **options) -> VideoReport:
    """A video (:func:`colorize_video`) or an animated image (:func:`colorize_animation`), by content."""
    if is_animation(src):
        options.pop("copy_audio", None)
        options.pop("max_frames", None)
        return colorize_animation(pipe, src, dst, **options)
    return colorize_video(pipe, src, dst, **options)
