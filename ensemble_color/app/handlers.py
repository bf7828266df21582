"""The web demo's work, callable without a server (the tests call exactly what the browser gets): settings and
limits (:class:`AppConfig`), one loaded pipeline per router (:class:`PipelineCache`), and the photo and video
handlers that turn an upload into results or a one-line error."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..color import join_l_ab, rgb_to_l
from ..composite import SUBJECT_CONTEXT_RAMP
from ..hints import Hint, HintError, save_hints
from ..io import ImageLoadError, LoadedImage, load_image, save_image, to_pil
from ..limits import DEMO_LIMITS
from ..pipeline import Pipeline
from ..routing import TORCHVISION_BACKENDS, available_routers
from ..video import FALLBACK_FPS, VideoError, colorize_video, probe_video
from ..visualize import legend, routing_overlay

log = logging.getLogger(__name__)

#: Builds a full pipeline (all installed experts) for one router name; called once per router.
PipelineFactory = Callable[[str], Pipeline]

#: Folder of bundled example photos (present in a source checkout, absent from a wheel).
EXAMPLES_DIR = Path(__file__).resolve().parent.parent.parent / "examples"
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Accepted knob ranges. Enforced in the handler too: with ``preprocess=False`` (see above) Gradio
#: does not check API callers' values against the sliders.
WORK_SIZE_RANGE = (128, 1024)
SATURATION_RANGE = (0.0, 2.0)
VIDEO_LIMIT_HINT = ": trim or downscale it, or colourise it with the command line"


@dataclass(frozen=True)
class AppConfig:
    """Server limits and defaults; every field is a command-line option of :func:`add_serve_arguments`."""

    host: str = "127.0.0.1"          #: loopback by default: exposing a demo is an explicit choice
    port: int = 7860
    max_upload_mb: float = DEMO_LIMITS.max_upload_bytes / 2**20  #: per-file upload limit (Gradio's, re-checked here)
    max_megapixels: float = DEMO_LIMITS.max_pixels / 1e6  #: decoded size limit; bounds one request's memory
    queue_size: int = 32             #: requests waiting beyond this are refused with "queue full"
    concurrency: int = 1             #: colourisations run at once (2 CPU cores: more only adds latency)
    display_max_side: int = 2048     #: long side of the images shown in the page (download is full-res)
    keep_results_s: float = 3600.0   #: downloads older than this are deleted from the temp folder
    examples_dir: Path | None = EXAMPLES_DIR
    routers: tuple[str, ...] | None = None  #: router choices; None = those usable offline
    #: Video tab: longer clips are refused (2 CPU cores colour ~8 frames/s)
    max_video_seconds: float = DEMO_LIMITS.max_video_seconds or 15.0
    #: Video tab: largest frame (720p); the CLI takes up to 4K (``limits.DEFAULT_LIMITS``)
    max_video_megapixels: float = DEMO_LIMITS.max_frame_pixels / 1e6


class PipelineCache:
    """One loaded pipeline per router name, built on first request and then shared (thread-safe)."""

    def __init__(self, factory: PipelineFactory) -> None:
        self._factory = factory
        self._pipelines: dict[str, Pipeline] = {}
        self._lock = threading.Lock()

    def get(self, router: str) -> Pipeline:
        """The pipeline for ``router``; loads it (and all expert weights) the first time."""
        with self._lock:
            if router not in self._pipelines:
                pipe = self._factory(router)
                for expert in pipe.experts.values():
                    _ = expert.model  # build now: lazy builds racing in two request threads waste memory
                self._pipelines[router] = pipe
            return self._pipelines[router]


def offline_routers(pipe: Pipeline) -> list[str]:
    """Router names that load without a network: torchvision ones only when their weights are cached."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    out = []
    for name in available_routers():
        if name == "generalist" and "generalist" not in pipe.experts:
            continue
        if name in TORCHVISION_BACKENDS:
            import torchvision.models.segmentation as seg

            weights = getattr(seg, TORCHVISION_BACKENDS[name][1]).COCO_WITH_VOC_LABELS_V1
            if not (hub / Path(weights.url).name).exists():
                continue
        out.append(name)
    return out


@dataclass
class DemoOutputs:
    """What one request shows. ``error`` set means nothing else is (the UI shows the message)."""

    before: Image.Image | None = None          #: the input's lightness as neutral gray (display size)
    after: Image.Image | None = None           #: the colourised result (display size)
    overlay: Image.Image | None = None         #: routing overlay (working size) when asked for
    legend: list[tuple[str, str]] = field(default_factory=list)  #: ("bird → birds", "#3cbe50")
    gallery: list[tuple[Image.Image, str]] = field(default_factory=list)  #: each expert alone
    download: Path | None = None               #: full-resolution PNG in the demo's temp folder
    hints_file: Path | None = None             #: the hints used, as JSON (``--hints`` loads it again)
    status: str = ""
    error: str | None = None


@dataclass
class DemoVideoOutputs:
    """What one Video-tab request shows. ``error`` set means nothing else is."""

    video: Path | None = None                  #: the colourised clip (WebM/VP8: plays in every browser)
    status: str = ""
    error: str | None = None


class DemoHandler:
    """Does one colourisation request end to end; what the Gradio event calls, testable without a server."""

    def __init__(self, pipelines: PipelineCache, config: AppConfig | None = None,
                 default_router: str = "embedded") -> None:
        self.pipelines, self.config, self.default_router = pipelines, config or AppConfig(), default_router
        self.base = pipelines.get(default_router)  # start-up load: fail before serving, not on a request
        self._tmp = tempfile.TemporaryDirectory(prefix="ensemble_color_app_")  # removed at exit / GC
        self.out_dir = Path(self._tmp.name)
        self._prune_lock = threading.Lock()  # two requests must not delete the same old folder
        # Only listed routers may be asked for: load_router also takes folder paths, and every new
        # name would add a cached pipeline.
        self.routers = list(self.config.routers or offline_routers(self.base))
        if default_router not in self.routers:
            self.routers.insert(0, default_router)

    @property
    def expert_names(self) -> list[str]:
        return list(self.base.experts)

    def __call__(self, image: str | Path | dict[str, Any] | None, work_size: float = 512,
                 saturation: float = 1.0,
                 experts: Sequence[str] | None = None, router: str | None = None, show_routing: bool = True,
                 show_experts: bool = True, main_subject: bool = True,
                 hints: Sequence[dict[str, Any]] = ()) -> DemoOutputs:
        """Colourise ``image`` (a path or Gradio's FileData dict); user errors come back in ``.error``.

        ``hints``: colours the user placed, as :meth:`Hint.to_json` dicts (photo pixel coordinates); a dict
        with a ``"route"`` key is route painting instead (that region is a person, a bird...).

        ``main_subject``: the photo is *of* one subject, so its expert also colours the background in
        proportion to the subject's area (``composite.share_context``), as it learned with its subject."""
        t0 = time.perf_counter()
        path = _payload_path(image)
        if path is None:
            return DemoOutputs(error="Upload a photo (or pick an example) first.")
        router = router or self.default_router
        chosen = list(self.expert_names if experts is None else experts)
        if problem := self._check_settings(work_size, saturation, chosen, router):
            return DemoOutputs(error=problem)
        try:
            loaded = self._load(path)
        except ImageLoadError as err:
            return DemoOutputs(error=str(err).replace(str(path), _display_name(image, path)))
        try:
            pipe = self.pipelines.get(router)
        except (ValueError, OSError, RuntimeError) as err:  # e.g. a router whose weights need a download
            log.exception("router %r failed to load", router)
            return DemoOutputs(error=f"Router {router!r} could not be loaded: {err}")
        pipe = pipe.subset(chosen).with_options(work_size=int(work_size), saturation=float(saturation),
                                                context=SUBJECT_CONTEXT_RAMP if main_subject else None)
        try:
            given = [Hint.from_json(h) for h in hints if "route" not in h]
            routes = [(Hint.from_json(h), str(h["route"])) for h in hints if "route" in h]
            result = pipe.colorize(loaded, per_expert=show_experts, hints=given, routes=routes)
        except HintError as err:
            return DemoOutputs(error=str(err))
        except Exception as err:  # logged with its traceback; the user gets a sentence
            log.exception("colourising %s failed", path)
            return DemoOutputs(error=f"{_display_name(image, path)}: could not be colourised "
                                     f"({type(err).__name__}: {err})")

        out = DemoOutputs()
        L_full = rgb_to_l(loaded.rgb[None])[0]
        out.before = self._display(join_l_ab(L_full, torch.zeros(2, *L_full.shape[-2:])))
        out.after = self._display(result.rgb)
        if show_routing:
            out.overlay = to_pil(routing_overlay(result.L_work, result.probs, result.route_classes))
            out.legend = legend(result.route_classes, pipe.served_by())
        for name, rgb in result.per_expert.items():
            routes = ", ".join(pipe.experts[name].spec.routes)
            out.gallery.append((to_pil(rgb), f"{name} (routes: {routes})"))
        out.download = self._save(to_pil(result.rgb, loaded.alpha), _display_name(image, path))
        if given:
            out.hints_file = out.download.with_name(f"{Path(_display_name(image, path)).stem or 'photo'}_hints.json")
            save_hints(out.hints_file, given, loaded.size)
        w, h = loaded.size
        note = " Only its lightness was used." if loaded.was_color else ""
        out.status = (f"{w}×{h} px, worked at {max(result.L_work.shape[-2:])} px long side with "
                      f"{', '.join(chosen)}; router {_router_label(router, pipe.router.name)}; "
                      f"{'main subject also colours the background; ' if main_subject else ''}"
                      f"{time.perf_counter() - t0:.1f} s.{note}")
        return out

    def video(self, video: str | Path | dict[str, Any] | None, work_size: float = 256, saturation: float = 1.0,
              stabilize: bool = True) -> DemoVideoOutputs:
        """Colourise a short clip (bounded by ``max_video_seconds`` / ``max_video_megapixels``) with every
        expert and the default router; user errors come back in ``.error``, nothing half-written is served."""
        t0 = time.perf_counter()
        path = _payload_path(video)
        if path is None:
            return DemoVideoOutputs(error="Upload a video first.")
        if problem := self._check_settings(work_size, saturation, self.expert_names, self.default_router):
            return DemoVideoOutputs(error=problem)
        name, cfg = _display_name(video, path), self.config
        try:
            if problem := self._too_large(path):
                raise VideoError(problem)
            max_pixels = int(cfg.max_video_megapixels * 1e6)
            info = probe_video(path)
            if info.width * info.height > max_pixels:
                raise VideoError(f"{path}: frames are {info.width}×{info.height}, over this demo's "
                                 f"{cfg.max_video_megapixels:g} MP limit{VIDEO_LIMIT_HINT}")
            if info.seconds > cfg.max_video_seconds:
                raise VideoError(f"{path}: {info.seconds:.1f} s long, over this demo's {cfg.max_video_seconds:g} s "
                                 f"limit{VIDEO_LIMIT_HINT}")
            pipe = self.base.with_options(work_size=int(work_size), saturation=float(saturation))
            dst = self._result_folder() / f"{Path(name).stem or 'video'}_colorized.webm"
            report = colorize_video(pipe, path, dst, stabilize=bool(stabilize), max_pixels=max_pixels,
                                    max_frames=math.ceil(cfg.max_video_seconds * (info.fps or FALLBACK_FPS)))
        except VideoError as err:
            return DemoVideoOutputs(error=str(err).replace(str(path), name))
        except Exception as err:  # logged with its traceback; the user gets a sentence
            log.exception("colourising video %s failed", path)
            return DemoVideoOutputs(error=f"{name}: could not be colourised ({type(err).__name__}: {err})")
        carried = (f"colour carried along motion, reset at {len(report.cuts)} scene cut(s)" if report.stabilized
                   else "each frame coloured on its own")
        notes = "".join(f" {n[0].upper()}{n[1:]}." for n in report.notes)
        return DemoVideoOutputs(video=dst, status=f"{report.width}×{report.height}, {report.frames} frames at "
                                f"{report.fps:.3g} fps; {carried}; audio {report.audio}; "
                                f"{time.perf_counter() - t0:.1f} s.{notes}")

    def _check_settings(self, work_size: float, saturation: float, chosen: list[str],
                        router: str) -> str | None:
        """A sentence saying what is wrong with the request's settings, or None."""
        if not chosen:
            return "Enable at least one expert."
        if unknown := sorted(set(chosen) - set(self.expert_names)):
            return f"Unknown expert(s): {', '.join(map(str, unknown))}."
        if router not in self.routers:
            return f"Unknown router {router!r}: choose one of {', '.join(self.routers)}."
        for label, value, (lo, hi) in (("Working resolution", work_size, WORK_SIZE_RANGE),
                                       ("Saturation", saturation, SATURATION_RANGE)):
            if not isinstance(value, int | float) or not lo <= value <= hi:
                return f"{label} must be a number from {lo:g} to {hi:g}, got {value!r}."
        return None

    def _too_large(self, path: Path) -> str | None:
        """The sentence for a file over ``max_upload_mb``, or None: repeats Gradio's check for direct
        (non-upload) callers of the photo and the video handlers."""
        mb = self.config.max_upload_mb
        if path.is_file() and path.stat().st_size > mb * 1024 * 1024:
            return f"{path}: file is {path.stat().st_size / 2**20:.1f} MB, over the {mb:g} MB limit (max_upload_mb)"
        return None

    def _load(self, path: Path) -> LoadedImage:
        """Decode with our limits (bytes first, then decoded pixels)."""
        if problem := self._too_large(path):
            raise ImageLoadError(problem)
        return load_image(path, max_pixels=int(self.config.max_megapixels * 1e6))

    def _display(self, rgb: torch.Tensor) -> Image.Image:
        """Page-size copy: browsers choke on 40 MP WebP, and the download has the full resolution."""
        im = to_pil(rgb)
        cap = self.config.display_max_side
        if max(im.size) > cap:
            im.thumbnail((cap, cap), Image.Resampling.LANCZOS)
        return im

    def _save(self, im: Image.Image, name: str) -> Path:
        """Write the full-res PNG into a fresh sub-folder (keeps the user's file name), prune old ones."""
        path = self._result_folder() / f"{Path(name).stem or 'photo'}_colorized.png"
        save_image(im, path)
        return path

    def _result_folder(self) -> Path:
        """A fresh sub-folder for one request's result (keeps the user's file name); prunes old ones."""
        self._prune()
        folder = self.out_dir / uuid.uuid4().hex
        folder.mkdir()
        return folder

    def _prune(self) -> None:
        """Delete result folders older than ``keep_results_s`` so a long-running demo doesn't fill /tmp."""
        cutoff = time.time() - self.config.keep_results_s
        with self._prune_lock:
            for folder in self.out_dir.iterdir():
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder)


def _router_label(requested: str, loaded: str) -> str:
    """'embedded' silently falls back to the all-background placeholder without weights: say so."""
    return requested if requested == loaded or loaded.endswith(requested) else f"{requested} ({loaded})"


def _payload_path(image: str | Path | dict[str, Any] | None) -> Path | None:
    """Path of an input given as a path, or as the FileData dict Gradio passes with preprocess=False."""
    if image is None:
        return None
    if isinstance(image, dict):
        return Path(image["path"]) if image.get("path") else None
    return Path(image)


def _display_name(image: str | Path | dict[str, Any] | None, path: Path) -> str:
    """The name the user knows (the uploaded file's original name), not Gradio's cache path."""
    if isinstance(image, dict) and image.get("orig_name"):
        return str(image["orig_name"])
    return path.name


