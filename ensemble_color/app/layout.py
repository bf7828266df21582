"""The web demo's page and server: the Gradio layout over :class:`~.handlers.DemoHandler`, launch options
(loopback by default, upload limit) and the ``serve`` command."""

from __future__ import annotations

import argparse
import html
import math
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..hints import Hint
from ..options import LoadOptions
from ..pipeline import Pipeline
from ..threads import configure_threads
from .handlers import (
    EXAMPLE_SUFFIXES,
    SATURATION_RANGE,
    WORK_SIZE_RANGE,
    AppConfig,
    DemoHandler,
    PipelineCache,
    PipelineFactory,
)

if TYPE_CHECKING:
    import gradio as gr

def legend_html(items: list[tuple[str, str]]) -> str:
    """Colour swatches naming the expert behind each route class (escaped: labels come from plugins)."""
    if not items:
        return ""
    rows = "".join(
        f'<span style="display:inline-flex;align-items:center;margin:2px 12px 2px 0">'
        f'<span style="width:14px;height:14px;border-radius:3px;background:{color};margin-right:6px;'
        f'display:inline-block"></span>{html.escape(label)}</span>'
        for label, color in items)
    return f'<div class="routing-legend"><b>Routing</b> (colour → expert): {rows}</div>'


def example_files(folder: Path | None) -> list[str]:
    """Bundled example photos, sorted; empty when the folder is absent (installed without examples)."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def build_demo(pipeline_factory: PipelineFactory, default_router: str = "embedded",
               config: AppConfig | None = None) -> gr.Blocks:
    """Load the default pipeline now and lay out the page; returns a queued ``gr.Blocks``.

    ``pipeline_factory(router_name)`` builds a pipeline with every installed expert; it is called
    once here and once per other router a user picks.
    """
    import gradio as gr  # optional dependency ([app] extra): only the web front end needs it

    config = config or AppConfig()
    handler = DemoHandler(PipelineCache(pipeline_factory), config, default_router)
    experts = handler.expert_names

    def run(image, work_size, saturation, chosen, router, show_routing, show_experts, main_subject=True,
            hints=()):
        """Plain values only (no ``gr.update``), so API clients get files, not update dicts."""
        out = handler(image, work_size, saturation, chosen, router, show_routing, show_experts, main_subject,
                      hints or ())
        if out.error:
            gr.Warning(out.error)
            return None, None, "", [], None, f"⚠️ {out.error}", None
        return ((out.before, out.after), out.overlay, legend_html(out.legend), out.gallery, str(out.download),
                out.status, str(out.hints_file) if out.hints_file else None)

    def run_on_change(image, *settings):
        if image is None:
            return None, None, "", [], None, "", None
        return run(image, *settings)

    def on_click(hints, picked, mode, color, radius, keep_here, brush, download, evt: gr.SelectData):
        """A click on the photo (photo pixel coordinates), as ``mode`` says (:func:`edit_hints`). A new hint takes
        the picker's colour, or with "keep" the colour the result has there now, for the user to adjust from;
        with a route brush it paints that route class instead (a disc of the hint radius). Only a change of
        the hints recolours the photo."""
        x, y = (float(v) for v in evt.index)
        if keep_here and download and mode == CLICK_ADDS:
            color = colour_at(download, x, y)
        new = Hint(((x, y),), _hex(color), float(radius)).to_json()
        if brush != COLOUR_BRUSH:
            new["route"] = brush
        edited, picked, note = edit_hints(hints, mode, x, y, picked, new)
        return edited, picked, edited, note, hints

    on_click.__annotations__["evt"] = gr.SelectData  # resolvable by Gradio (annotations are strings here)

    def recolour_if_changed(before, *args):
        return run_on_change(*args) if args[-1] != before else (gr.skip(),) * 7

    def toggle_routing(show: bool):
        return gr.update(visible=show), gr.update(visible=show)

    with gr.Blocks(title="ensemble_color: routed photo colouriser", analytics_enabled=False,
                   delete_cache=(1800, 3600)) as demo:
        gr.Markdown("## ensemble_color: routed photo colouriser\n"
                    "A router decides which expert colours each region (people, birds, animals, scenery); "
                    "their predictions are blended and joined with your photo's original lightness.")
        with gr.Tab("Photo", id="photo"):
            with gr.Row():
                with gr.Column(scale=2):
                    image = gr.Image(type="filepath", label="Photo (black-and-white or colour)",
                                     sources=["upload", "clipboard"], height=340, elem_id="input-image")
                    if examples := example_files(config.examples_dir):
                        gr.Examples(examples=examples, inputs=[image], label="Example photos",
                                    cache_examples=False, examples_per_page=8)
                    run_btn = gr.Button("Colourise", variant="primary", elem_id="run")
                    hints_state, picked_state, hints_before = gr.State([]), gr.State(None), gr.State([])
                    with gr.Accordion("Colour hints: click the photo where you know the colour", open=True):
                        with gr.Row():
                            hint_color = gr.ColorPicker("#1f3a93", label="Hint colour", elem_id="hint-color")
                            hint_radius = gr.Slider(1, 40, value=6, step=1, label="Hint radius (px)")
                        keep_here = gr.Checkbox(False, label="Use the colour the result has there now",
                                                elem_id="hint-keep")
                        brush = gr.Radio([COLOUR_BRUSH, *handler.base.router.route_classes], value=COLOUR_BRUSH,
                                         label="A click paints", elem_id="hint-brush",
                                         info="a colour, or which expert colours that region (route painting)")
                        click_mode = gr.Radio([CLICK_ADDS, CLICK_MOVES, CLICK_DELETES], value=CLICK_ADDS,
                                              label="A click on the photo", elem_id="hint-mode")
                        hint_note = gr.Markdown(elem_id="hint-note")
                        hints_view = gr.JSON(label="Hints (photo pixels)", elem_id="hints")
                        with gr.Row():
                            undo_btn = gr.Button("Undo last hint", elem_id="hint-undo")
                            clear_btn = gr.Button("Clear hints", elem_id="hint-clear")
                        hints_file = gr.File(label="Download: hints file (--hints loads it)", interactive=False,
                                             elem_id="hints-file")
                    with gr.Accordion("Settings", open=True):
                        work_size = gr.Slider(*WORK_SIZE_RANGE, value=handler.base.options.work_size, step=32,
                                              label="Working resolution (long side, px)",
                                              info="Higher: finer colour detail, slower.")
                        saturation = gr.Slider(*SATURATION_RANGE, value=handler.base.options.saturation,
                                               step=0.05,
                                               label="Saturation")
                        chosen = gr.CheckboxGroup(experts, value=experts, label="Enabled experts",
                                                  info="Disabled experts' regions go to the fallback expert.")
                        main_subject = gr.Checkbox(True, label="One main subject",
                                                   info="A photo of one bird, animal or person: its expert also "
                                                        "colours the background, as it learned with its subject.")
                        router = gr.Dropdown(handler.routers, value=default_router, label="Router")
                        show_routing = gr.Checkbox(True, label="Show routing")
                        show_experts = gr.Checkbox(True, label="Show each expert's own colourisation")
                with gr.Column(scale=3):
                    slider = gr.ImageSlider(label="Before / after (drag the handle)", type="pil", format="png",
                                            elem_id="result", max_height=640)
                    status = gr.Markdown(elem_id="status")
                    download = gr.File(label="Download: full-resolution PNG", interactive=False,
                                       elem_id="download")
            with gr.Row(equal_height=False):
                with gr.Column(scale=2):
                    overlay = gr.Image(label="Routing: which expert coloured where", type="pil", format="png",
                                       interactive=False, height=360, elem_id="overlay")
                    legend_box = gr.HTML(elem_id="legend")
                with gr.Column(scale=3):
                    gallery = gr.Gallery(label="Each expert alone (whole image)", columns=3, height=360,
                                         object_fit="contain", elem_id="gallery", format="png")
        with gr.Tab("Video", id="video"):
            _video_tab(gr, handler)

        inputs = [image, work_size, saturation, chosen, router, show_routing, show_experts, main_subject, hints_state]
        outputs = [slider, overlay, legend_box, gallery, download, status, hints_file]
        image.select(
            on_click, [hints_state, picked_state, click_mode, hint_color, hint_radius, keep_here, brush, download],
            [hints_state, picked_state, hints_view, hint_note, hints_before], api_visibility="private").then(
            recolour_if_changed, [hints_before, *inputs], outputs, preprocess=False, trigger_mode="always_last",
            api_visibility="private")
        for button, edit in ((undo_btn, lambda h: h[:-1]), (clear_btn, lambda h: [])):
            button.click(lambda h, edit=edit: (edit(h), edit(h)), hints_state, [hints_state, hints_view],
                         api_visibility="private").then(run_on_change, inputs, outputs, preprocess=False,
                                                        trigger_mode="always_last", api_visibility="private")
        run_btn.click(run, inputs, outputs, api_name="colorize", preprocess=False, trigger_mode="always_last")
        # Uploading or picking an example colourises at once; clearing the photo just clears the results.
        image.change(run_on_change, inputs, outputs, preprocess=False, trigger_mode="always_last",
                     api_visibility="private")
        show_routing.change(toggle_routing, show_routing, [overlay, legend_box], queue=False,
                            api_visibility="private")
    demo.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency)
    return demo


COLOUR_BRUSH = "colour"
#: what a click on the photo does: place a hint, or pick the nearest hint and then put it where the next click
#: is (a drag in two clicks: Gradio's image reports clicks, not drags), or delete the nearest hint
CLICK_ADDS, CLICK_MOVES, CLICK_DELETES = "adds a hint", "moves a hint (click it, then its new place)", \
    "deletes the nearest hint"
#: a click farther than this (photo pixels, beyond the hint's radius) from every hint picks none
PICK_REACH = 24.0


def nearest_hint(hints: list[dict], x: float, y: float, reach: float = PICK_REACH) -> int | None:
    """Index of the hint whose points come closest to (x, y), if within its radius + ``reach``."""
    best, best_d = None, math.inf
    for i, h in enumerate(hints):
        d = min(math.hypot(px - x, py - y) for px, py in h["points"])
        if d <= h.get("radius", 0) + reach and d < best_d:
            best, best_d = i, d
    return best


def edit_hints(hints: list[dict], mode: str, x: float, y: float, picked: int | None, new: dict
               ) -> tuple[list[dict], int | None, str]:
    """One click on the photo in ``mode``: (the hints now, the hint picked for a move, what happened).

    Adds ``new``; or deletes the nearest hint; or, moving, picks the nearest hint on one click and moves it
    (every point shifted by the same offset: a stroke keeps its shape) to the next click."""
    if mode == CLICK_ADDS:
        return [*hints, new], None, f"hint {len(hints) + 1} placed"
    if mode == CLICK_MOVES and picked is not None and picked < len(hints):
        h = hints[picked]
        ox, oy = x - h["points"][0][0], y - h["points"][0][1]
        moved = {**h, "points": [[px + ox, py + oy] for px, py in h["points"]]}
        return [*hints[:picked], moved, *hints[picked + 1:]], None, f"hint {picked + 1} moved"
    i = nearest_hint(hints, x, y)
    if i is None:
        return hints, None, "no hint there"
    if mode == CLICK_DELETES:
        return [*hints[:i], *hints[i + 1:]], None, f"hint {i + 1} deleted"
    return hints, i, f"hint {i + 1} picked: click where it goes"


def _hex(color: str) -> str:
    """Gradio's colour picker value ("#rrggbb", or "rgba(r, g, b, a)" in some versions) as "#rrggbb"."""
    if color.startswith("rgb"):
        r, g, b = (round(float(v)) for v in color[color.index("(") + 1:color.index(")")].split(",")[:3])
        return f"#{r:02x}{g:02x}{b:02x}"
    return color.lower()


def colour_at(image: str | Path | dict, x: float, y: float) -> str:
    """The colour of the full-resolution result at photo pixel (x, y), as "#rrggbb"."""
    path = image.get("path") if isinstance(image, dict) else image
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        r, g, b = rgb.getpixel((min(int(x), rgb.width - 1), min(int(y), rgb.height - 1)))
    return f"#{r:02x}{g:02x}{b:02x}"


def _video_tab(gr: Any, handler: DemoHandler) -> None:
    """The Video tab's components and event (inside the caller's ``gr.Tab``): upload, settings, result."""
    cfg = handler.config

    def run_video(video, work_size, saturation, stabilize):
        out = handler.video(video, work_size, saturation, stabilize)
        if out.error:
            gr.Warning(out.error)
            return None, f"⚠️ {out.error}"
        return str(out.video), out.status

    gr.Markdown(f"Clips up to {cfg.max_video_seconds:g} s and {cfg.max_video_megapixels:g} MP per frame "
                f"(longer films: `python -m ensemble_color film.mp4 -o out/`). Colour is carried along the "
                f"motion between frames, so it does not flicker, and starts afresh at scene cuts.")
    with gr.Row():
        with gr.Column(scale=2):
            video_in = gr.Video(label="Film (black-and-white or colour)", sources=["upload"], height=300,
                                elem_id="input-video")
            run_btn = gr.Button("Colourise video", variant="primary", elem_id="run-video")
            work_size = gr.Slider(*WORK_SIZE_RANGE, value=handler.base.options.work_size, step=32,
                                  label="Working resolution (long side, px)", info="Higher: finer, slower.")
            saturation = gr.Slider(*SATURATION_RANGE, value=handler.base.options.saturation, step=0.05,
                                   label="Saturation")
            stabilize = gr.Checkbox(True, label="Temporally stable",
                                    info="Off: every frame coloured on its own (flickers).")
        with gr.Column(scale=3):
            video_out = gr.Video(label="Colourised (WebM)", interactive=False, elem_id="result-video")
            status = gr.Markdown(elem_id="video-status")
    run_btn.click(run_video, [video_in, work_size, saturation, stabilize], [video_out, status],
                  api_name="colorize_video", preprocess=False, trigger_mode="always_last")


def launch_options(config: AppConfig) -> dict[str, Any]:
    """Keyword arguments for ``demo.launch``: loopback by default, upload limit, no sharing, no SSR."""
    return {"server_name": config.host, "server_port": config.port, "max_file_size": int(config.max_upload_mb
            * 1024 * 1024), "share": False, "show_error": True, "ssr_mode": False, "inbrowser": False}


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``python app.py`` and ``python -m ensemble_color serve``."""
    d = AppConfig()
    parser.add_argument("--host", default=d.host, help=f"interface to listen on (default {d.host}: this "
                        "machine only; 0.0.0.0 exposes the demo to your network)")
    parser.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    parser.add_argument("--router", default="embedded", help="default router (others load on demand)")
    parser.add_argument("--experts", action="append", default=[], metavar="DIR",
                        help="extra expert plugin folder (repeatable), after the shipped experts/")
    parser.add_argument("--no-shipped", action="store_true", help="ignore the shipped experts/ folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda …")
    parser.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="per-file upload limit")
    parser.add_argument("--max-megapixels", type=float, default=d.max_megapixels,
                        help="largest image accepted, in megapixels")
    parser.add_argument("--queue-size", type=int, default=d.queue_size,
                        help="waiting requests before refusing")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, help="colourisations run at once")
    parser.add_argument("--max-video-seconds", type=float, default=d.max_video_seconds,
                        help="longest clip the Video tab accepts")
    parser.add_argument("--max-video-megapixels", type=float, default=d.max_video_megapixels,
                        help="largest video frame the Video tab accepts, in megapixels")
    return parser


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """The :class:`AppConfig` described by parsed :func:`add_serve_arguments` options."""
    return AppConfig(host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
                     max_megapixels=args.max_megapixels, queue_size=args.queue_size,
                     concurrency=args.concurrency, max_video_seconds=args.max_video_seconds,
                     max_video_megapixels=args.max_video_megapixels)


def _exit_on_sigterm() -> None:
    """Turn SIGTERM (docker stop, systemd, kill) into ``SystemExit``.

    Why: Python's default SIGTERM action ends the process without finalisers, so the demo's temp
    folder of results would be left behind; as an exception, the interpreter exits normally and
    removes it. Only the main thread may install handlers; elsewhere (tests) this does nothing.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def serve(args: argparse.Namespace) -> int:
    """Load the pipeline, build the page and serve until interrupted (blocks)."""
    config = config_from_args(args)
    _exit_on_sigterm()
    load = LoadOptions(experts_dirs=tuple(args.experts), device=args.device, use_shipped=not args.no_shipped,
                       threads=configure_threads(None))  # the cores free of other work, at start-up

    def factory(router: str) -> Pipeline:
        return Pipeline.load(load=replace(load, router=router))

    try:
        demo = build_demo(factory, default_router=args.router, config=config)
    except ValueError as err:  # no experts installed, unknown router …: a sentence, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo.launch(**launch_options(config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python app.py``: parse :func:`add_serve_arguments` options and :func:`serve`."""
    parser = add_serve_arguments(argparse.ArgumentParser(
        prog="app.py", description="Web demo of the ensemble_color photo colouriser (Gradio)."))
    return serve(parser.parse_args(argv))
