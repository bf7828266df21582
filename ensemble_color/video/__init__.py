"""Video (and animated image) colourisation over :class:`~ensemble_color.pipeline.Pipeline`, temporally stable.

    pipe = Pipeline.load()
    report = colorize_video(pipe, "film.mp4", "out/film_colorized.mp4")

A thin layer, like the CLI and the app: frames are read with ``cv2.VideoCapture`` (Pillow for
animated GIF/PNG/WebP), colourised ``batch_size`` at a time by :meth:`Pipeline.colorize_batch` (which
joins each frame's colour with that frame's own full-resolution L) and written with
``cv2.VideoWriter`` at the source's size and fps.

Design choices (and why):

* **Temporal stability** (:mod:`.temporal`): colour and routing carried along optical flow where it is
  reliable; routing, experts and the join with L stay the pipeline's.
* **Scene cuts** (a jump in the luminance histogram) reset the carried colour: the first frame of a
  new shot is coloured exactly as on its own.
* **Flicker** is measured by :func:`flicker`: mean |Δab| between consecutive frames after motion
  compensation (flow from the *input* lightness, so every method is measured along the same motion).
* **Outputs** go to a hidden temporary file next to the destination and are renamed when complete, so
  a crash, a corrupt input or a refused one never leaves a half-written file. The audio track is copied
  with ``ffmpeg`` when it is on PATH; otherwise the report says it was dropped.
"""

from .animation import (
    ANIMATION_FORMATS,
    colorize_animation,
    colorize_sequence,
    encode_animation,
    is_animation,
    is_frame_sequence,
    output_suffix,
)
from .clips import (
    AUDIO_REENCODE,
    DEFAULT_MAX_ANIMATION_PIXELS,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_MAX_FRAMES,
    FALLBACK_FPS,
    FOURCC,
    VideoError,
    VideoInfo,
    VideoReport,
    colorize_frames,
    colorize_video,
    mux_audio,
    probe_video,
    to_u8,
)
from .temporal import (
    CutDetector,
    FlowCarry,
    Link,
    TemporalOptions,
    ab_of,
    carry,
    flicker,
    l_to_u8,
    link_frames,
    scene_distance,
)

__all__ = ["ANIMATION_FORMATS", "AUDIO_REENCODE", "DEFAULT_MAX_ANIMATION_PIXELS", "DEFAULT_MAX_FRAMES",
           "DEFAULT_MAX_FRAME_PIXELS", "FALLBACK_FPS", "FOURCC", "CutDetector", "FlowCarry", "Link",
           "TemporalOptions", "VideoError", "VideoInfo", "VideoReport", "ab_of", "carry", "colorize_animation",
           "colorize_frames", "colorize_sequence", "colorize_video", "encode_animation", "flicker",
           "is_animation", "is_frame_sequence", "l_to_u8", "link_frames", "mux_audio", "output_suffix",
           "probe_video", "scene_distance", "to_u8"]
