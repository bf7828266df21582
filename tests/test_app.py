"""The web demo: the handler without a server, the served app over loopback, and a real browser.

Tiny random experts keep this fast and independent of the trained weights; what is checked is the
plumbing (sizes, errors, files, the HTTP API and the page), not colour quality.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_color.app import (
    AppConfig,
    DemoHandler,
    PipelineCache,
    add_serve_arguments,
    build_demo,
    example_files,
    launch_options,
    legend_html,
)
from ensemble_color.app.layout import CLICK_ADDS, CLICK_DELETES, CLICK_MOVES, edit_hints
from ensemble_color.nets import create_model, tiny_config
from ensemble_color.pipeline import Pipeline
from ensemble_color.plugins import export_expert

# Gradio's queue triggers pandas deprecation warnings that are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def experts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny random experts (a background one and a bird specialist) exported as plugins."""
    root = tmp_path_factory.mktemp("experts")
    arch = "resnet18-deconv"
    for name, routes in (("scenes", ["background"]), ("birds", ["bird"])):
        model = create_model(arch, **tiny_config(arch))
        export_expert(model, root / name, {"name": name, "architecture": arch, "config": tiny_config(arch),
                                           "routes": routes, "version": "0"})
    return root


def make_factory(experts_dir: Path):
    """Pipeline factory over the tiny experts only (the shipped ones may be training right now).

    Router "broken" fails to load, as a router whose weights need a download does offline.
    """
    def factory(router: str) -> Pipeline:
        if router == "broken":
            raise OSError("weights not cached and no network")
        return Pipeline.load(experts_dirs=[experts_dir], use_shipped=False, router=router, device="cpu")
    return factory


@pytest.fixture(scope="module")
def handler(experts_dir: Path) -> DemoHandler:
    return DemoHandler(PipelineCache(make_factory(experts_dir)),
                       AppConfig(max_megapixels=1.0, routers=("background", "broken")),
                       default_router="background")


@pytest.fixture
def gray_photo(tmp_path: Path) -> Path:
    """A 100×70 grayscale gradient with a bright square: odd sizes catch off-by-one resizing."""
    y, x = np.mgrid[0:70, 0:100]
    arr = ((x * 2 + y) % 256).astype(np.uint8)
    arr[20:40, 30:60] = 230
    path = tmp_path / "old photo.png"
    Image.fromarray(arr, mode="L").save(path)
    return path


def test_handler_returns_images_of_the_input_size(handler: DemoHandler, gray_photo: Path) -> None:
    out = handler(str(gray_photo), work_size=128, saturation=1.0)
    assert out.error is None, out.error
    assert out.before is not None and out.after is not None
    assert out.before.size == out.after.size == (100, 70)
    assert out.download is not None and out.download.name == "old photo_colorized.png"
    assert out.download.is_relative_to(handler.out_dir)  # a temp folder, never the working directory
    with Image.open(out.download) as im:
        assert im.size == (100, 70)
    assert out.overlay is not None and out.overlay.size == (100, 70)  # working size: never upscaled
    assert sorted(caption.split(" ")[0] for _, caption in out.gallery) == ["birds", "scenes"]
    assert [label for label, _ in out.legend] == ["background → scenes"]  # the one class this router has
    assert "100×70" in out.status


def test_handler_options(handler: DemoHandler, gray_photo: Path) -> None:
    out = handler(str(gray_photo), work_size=128, saturation=0.0, experts=["scenes"], show_routing=False,
                  show_experts=False)
    assert out.error is None, out.error
    rgb = np.asarray(out.after, dtype=np.int16)
    assert np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max() <= 2  # saturation 0 -> gray
    assert out.overlay is None and out.legend == [] and out.gallery == []


def test_handler_main_subject_switches_context_sharing_on(handler: DemoHandler, gray_photo: Path,
                                                          contexts_used: list) -> None:
    from ensemble_color.composite import SUBJECT_CONTEXT_RAMP

    plain = handler(str(gray_photo), work_size=128, main_subject=False)
    subject = handler(str(gray_photo), work_size=128)  # the box is ticked by default (docs/tuning.md)
    assert plain.error is None and subject.error is None
    assert contexts_used == [None, SUBJECT_CONTEXT_RAMP]
    assert "main subject" in subject.status and "main subject" not in plain.status


def test_handler_reports_bad_inputs_readably_and_keeps_working(handler: DemoHandler, gray_photo: Path,
                                                               tmp_path: Path) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a picture\n")
    truncated = tmp_path / "broken.jpg"
    Image.open(gray_photo).convert("RGB").save(tmp_path / "whole.jpg", quality=90)
    truncated.write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])
    huge = tmp_path / "huge.png"
    Image.new("L", (1200, 1000), 128).save(huge)  # 1.2 MP, over this handler's 1 MP limit

    cases = {not_image: "not an image", truncated: "broken.jpg", huge: "limit"}
    for path, expected in cases.items():
        out = handler(str(path))
        assert out.error is not None and expected in out.error, (path, out.error)
        assert "\n" not in out.error and out.after is None
    # Gradio's FileData payload: the message names the user's file, not the server's cache path.
    cached = {"path": str(not_image), "orig_name": "holiday.jpg"}
    message = handler(cached).error
    assert message is not None and "holiday.jpg" in message and str(tmp_path) not in message
    assert "Upload a photo" in (handler(None).error or "")
    assert "at least one expert" in (handler(str(gray_photo), experts=[]).error or "")
    assert "Unknown expert" in (handler(str(gray_photo), experts=["nope"]).error or "")
    assert "could not be loaded" in (handler(str(gray_photo), router="broken").error or "")
    assert "Unknown router" in (handler(str(gray_photo), router="/etc").error or "")  # no folder paths
    assert "from 128 to 1024" in (handler(str(gray_photo), work_size=100_000).error or "")
    assert "Saturation" in (handler(str(gray_photo), saturation="lots").error or "")  # type: ignore[arg-type]
    assert handler(str(gray_photo), work_size=128).error is None  # still serving


def test_huge_image_is_refused_before_decoding(handler: DemoHandler, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import PngImagePlugin

    bomb = tmp_path / "bomb.png"
    Image.new("L", (2000, 1000), 0).save(bomb)  # 2 MP in a few KB: a small upload, a big decode

    def no_decoding(self):
        raise AssertionError("pixels decoded before the size check")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    out = handler(str(bomb))
    assert out.error is not None and "2.0 MP, over the 1.0 MP limit (max_pixels)" in out.error


def test_a_file_over_the_upload_limit_is_refused_by_the_photo_and_the_video_handler(experts_dir: Path,
                                                                                     tmp_path: Path) -> None:
    h = DemoHandler(PipelineCache(make_factory(experts_dir)), AppConfig(max_upload_mb=0.01),
                    default_router="background")
    photo, clip = tmp_path / "big.png", tmp_path / "big.mp4"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 80), dtype=np.uint8)).save(photo)  # ~6 KB
    clip.write_bytes(b"\0" * 20_000)  # never probed: refused on its size first
    small = h(str(photo))
    assert small.error is None, small.error
    h.config = AppConfig(max_upload_mb=0.001)
    for out in (h(str(photo)), h.video(str(clip))):
        assert out.error is not None and "MB limit (max_upload_mb)" in out.error and str(tmp_path) not in out.error


def test_display_copy_is_capped_but_download_is_full_resolution(experts_dir: Path, tmp_path: Path) -> None:
    h = DemoHandler(PipelineCache(make_factory(experts_dir)), AppConfig(display_max_side=48),
                    default_router="background")
    path = tmp_path / "wide.png"
    Image.new("RGB", (160, 90), (90, 120, 150)).save(path)
    out = h(str(path), work_size=128, show_experts=False)
    assert out.after is not None and out.after.size == (48, 27)
    assert out.download is not None
    with Image.open(out.download) as im:
        assert im.size == (160, 90)


def test_legend_html_escapes_plugin_labels() -> None:
    page = legend_html([("<b>x</b> → y", "#010203")])
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "#010203" in page


def test_demo_queue_is_bounded(experts_dir: Path) -> None:
    demo = build_demo(make_factory(experts_dir), default_router="background",
                      config=AppConfig(queue_size=5, concurrency=2))
    assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 2  # no public getter
    public = [fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"]
    assert sorted(public) == ["colorize", "colorize_video"]  # the Video tab has its own endpoint


def test_serve_arguments_default_to_loopback() -> None:
    args = add_serve_arguments(argparse.ArgumentParser()).parse_args([])
    assert args.host == "127.0.0.1" and args.port == 7860
    assert launch_options(AppConfig())["server_name"] == "127.0.0.1"


def test_bundled_examples_are_small_and_documented() -> None:
    files = example_files(AppConfig().examples_dir)
    assert 3 <= len(files) <= 8  # one page of gr.Examples (examples_per_page=8)
    readme = (Path(files[0]).parent / "README.md").read_text()
    for f in map(Path, files):
        assert f.stat().st_size <= 200_000 and f.name in readme
        with Image.open(f) as im:
            assert max(im.size) <= 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_stopped_with_sigterm_removes_its_temp_folder(experts_dir: Path, tmp_path: Path) -> None:
    """docker stop / systemd / kill send SIGTERM, which by default ends Python without finalisers."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    proc = subprocess.Popen([sys.executable, "-m", "ensemble_color", "serve", "--port", str(port), "--no-shipped",
                             "--experts", str(experts_dir), "--router", "background", "--device", "cpu"],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.5)
        assert list(tmp.glob("ensemble_color_app_*")), "the demo should keep its outputs in a temp folder"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list(tmp.glob("ensemble_color_app_*"))


@pytest.fixture(scope="module")
def served(experts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The demo on a free loopback port, started from an empty working directory (checked after)."""
    cwd = tmp_path_factory.mktemp("cwd")
    old = Path.cwd()
    os.chdir(cwd)
    demo = None
    try:
        config = AppConfig(port=free_port(), max_upload_mb=2)
        demo = build_demo(make_factory(experts_dir), default_router="background", config=config)
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(config))
        yield f"http://127.0.0.1:{config.port}/", cwd
    finally:
        if demo is not None:
            demo.close()
        os.chdir(old)


def test_served_app_answers_gradio_client(served: tuple[str, Path], gray_photo: Path, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    url, cwd = served
    client = Client(url, verbose=False, download_files=str(tmp_path / "dl"))
    before_after, overlay, legend, gallery, download, status, hints_file = client.predict(
        handle_file(str(gray_photo)), 128, 1.2, ["scenes", "birds"], "background", True, True,
        api_name="/colorize")
    with Image.open(before_after[1]) as after:
        assert after.size == (100, 70) and after.mode == "RGB"
    with Image.open(download) as full:
        assert full.size == (100, 70)
    assert overlay is not None and "scenes" in legend and len(gallery) == 2 and "100×70" in status
    assert hints_file is None  # no hints placed, no hints file

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing useful")
    *_, status, _ = client.predict(handle_file(str(bad)), 128, 1.0, ["scenes"], "background", False, False,
                                api_name="/colorize")
    assert "bad.png" in status and ("not an image" in status or "corrupt" in status)
    *_, status, _ = client.predict(handle_file(str(gray_photo)), 128, 1.0, ["scenes"], "background", False,
                                False, api_name="/colorize")
    assert "100×70" in status  # the server kept serving

    # Over the 2 MB upload limit: refused by the server itself (not only by polite clients).
    import httpx

    payload = {"files": ("big.png", b"\0" * (3 * 2**20))}
    reply = httpx.post(f"{url}gradio_api/upload", files=payload, timeout=30)
    assert reply.status_code == 413 and "maximum" in reply.text
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (3 * 2**20))
    with pytest.raises(ValueError, match="maximum file size"):
        client.predict(handle_file(str(big)), 128, 1.0, None, None, False, False, api_name="/colorize")
    *_, status, _ = client.predict(handle_file(str(gray_photo)), 128, 1.0, None, None, False, False,
                                api_name="/colorize")
    assert "100×70" in status
    assert list(cwd.iterdir()) == []  # nothing written to the working directory


def _playwright():
    """Playwright's sync API, or a skip with the reason (never lets Playwright fetch a browser)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} absent: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright absent: pip install playwright (no `playwright install` needed)")
    return sync_playwright


@contextmanager
def _page(height: int) -> Iterator[Any]:
    """A page of Debian's Chromium driven by Playwright (skipped, with the reason, when either is absent)."""
    sync_playwright = _playwright()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": height})
        finally:
            browser.close()


def _keep_screenshot(shot: Path, name: str) -> None:
    """Copy a test's screenshot to ``$ENSEMBLE_COLOR_SCREENSHOT_DIR`` when set (for the docs)."""
    if out_dir := os.environ.get("ENSEMBLE_COLOR_SCREENSHOT_DIR"):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out_dir) / name)


@pytest.mark.browser
def test_browser_upload_shows_the_colourised_result(served: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = served
    photo = example_files(AppConfig().examples_dir)[0]
    junk = tmp_path / "scan.jpg"
    junk.write_text("not really a jpeg")
    shot = tmp_path / "app.png"
    with _page(1300) as page:
        page.goto(url, wait_until="domcontentloaded")
        upload = page.locator("#input-image input[type=file]")
        # A broken file first: the page must say why, and then still work.
        upload.set_input_files(str(junk))
        page.locator("#status").get_by_text("scan.jpg").wait_for(timeout=60_000)
        assert "not an image" in page.locator("#status").inner_text()
        page.locator("#input-image button[aria-label='Remove Image']").first.click()
        upload.set_input_files(photo)
        page.locator("#status").get_by_text("worked at").wait_for(timeout=120_000)
        result = page.locator("#result img").first
        result.wait_for(state="visible", timeout=30_000)
        page.locator("#gallery img").first.wait_for(state="visible", timeout=30_000)
        page.locator("#overlay img").first.wait_for(state="visible", timeout=30_000)
        page.screenshot(path=str(shot), full_page=True)
        width = result.evaluate("img => img.naturalWidth")
        status = page.locator("#status").inner_text()
        # Picking a bundled example colourises it straight away.
        page.locator("img[src*='chelsea_gray']").first.click()
        page.locator("#status").get_by_text("451×300").wait_for(timeout=120_000)
    with Image.open(photo) as im:
        assert f"{im.width}×{im.height}" in status
    assert width > 0 and shot.stat().st_size > 10_000
    _keep_screenshot(shot, "app_browser_test.png")


@pytest.mark.browser
def test_browser_hint_click_colours_the_photo_there(served: tuple[str, Path], tmp_path: Path) -> None:
    """Click on the photo with a colour chosen: the full-resolution download has that colour at that point."""
    from ensemble_color.color import rgb_to_lab
    from ensemble_color.hints import load_hints

    url, _ = served
    photo = example_files(AppConfig().examples_dir)[0]
    shot = tmp_path / "hints.png"
    with _page(1500) as page:
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#input-image input[type=file]").set_input_files(photo)
        page.locator("#status").get_by_text("worked at").wait_for(timeout=120_000)
        page.locator("#hint-color button").first.click()  # the picker's dialog: hex field, then close it
        hex_field = page.locator("#hint-color input[type=text]").first
        hex_field.fill("#b0302a")
        hex_field.press("Enter")
        page.keyboard.press("Escape")
        img = page.locator("#input-image img").first
        box = img.bounding_box()
        assert box is not None
        img.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.6})
        link = page.locator("#hints-file a").first
        link.wait_for(state="attached", timeout=120_000)
        page.screenshot(path=str(shot), full_page=True)
        with page.expect_download() as hints_dl:
            link.click()
        hints_path = tmp_path / "hints.json"
        hints_dl.value.save_as(hints_path)
        with page.expect_download() as result_dl:
            page.locator("#download a").first.click()
        result_path = tmp_path / "result.png"
        result_dl.value.save_as(result_path)
        # Move the hint (click it, then its new place), then delete it: the hints file goes with the last hint.
        page.locator("#hint-mode").get_by_text(CLICK_MOVES).click()
        img.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.6})
        page.locator("#hint-note").get_by_text("picked").wait_for(timeout=30_000)
        img.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.3})
        page.locator("#hint-note").get_by_text("moved").wait_for(timeout=30_000)
        moved = page.locator("#hints").inner_text()
        page.locator("#hint-mode").get_by_text(CLICK_DELETES).click()
        img.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.3})
        page.locator("#hint-note").get_by_text("deleted").wait_for(timeout=30_000)
        page.locator("#hints-file a").wait_for(state="detached", timeout=120_000)
    (hint,) = load_hints(hints_path)
    assert hint.color == "#b0302a"
    x, y = hint.points[0]
    with Image.open(result_path) as im:
        r, g, b = im.convert("RGB").getpixel((int(x), int(y)))
    got = rgb_to_lab(torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1) / 255)[0, 1:, 0, 0]
    assert (got - torch.tensor(hint.ab())).norm() < 3.0
    assert "b0302a" in moved and f"{x:.1f}" not in moved  # the same hint, elsewhere
    _keep_screenshot(shot, "app_hints_browser_test.png")


def test_clicks_add_pick_move_and_delete_hints() -> None:
    def hint(x: float, y: float, colour: str = "#112233") -> dict:
        return {"points": [[x, y]], "color": colour, "radius": 4.0}

    hints, picked, _ = edit_hints([], CLICK_ADDS, 10, 10, None, hint(10, 10))
    hints, picked, _ = edit_hints(hints, CLICK_ADDS, 200, 50, None, hint(200, 50, "#aa0000"))
    assert [h["color"] for h in hints] == ["#112233", "#aa0000"] and picked is None
    same, picked, note = edit_hints(hints, CLICK_MOVES, 195, 52, None, hint(195, 52))
    assert same == hints and picked == 1 and "picked" in note  # the first click of a move picks, changes nothing
    hints, picked, note = edit_hints(hints, CLICK_MOVES, 80, 90, picked, hint(80, 90))
    assert hints[1] == {"points": [[80.0, 90.0]], "color": "#aa0000", "radius": 4.0} and picked is None
    assert edit_hints(hints, CLICK_DELETES, 400, 400, None, hint(0, 0))[:2] == (hints, None)  # nothing near
    hints, _, note = edit_hints(hints, CLICK_DELETES, 12, 9, None, hint(12, 9))
    assert [h["color"] for h in hints] == ["#aa0000"] and "deleted" in note
    stroke = [{"points": [[0, 0], [10, 0]], "color": "#00ff00", "radius": 2.0}]
    _, picked, _ = edit_hints(stroke, CLICK_MOVES, 10, 1, None, hint(0, 0))
    moved, _, _ = edit_hints(stroke, CLICK_MOVES, 5, 5, picked, hint(0, 0))
    assert moved[0]["points"] == [[5, 5], [15, 5]]  # a stroke keeps its shape
