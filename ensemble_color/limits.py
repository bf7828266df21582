"""Every input limit in one place: pixels per image and per video frame, frames per video, upload size.

Why limits at all: one hostile file (a 200 KB PNG that decodes to 900 MP, an hour-long 8K clip) must cost
its own error line, never the memory of the process that is colouring a user's whole archive. The limits are
checked from headers, before any pixel is decoded, and every refusal names the limit it hit.

:data:`DEFAULT_LIMITS` is what the CLI, the batch engine and the Python API use; :data:`DEMO_LIMITS` is the
web demo's tighter set (a public page on 2 cores). Both are plain frozen values: pass another
:class:`Limits` (or the matching option) to change them, nothing global is mutated.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Input limits; every one is checked before decoding and named in the error that refuses a file."""

    max_pixels: int = 80_000_000             #: a still image (an 80 MP scan of a large print passes)
    max_frame_pixels: int = 3840 * 2160      #: a video or animation frame (4K UHD)
    max_frames: int = 30 * 60 * 60           #: frames of one video (an hour at 30 fps)
    max_animation_pixels: int = 150_000_000  #: all frames of an animated GIF/PNG/WebP (held in memory)
    max_upload_bytes: int = 20 * 1024 * 1024  #: one uploaded file (the web demo)
    max_video_seconds: float | None = None   #: clip length (the web demo); None = only ``max_frames``


DEFAULT_LIMITS = Limits()
DEMO_LIMITS = Limits(max_pixels=40_000_000, max_frame_pixels=1_000_000, max_upload_bytes=20 * 1024 * 1024,
                     max_video_seconds=15.0)


def megapixels(n: float) -> str:
    """``12 MP`` / ``0.9 MP``: how limits and sizes are written in messages."""
    return f"{n / 1e6:.0f} MP" if n >= 10e6 else f"{n / 1e6:.1f} MP"


def pixel_limit_message(source: str, what: str, w: int, h: int, limit: int, name: str) -> str | None:
    """The one-line refusal of a ``w`` x ``h`` ``what`` (image, frame...) over ``limit`` pixels, or None."""
    if w * h <= limit:
        return None
    return f"{source}: {what} is {w}x{h} = {megapixels(w * h)}, over the {megapixels(limit)} limit ({name})"
