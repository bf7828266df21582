"""Video files in and out: probe (with the limits), read frames, colourise them in batches through the pipeline,
write them at the source's size, fps and frame count, atomically, and copy the audio with ffmpeg."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..limits import DEFAULT_LIMITS, pixel_limit_message
from .temporal import FlowCarry, TemporalOptions

if TYPE_CHECKING:
    from ..pipeline import ColorizeResult, Pipeline

#: Output container -> codec this OpenCV build can write. MPEG-4 Part 2 for .mp4/.mov/.mkv (H.264 is not
#: in the opencv-python wheels), Motion-JPEG for .avi, VP8 for .webm (browser-playable: the web demo).
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG", ".webm": "VP80"}
#: Audio codec ffmpeg re-encodes to when the source's cannot be copied into the output container (AAC in WebM…).
AUDIO_REENCODE = {".webm": "libopus", ".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "aac",
                  ".avi": "libmp3lame"}
#: Largest frame accepted (4K UHD); bigger frames are refused before any is decoded (``limits``).
DEFAULT_MAX_FRAME_PIXELS = DEFAULT_LIMITS.max_frame_pixels
#: Animated images are held in memory (GIF needs one palette for all frames): total decoded pixels cap.
DEFAULT_MAX_ANIMATION_PIXELS = DEFAULT_LIMITS.max_animation_pixels
#: Frames of one video.
DEFAULT_MAX_FRAMES = DEFAULT_LIMITS.max_frames
#: fps used when a container does not say (some streams report 0).
FALLBACK_FPS = 25.0

#: ``progress(frames_done, frames_total)``; total is the container's announced count (0 if unknown).
Progress = Callable[[int, int], None]



class VideoError(ValueError):
    """A video/animation that cannot be used; ``str(err)`` is one line naming the file."""


@dataclass
class VideoReport:
    """What one video run did, for the user (the CLI prints it; the app shows it)."""

    src: Path
    dst: Path
    frames: int
    width: int
    height: int
    fps: float
    stabilized: bool
    cuts: list[int] = field(default_factory=list)   #: frames where the carried colour was reset
    audio: str = "none"                             #: "copied", "none" (no audio track) or "dropped (why)"
    notes: list[str] = field(default_factory=list)  #: things the user should know (colour input, …)
    seconds: float = 0.0




def colorize_frames(pipe: Pipeline, frames: Iterable[np.ndarray], batch_size: int = 8,
                    carry: FlowCarry | None = None) -> Iterator[ColorizeResult]:
    """Colourise RGB uint8 frames (H, W, 3) in order, ``batch_size`` at a time.

    With ``carry`` (a fresh :class:`FlowCarry` per clip) colour is carried along motion; without, each
    frame is coloured on its own. Results come back in order, each joined with its own full-res L.

    Frames always decode as in the blend (``decode_alone="blend"``, whatever ``pipe`` says): the still-photo
    default switches the generalist's decoding when it carries >= ``alone_share`` of a frame, and as subjects
    move that share crosses the bound within a shot. On the test clip (tests/test_video.py) the switch came at
    frame 5 of a 10-frame pan, a jump of 8 L2ab between neighbouring frames, and the stabilised frames, whose
    carried probabilities stayed above the bound, were 11 % worse than the per-frame ones. Deciding once per
    shot instead (its first frame's decision kept to the cut; tried on 2026-12-03) left the stabilised frames
    6.4 % worse in L2ab than the still-photo rule per frame on the same clip (26.00 vs 24.43), so no switch.
    """
    pipe = pipe.with_options(decode_alone="blend")
    batch: list[torch.Tensor] = []
    for frame in frames:
        batch.append(torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0)
        if len(batch) >= max(1, batch_size):
            yield from pipe.colorize_batch(batch, carry=carry)
            batch = []
    if batch:
        yield from pipe.colorize_batch(batch, carry=carry)


def to_u8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1] -> (H, W, 3) uint8."""
    return np.ascontiguousarray((rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy())


def _is_color(frame: np.ndarray) -> bool:
    """Same rule as still images (io.decode_image): channels differing by more than 2.5 levels."""
    f = frame.astype(np.float32)
    return float(np.abs(f - f.mean(axis=2, keepdims=True)).max()) > 2.5


def _temp_beside(dst: Path) -> Path:
    """A hidden temporary name in the destination's folder, keeping the extension (picks the container)."""
    return dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.tmp{dst.suffix}")


def _check_frame_size(src: Path, w: int, h: int, max_pixels: int) -> None:
    if message := pixel_limit_message(str(src), "a frame", w, h, max_pixels, "max_frame_pixels"):
        raise VideoError(message)
    if w <= 0 or h <= 0:
        raise VideoError(f"{src}: frames have no size ({w}x{h}): corrupt or unsupported video")


@dataclass(frozen=True)
class VideoInfo:
    """What a video's header says (before any frame is colourised)."""

    width: int
    height: int
    fps: float      #: 0 when the container does not say
    frames: int     #: announced frame count; 0 when unknown (may be approximate for some containers)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def _open(src: Path) -> cv2.VideoCapture:
    if not src.exists():
        raise VideoError(f"{src}: no such file")
    if src.is_dir():
        raise VideoError(f"{src}: is a directory")
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{src}: cannot open as video (corrupt, empty or an unsupported format)")
    return cap


def probe_video(src: str | Path, max_pixels: int = DEFAULT_MAX_FRAME_PIXELS) -> VideoInfo:
    """Open a video and read its header; :class:`VideoError` for unreadable or oversized ones."""
    src = Path(src)
    cap = _open(src)
    try:
        return _info(cap, src, max_pixels)
    finally:
        cap.release()


def _info(cap: cv2.VideoCapture, src: Path, max_pixels: int) -> VideoInfo:
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    _check_frame_size(src, w, h, max_pixels)
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return VideoInfo(w, h, fps if math.isfinite(fps) and fps > 0 else 0.0,
                     int(n) if math.isfinite(n) and n > 0 else 0)


def _read_frames(cap: cv2.VideoCapture, src: Path, info: VideoInfo, max_frames: int | None
                 ) -> Iterator[np.ndarray]:
    """RGB uint8 frames; a frame of another size or more than ``max_frames`` frames is an error."""
    n = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            return
        n += 1
        if max_frames is not None and n > max_frames:
            raise VideoError(f"{src}: longer than the {max_frames}-frame limit (max_frames)")
        if bgr.shape[:2] != (info.height, info.width):
            raise VideoError(f"{src}: frame {n - 1} is {bgr.shape[1]}x{bgr.shape[0]}, not {info.width}x"
                             f"{info.height} like the header says: unsupported video")
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def colorize_video(pipe: Pipeline, src: str | Path, dst: str | Path, *, stabilize: bool = True,
                   temporal: TemporalOptions | None = None, batch_size: int = 8,
                   max_pixels: int = DEFAULT_MAX_FRAME_PIXELS, max_frames: int | None = DEFAULT_MAX_FRAMES,
                   copy_audio: bool = True, progress: Progress | None = None) -> VideoReport:
    """Colourise video ``src`` into ``dst`` (same size, fps and frame count; container/codec from
    ``dst``'s extension, see :data:`FOURCC`). Written atomically; :class:`VideoError` for bad input."""
    src, dst = Path(src), Path(dst)
    if dst.suffix.lower() not in FOURCC:
        raise ValueError(f"{dst}: unsupported video extension {dst.suffix!r} (use {', '.join(FOURCC)})")
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: refusing to overwrite the input")
    t0 = time.perf_counter()
    cap = _open(src)
    tmp = _temp_beside(dst)
    try:
        info = _info(cap, src, max_pixels)
        if max_frames is not None and info.frames > max_frames:
            raise VideoError(f"{src}: {info.frames} frames, over the {max_frames}-frame limit (max_frames)")
        report = VideoReport(src, dst, 0, info.width, info.height, info.fps or FALLBACK_FPS, stabilize)
        if not info.fps:
            report.notes.append(f"the video does not say its frame rate: written at {FALLBACK_FPS:g} fps")
        flow = FlowCarry(temporal) if stabilize else None
        frames = _noting_color(_read_frames(cap, src, info, max_frames), report)
        report.frames = _write(colorize_frames(pipe, frames, batch_size, flow), tmp, report.fps,
                               (info.width, info.height),
                               None if progress is None else lambda n: progress(n, info.frames))
        _check_complete(src, info, report.frames)
        report.cuts = list(flow.cuts) if flow is not None else []
        final, report.audio = mux_audio(src, tmp) if copy_audio else (tmp, "dropped (not asked for)")
        os.replace(final, dst)
    except BaseException:
        for leftover in (tmp, _with_audio_name(tmp)):
            leftover.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
    report.seconds = time.perf_counter() - t0
    return report


def _write(results: Iterable[ColorizeResult], path: Path, fps: float, size: tuple[int, int],
           progress: Callable[[int], None] | None) -> int:
    """Encode results into ``path`` (codec by its extension); returns the frame count. The writer is
    opened at the first frame, so an input without one leaves no file."""
    writer: cv2.VideoWriter | None = None
    n = 0
    try:
        for res in results:
            if writer is None:
                fourcc = FOURCC[path.suffix.lower()]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
                if not writer.isOpened():
                    raise OSError(f"cannot write {path.suffix} video with codec {fourcc}")
            writer.write(cv2.cvtColor(to_u8(res.rgb), cv2.COLOR_RGB2BGR))
            n += 1
            if progress is not None:
                progress(n)
    finally:
        if writer is not None:
            writer.release()
    return n


def _check_complete(src: Path, info: VideoInfo, frames: int) -> None:
    """No frame, or clearly fewer than the header announces (a cut-off download): the input is bad.

    A small shortfall is allowed: some containers only estimate their frame count.
    """
    if frames == 0:
        raise VideoError(f"{src}: contains no frames (or none can be decoded)")
    if info.frames and info.frames - frames > max(2, info.frames // 50):
        raise VideoError(f"{src}: truncated or corrupt: decoded {frames} of the {info.frames} frames its header "
                         f"announces")


def _noting_color(frames: Iterator[np.ndarray], report: VideoReport) -> Iterator[np.ndarray]:
    """Pass frames through; note once if the first is in colour (only its lightness is used)."""
    for i, frame in enumerate(frames):
        if i == 0 and _is_color(frame):
            report.notes.append("colour video: only its lightness (L) is used")
        yield frame


def _with_audio_name(video: Path) -> Path:
    """The temporary file ffmpeg writes (video + audio), next to the silent temporary one."""
    return video.with_name(f"{video.stem}.audio{video.suffix}")


_AUDIO_STREAM = re.compile(r"Stream #\d+:\d+\S*: Audio:")


def mux_audio(src: Path, video: Path, ffmpeg: str | None = None) -> tuple[Path, str]:
    """Copy ``src``'s audio into the silent ``video``; returns (file to keep, what happened to the audio).

    Without ffmpeg on PATH the audio is dropped and the report says so. An audio codec the output
    container cannot hold (AAC in WebM) is re-encoded (:data:`AUDIO_REENCODE`); if ffmpeg still fails,
    the silent video is kept and the reason is reported.
    """
    ffmpeg = ffmpeg or shutil.which("ffmpeg")
    if ffmpeg is None:
        return video, "dropped (ffmpeg is not on PATH; any audio track was not copied)"
    out = _with_audio_name(video)
    try:
        probe = subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(src)], capture_output=True,
                               text=True, timeout=120, check=False)
        if not _AUDIO_STREAM.search(probe.stderr):
            return video, "none"
        reason = "no audio codec to re-encode to"
        for codec in ("copy", AUDIO_REENCODE.get(video.suffix.lower())):
            if codec is None:
                break
            proc = subprocess.run([ffmpeg, "-v", "error", "-nostdin", "-y", "-i", str(video), "-i", str(src),
                                   "-map", "0:v:0", "-map", "1:a", "-c:v", "copy", "-c:a", codec, str(out)],
                                  capture_output=True, text=True, timeout=3600, check=False)
            if proc.returncode == 0 and out.exists():
                video.unlink()
                return out, "copied" if codec == "copy" else f"re-encoded ({codec})"
            out.unlink(missing_ok=True)
            reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    except (OSError, subprocess.SubprocessError) as err:  # not executable, timed out …: keep the silent video
        out.unlink(missing_ok=True)
        reason = str(err)
    return video, f"dropped (ffmpeg could not copy it: {reason})"


