"""Video (and animated image) colourisation over :class:`~ensemble_color.pipeline.Pipeline`, temporally stable.

    pipe = Pipeline.load()
    report = pipe.colorize_video("film.mp4", "out/film_colorized.mp4")   # or colorize_video(pipe, …)

A thin layer, like the CLI and the app: frames are read with ``cv2.VideoCapture`` (Pillow for
animated GIF/PNG/WebP), colourised ``batch_size`` at a time by :meth:`Pipeline.colorize_batch` (which
joins each frame's colour with that frame's own full-resolution L) and written with
``cv2.VideoWriter`` at the source's size and fps.

Design choices (and why):

* **Temporal stability.** Colourising each frame on its own flickers: small changes in the input
  (grain, compression noise, motion) move the experts' colours and the router's decisions. A
  :class:`FlowCarry` is handed to the pipeline as its per-batch hook: it computes Farneback optical
  flow between consecutive working-size lightness images, warps the previous frame's router
  probabilities and ab along it and blends them into the current ones in proportion to how reliable
  the flow is there (forward-backward consistent, same lightness after warping, inside the frame).
  So colour follows motion, new or uncovered content gets fresh colour, and nothing is copied from
  the pipeline: routing, experts and the join with L are the pipeline's.
* **Scene cuts** (a jump in the luminance histogram) reset the carried colour: the first frame of a
  new shot is coloured exactly as on its own.
* **Flicker** is measured by :func:`flicker`: mean |Δab| between consecutive frames after motion
  compensation (flow from the *input* lightness, so every method is measured along the same motion).
* **Outputs** go to a hidden temporary file next to the destination and are renamed when complete, so
  a crash, a corrupt input or a refused one never leaves a half-written file. The audio track is copied
  with ``ffmpeg`` when it is on PATH; otherwise the report says it was dropped.
"""

from __future__ import annotations

import io as _io
import math
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from PIL import Image, ImageSequence

from .color import rgb_to_lab
from .io import atomic_write_bytes
from .limits import DEFAULT_LIMITS, megapixels, pixel_limit_message

if TYPE_CHECKING:
    from .pipeline import ColorizeResult, Pipeline

#: Containers read as video (cv2 / FFmpeg); anything else goes through the image path.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
#: Image formats that may hold an animation (checked per file: a still GIF stays an image).
ANIMATION_SUFFIXES = (".gif", ".png", ".apng", ".webp")
#: Animated output extension -> Pillow format (an animation keeps its format).
ANIMATION_FORMATS = {".gif": "GIF", ".png": "PNG", ".apng": "PNG", ".webp": "WEBP"}
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


@dataclass(frozen=True)
class TemporalOptions:
    """How colour is carried from frame to frame. Fixed by reasoning, not tuned on any measured clip."""

    carry: float = 0.85             #: share of the warped previous ab kept where the flow is fully reliable
    carry_probs: float = 0.85       #: the same for router probabilities (keeps expert choice steady)
    flow_tolerance: float = 1.0     #: forward-backward flow mismatch (px) at which reliability falls to 1/e
    lightness_tolerance: float = 6.0  #: L difference after warping (Lab units) at which it falls to 1/e
    cut_threshold: float = 0.25     #: luminance-histogram distance (0..1) that is always a cut
    cut_jump: float = 6.0           #: ... or this many times the shot's typical frame-to-frame distance,
    cut_floor: float = 0.08         #: ... if at least this (a static shot's tiny distances are noise)
    hist_bins: int = 32
    #: long side (px) optical flow is computed at, then scaled up (None: at the working size). Colour is
    #: smooth at this scale, and Farneback's cost grows with the pixel count (2 flows per frame).
    flow_size: int | None = 160


@dataclass(frozen=True)
class Link:
    """How frame t relates to frame t-1: flow t -> t-1 (px), per-pixel reliability in [0, 1], or a cut."""

    flow: np.ndarray | None
    reliability: np.ndarray | None
    cut: bool


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


# ---------------------------------------------------------------------------------------------------
# Flow, reliability, cuts


def l_to_u8(L: torch.Tensor) -> np.ndarray:
    """L (1, h, w) in Lab units -> (h, w) uint8, the 8-bit image optical flow and histograms work on."""
    return np.ascontiguousarray((L[0].float().numpy() * 2.55).round().clip(0, 255).astype(np.uint8))


def scene_distance(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Half the L1 distance between two frames' normalised lightness histograms: 0 same, 1 disjoint.

    Why histograms: motion moves pixels but hardly changes the histogram, a cut to another shot does.
    """
    ha = np.bincount((a.ravel().astype(np.int32) * bins) >> 8, minlength=bins) / a.size
    hb = np.bincount((b.ravel().astype(np.int32) * bins) >> 8, minlength=bins) / b.size
    return 0.5 * float(np.abs(ha - hb).sum())


class CutDetector:
    """Scene cuts as jumps in the luminance histogram, frame by frame.

    A distance over ``cut_threshold`` is a cut; so is one ``cut_jump`` times the shot's typical
    distance (median of its last few), which catches cuts between shots of similar tone, while
    a shot's own motion, grain and lighting drift set what counts as typical.
    """

    def __init__(self, options: TemporalOptions, memory: int = 8) -> None:
        self.options, self.memory = options, memory
        self._recent: list[float] = []

    def __call__(self, prev: np.ndarray, cur: np.ndarray) -> bool:
        o = self.options
        if prev.shape != cur.shape:
            self._recent = []
            return True
        d = scene_distance(prev, cur, o.hist_bins)
        typical = float(np.median(self._recent)) if self._recent else None
        cut = d > o.cut_threshold or (typical is not None and d > max(o.cut_floor, o.cut_jump * typical))
        self._recent = [] if cut else [*self._recent, d][-self.memory:]
        return cut


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from ``a`` to ``b`` (h, w, 2): ``a[y, x] ≈ b[y + f[..., 1], x + f[..., 0]]``."""
    levels = max(1, min(4, int(math.log2(max(8, min(a.shape))) - 3)))  # coarsest level still >= ~8 px
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=levels, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def coarse_flow(a: np.ndarray, b: np.ndarray, long_side: int | None) -> np.ndarray:
    """:func:`farneback` on copies shrunk to ``long_side`` (if larger), scaled back to ``a``'s size in pixels."""
    h, w = a.shape
    if long_side is None or max(h, w) <= long_side:
        return farneback(a, b)
    s = long_side / max(h, w)
    size = (max(8, round(w * s)), max(8, round(h * s)))
    small = farneback(*(cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (a, b)))
    flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= w / size[0]
    flow[..., 1] *= h / size[1]
    return flow


def warp(x: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``x`` (h, w[, C]) at ``pixel + flow``: brings the previous frame onto the current one."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(x, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def link_frames(prev: np.ndarray, cur: np.ndarray, options: TemporalOptions, cut: bool = False) -> Link:
    """Flow from ``cur`` back to ``prev`` and where it can be trusted (``cut``: they are unrelated).

    Reliability is the product of three checks: following the flow back and then forward returns to
    the start (occlusions and wrong matches fail this), the lightness found there is the same, and the
    source lies inside the frame (content entering at the border has no past).
    """
    if cut or prev.shape != cur.shape:
        return Link(None, None, cut=True)
    back, fwd = coarse_flow(cur, prev, options.flow_size), coarse_flow(prev, cur, options.flow_size)
    mismatch = np.linalg.norm(back + warp(fwd, back), axis=-1)
    d_light = np.abs(cur.astype(np.float32) - warp(prev.astype(np.float32), back)) / 2.55
    h, w = cur.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sx, sy = gx + back[..., 0], gy + back[..., 1]
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    reliability = (np.exp(-(mismatch / options.flow_tolerance) ** 2)
                   * np.exp(-(d_light / options.lightness_tolerance) ** 2) * inside)
    return Link(back, reliability.astype(np.float32), cut=False)


def carry(prev: torch.Tensor | None, cur: torch.Tensor, link: Link, strength: float) -> torch.Tensor:
    """Blend ``prev`` (C, h, w), warped onto this frame, into ``cur`` where the flow is reliable.

    A convex combination per pixel, so probabilities still sum to one and ab stays in range.
    """
    if prev is None or link.cut or link.flow is None or prev.shape != cur.shape or strength <= 0:
        return cur
    warped = torch.from_numpy(warp(np.ascontiguousarray(prev.permute(1, 2, 0).numpy()), link.flow))
    if warped.dim() == 2:  # cv2 drops a single channel axis
        warped = warped[..., None]
    alpha = torch.from_numpy(link.reliability * strength)[None]
    return cur + alpha * (warped.permute(2, 0, 1) - cur)


class FlowCarry:
    """Carries router probabilities and ab along optical flow, frame to frame, resetting at scene cuts.

    The pipeline's sequence hook (``Pipeline.colorize_batch(..., carry=...)``): it calls
    :meth:`carry_probs` with each batch's router probabilities and :meth:`carry_ab` with its blended ab,
    both at working size and in frame order. One instance per video; it holds that video's state
    (the last frame's lightness, probabilities and ab), so batches may be of any size.
    """

    def __init__(self, options: TemporalOptions | None = None) -> None:
        self.options = options or TemporalOptions()
        self.cuts: list[int] = []     #: indices of frames that started a new shot (frame 0 excluded)
        self.frames = 0               #: frames linked so far
        self.seconds = 0.0            #: time spent on flow and blending
        self._cuts = CutDetector(self.options)
        self._prev_L: np.ndarray | None = None
        self._prev_probs: torch.Tensor | None = None
        self._prev_ab: torch.Tensor | None = None
        self._batch: list[torch.Tensor] | None = None
        self._links: list[Link] = []

    def _links_for(self, L_works: list[torch.Tensor]) -> list[Link]:
        """Links of this batch's frames (computed once per batch; both hooks use them)."""
        if L_works is self._batch:
            return self._links
        t0 = time.perf_counter()
        links = []
        for L in L_works:
            cur = l_to_u8(L)
            prev = self._prev_L
            link = Link(None, None, cut=False) if prev is None else link_frames(prev, cur, self.options,
                                                                                self._cuts(prev, cur))
            if link.cut:
                self.cuts.append(self.frames)
            links.append(link)
            self._prev_L = cur
            self.frames += 1
        self._batch, self._links = L_works, links
        self.seconds += time.perf_counter() - t0
        return links

    def carry_probs(self, L_works: list[torch.Tensor], probs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Router probabilities with the previous frames' carried in (decides experts and crops)."""
        return self._carry(L_works, probs, "_prev_probs", self.options.carry_probs)

    def carry_ab(self, L_works: list[torch.Tensor], ab_works: list[torch.Tensor]) -> list[torch.Tensor]:
        """Blended ab with the previous frames' carried in (what is joined with each frame's L)."""
        return self._carry(L_works, ab_works, "_prev_ab", self.options.carry)

    def _carry(self, L_works: list[torch.Tensor], values: list[torch.Tensor], state: str, strength: float
               ) -> list[torch.Tensor]:
        links = self._links_for(L_works)
        t0 = time.perf_counter()
        prev: torch.Tensor | None = getattr(self, state)
        out = []
        for link, value in zip(links, values, strict=True):
            prev = carry(prev, value, link, strength)
            out.append(prev)
        setattr(self, state, prev)
        self.seconds += time.perf_counter() - t0
        return out


def flicker(abs_: Sequence[np.ndarray], Ls: Sequence[np.ndarray], options: TemporalOptions | None = None,
            min_reliability: float = 0.5) -> float:
    """Mean |Δab| (Lab units) between consecutive frames after motion compensation.

    ``abs_``: per frame (h, w, 2) float ab; ``Ls``: the *input* frames' lightness as (h, w) uint8 (see
    :func:`l_to_u8`), so two colourisations of one clip are measured along the same flow. Frame t-1's
    ab is warped onto frame t; only pixels whose flow is reliable count, pairs across a cut are skipped.
    The flow is computed at full resolution unless ``options`` say otherwise.
    """
    options = options or TemporalOptions(flow_size=None)
    cuts = CutDetector(options)
    total, count = 0.0, 0
    for t in range(1, len(abs_)):
        link = link_frames(Ls[t - 1], Ls[t], options, cuts(Ls[t - 1], Ls[t]))
        if link.cut or link.flow is None or link.reliability is None:
            continue
        mask = link.reliability > min_reliability
        diff = np.linalg.norm(abs_[t] - warp(np.ascontiguousarray(abs_[t - 1], dtype=np.float32), link.flow),
                              axis=-1)
        total += float(diff[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


def ab_of(rgb: torch.Tensor) -> np.ndarray:
    """ab (h, w, 2) of an RGB result (3, H, W): what :func:`flicker` and L2ab are measured on."""
    return np.ascontiguousarray(rgb_to_lab(rgb[None])[0, 1:].permute(1, 2, 0).numpy())


# ---------------------------------------------------------------------------------------------------
# Frames in, frames out


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
    shot instead (its first frame's decision kept to the cut; tried in session 11) left the stabilised frames
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


# ---------------------------------------------------------------------------------------------------
# Animated images (GIF, APNG, animated WebP)


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
