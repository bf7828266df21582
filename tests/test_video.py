"""Video colourisation: file plumbing (CLI, atomic writes, audio, bad inputs), temporal stability on a
clip whose true colours are known, animated GIFs, tiny images and the web demo's Video tab.

The clip is made here with cv2 from two bundled colour photos (tests/data): a slow pan across one,
then a cut to the other, written as a gray MPEG-4 video. Stability is measured with the shipped
models (random tiny experts barely flicker, so they could not show a difference); plumbing uses tiny
random experts.
"""

from __future__ import annotations

import itertools
import os
import stat
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_expert
from PIL import Image

from ensemble_color.cli import main
from ensemble_color.color import rgb_to_l
from ensemble_color.pipeline import Pipeline
from ensemble_color.video import (
    CutDetector,
    FlowCarry,
    TemporalOptions,
    VideoError,
    ab_of,
    colorize_frames,
    colorize_video,
    flicker,
    l_to_u8,
    scene_distance,
)

DATA = Path(__file__).resolve().parent / "data"
W, H, FPS = 96, 64, 12.0
PAN, AFTER_CUT = 10, 4  # frames panning across the coffee photo, then frames of the cat


def _photo(name: str) -> np.ndarray:
    """A bundled colour photo as RGB uint8, scaled to twice the clip's width (room to pan)."""
    bgr = cv2.imread(str(DATA / name))
    h = round(bgr.shape[0] * 2 * W / bgr.shape[1])
    return cv2.cvtColor(cv2.resize(bgr, (2 * W, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def _color_frames() -> list[np.ndarray]:
    """Ground truth: a 2 px/frame pan across one photo, then a cut to another (also panning)."""
    a, b = _photo("coffee.jpg"), _photo("chelsea.jpg")
    frames = [a[10:10 + H, 20 + 2 * i:20 + 2 * i + W] for i in range(PAN)]
    frames += [b[20 + i:20 + i + H, 30 + 2 * i:30 + 2 * i + W] for i in range(AFTER_CUT)]
    return [np.ascontiguousarray(f) for f in frames]


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS, fourcc: str = "mp4v") -> Path:
    """RGB frames -> a video file (what a user would give us)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames (RGB uint8) and the fps of a video file."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps, frames = cap.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames, fps


def lightness(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """L (1, H, W) of an RGB uint8 frame or a (3, H, W) float result."""
    t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    return rgb_to_l(t[None].float())[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """The gray test clip on disk and the colour frames it was made from."""
    color = _color_frames()
    gray = [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) for f in color]
    return write_video(tmp_path_factory.mktemp("clip") / "film.mp4", gray), color


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("experts")
    for i, (name, routes) in enumerate([("scenes", ["background"]), ("faces", ["person"])]):
        make_expert(root, name, routes, seed=i)
    return Pipeline.load([root], router="background", use_shipped=False, device="cpu")


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run as on a machine without ffmpeg (this one may or may not have it): an empty PATH."""
    (tmp_path / "empty_bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty_bin"))


@pytest.fixture(scope="module")
def runs(clip: tuple[Path, list[np.ndarray]]) -> dict:
    """The clip coloured by the shipped models per frame and stabilised, and the frames around the cut
    stabilised with cut detection off."""
    path, color = clip
    frames, _ = read_video(path)
    pipe = Pipeline.load(device="cpu")
    out: dict = {"frames": frames, "color": color, "stable_carry": FlowCarry()}
    out["per_frame"] = [r.rgb for r in colorize_frames(pipe, frames, batch_size=4)]
    out["stable"] = [r.rgb for r in colorize_frames(pipe, frames, batch_size=4, carry=out["stable_carry"])]
    no_cuts = FlowCarry(TemporalOptions(cut_threshold=2.0, cut_jump=1e9))
    out["no_cuts"] = [r.rgb for r in colorize_frames(pipe, frames[PAN - 2:PAN + 1], carry=no_cuts)]
    return out


def _l2ab(results: list[torch.Tensor], color: list[np.ndarray]) -> float:
    truth = [ab_of(torch.from_numpy(c).permute(2, 0, 1).float() / 255) for c in color]
    return float(np.mean([np.linalg.norm(ab_of(r) - t, axis=-1).mean() for r, t in zip(results, truth, strict=True)]))


def _input_l(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [l_to_u8(lightness(f)) for f in frames]


# --- temporal stability (shipped models) ------------------------------------------------------------


def test_stabilisation_halves_flicker_and_costs_under_5_percent_l2ab(runs: dict) -> None:
    Ls = _input_l(runs["frames"])
    per_frame = flicker([ab_of(r) for r in runs["per_frame"]], Ls)
    stable = flicker([ab_of(r) for r in runs["stable"]], Ls)
    assert per_frame > 0.0
    assert stable <= 0.5 * per_frame, (stable, per_frame)
    l2_frame, l2_stable = _l2ab(runs["per_frame"], runs["color"]), _l2ab(runs["stable"], runs["color"])
    assert l2_stable <= 1.05 * l2_frame, (l2_stable, l2_frame)


def test_scene_cut_resets_the_carried_colour(runs: dict) -> None:
    assert runs["stable_carry"].cuts == [PAN]  # the cut, and nothing in the pan
    first_of_shot = PAN
    # At the cut the stabilised frame is exactly the per-frame colourisation: nothing carried over ...
    torch.testing.assert_close(runs["stable"][first_of_shot], runs["per_frame"][first_of_shot])
    # ... whereas without cut detection the coffee's colours would leak into the cat,
    leaked = (runs["no_cuts"][-1] - runs["per_frame"][first_of_shot]).abs().max()
    assert leaked > 1 / 255
    # and after the cut colour is carried again.
    assert not torch.equal(runs["stable"][first_of_shot + 1], runs["per_frame"][first_of_shot + 1])


def test_pipeline_keeps_the_full_resolution_l_of_every_frame(runs: dict) -> None:
    for frame, rgb in zip(runs["frames"], runs["stable"], strict=True):
        assert tuple(rgb.shape) == (3, *frame.shape[:2])
        assert (lightness(rgb) - lightness(frame)).abs().mean() < 1.0  # only gamut clipping moves L


def test_flicker_measure_compensates_motion() -> None:
    color = _color_frames()[:PAN]
    Ls = _input_l(color)
    truth = [ab_of(torch.from_numpy(c).permute(2, 0, 1).float() / 255) for c in color]
    naive = np.mean([np.linalg.norm(b - a, axis=-1).mean() for a, b in itertools.pairwise(truth)])
    compensated = flicker(truth, Ls)
    assert compensated < 0.25 * naive  # a pure pan of true colours barely "flickers" once motion is undone
    noisy = [t + np.random.default_rng(i).normal(0, 3, t.shape).astype(np.float32) for i, t in enumerate(truth)]
    assert flicker(noisy, Ls) > compensated + 2.0  # frame-to-frame noise is what it measures


def test_cut_detector_catches_a_jump_that_a_fixed_threshold_misses() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:H, 0:W]
    base = x * 1.5 + y + 40.0
    grain = [np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8) for _ in range(6)]
    other = [np.clip(base * 0.8 + 50 + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    frames = grain + other  # a grainy shot, then one of similar tone
    options = TemporalOptions()
    assert scene_distance(frames[5], frames[6]) < options.cut_threshold  # under the absolute threshold ...
    detect = CutDetector(options)
    assert [t for t in range(1, len(frames)) if detect(frames[t - 1], frames[t])] == [6]  # ... but a jump


# --- plumbing (tiny random experts) ----------------------------------------------------------------


def test_cli_keeps_frame_count_size_fps_and_l_and_says_audio_was_dropped(
        clip: tuple[Path, list[np.ndarray]], tiny_pipe: Pipeline, tmp_path: Path, capsys: pytest.CaptureFixture,
        no_ffmpeg: None, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = clip
    monkeypatch.setattr(Pipeline, "load", classmethod(lambda cls, *a, **k: tiny_pipe))
    out = tmp_path / "out"
    assert main([str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "audio dropped" in err and "ffmpeg" in err
    assert [p.name for p in out.iterdir()] == ["film_colorized.mp4"]  # no temporary file left behind
    frames_in, fps_in = read_video(src)
    frames_out, fps_out = read_video(out / "film_colorized.mp4")
    assert len(frames_out) == len(frames_in) == PAN + AFTER_CUT
    assert frames_out[0].shape == frames_in[0].shape and fps_out == pytest.approx(fps_in)
    for a, b in zip(frames_in, frames_out, strict=True):
        assert (lightness(a) - lightness(b)).abs().mean() < 3.0  # lossy codec on both sides; L otherwise kept
    assert main([str(src), "-o", str(out)]) == 0  # an existing output is kept, the next name is used
    assert sorted(p.name for p in out.iterdir()) == ["film_colorized.mp4", "film_colorized_1.mp4"]


def test_stabilised_output_does_not_depend_on_the_batch_size(clip: tuple[Path, list[np.ndarray]],
                                                              tiny_pipe: Pipeline) -> None:
    frames, _ = read_video(clip[0])
    one = [r.rgb for r in colorize_frames(tiny_pipe, frames, batch_size=3, carry=FlowCarry())]
    other = [r.rgb for r in colorize_frames(tiny_pipe, frames, batch_size=len(frames), carry=FlowCarry())]
    for a, b in zip(one, other, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_bad_videos_get_one_line_errors_and_nothing_is_written(tmp_path: Path, tiny_pipe: Pipeline,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(Pipeline, "load", classmethod(lambda cls, *a, **k: tiny_pipe))
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (bad / "notes.avi").write_text("not a film\n")
    cv2.VideoWriter(str(bad / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48)).release()
    whole = write_video(tmp_path / "whole.avi", _color_frames(), fourcc="MJPG").read_bytes()
    (bad / "cut_short.avi").write_bytes(whole[:len(whole) // 2])
    write_video(bad / "huge.avi", [np.zeros((2304, 4096, 3), np.uint8)], fourcc="MJPG")  # 9.4 MP > 4K UHD
    out = tmp_path / "out"
    assert main([str(bad), "-o", str(out)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    expected = {"random.mp4": "cannot open", "notes.avi": "cannot open", "empty.avi": "no frames",
                "cut_short.avi": "truncated", "huge.avi": "over the 8.3 MP limit"}
    assert len(errors) == len(expected), errors
    for name, reason in expected.items():
        line = next(e for e in errors if name in e)
        assert line.startswith("error: ") and reason in line, line
    assert list(out.iterdir()) == []  # not even a hidden temporary file


def test_frame_limit_stops_before_anything_is_kept(clip: tuple[Path, list[np.ndarray]], tiny_pipe: Pipeline,
                                                   tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="frame limit"):
        colorize_video(tiny_pipe, clip[0], tmp_path / "x.mp4", max_frames=5)
    assert list(tmp_path.iterdir()) == []


def _fake_ffmpeg(folder: Path, mux_ok: bool) -> None:
    """An ``ffmpeg`` on PATH that reports an audio stream and 'muxes' by copying the video it is given."""
    folder.mkdir()
    script = folder / "ffmpeg"
    script.write_text(f"""#!{sys.executable}
import shutil, sys
args = sys.argv[1:]
if "-map" not in args:  # probing the source
    print("  Stream #1:1[0x2](und): Audio: aac (LC), 44100 Hz, mono", file=sys.stderr)
    sys.exit(1)
if not {mux_ok}:
    print("Could not write header (incorrect codec parameters ?)", file=sys.stderr)
    sys.exit(1)
shutil.copy(args[args.index("-i") + 1], args[-1])
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("mux_ok", [True, False])
def test_audio_is_copied_by_ffmpeg_when_present(clip: tuple[Path, list[np.ndarray]], tiny_pipe: Pipeline,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                mux_ok: bool) -> None:
    _fake_ffmpeg(tmp_path / "bin", mux_ok)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    out.mkdir()
    report = colorize_video(tiny_pipe, clip[0], out / "film_colorized.mp4")
    assert report.audio == "copied" if mux_ok else report.audio.startswith("dropped (ffmpeg could not copy")
    assert [p.name for p in out.iterdir()] == ["film_colorized.mp4"]
    assert len(read_video(out / "film_colorized.mp4")[0]) == PAN + AFTER_CUT


# --- still-image gaps: animated GIFs, tiny and thin images ------------------------------------------


def test_folder_run_colourises_animated_gifs_and_tiny_images(tmp_path: Path, tiny_pipe: Pipeline,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(Pipeline, "load", classmethod(lambda cls, *a, **k: tiny_pipe))
    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.fromarray(f).resize((48, 32)) for f in _color_frames()[:6]]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=[80, 80, 80, 80, 80, 200],
                   loop=0)
    frames[0].save(folder / "still.gif")
    sizes = {"dot": (1, 1), "small": (5, 3), "seven": (7, 7), "thin": (4, 1500), "flat": (1500, 4)}
    rng = np.random.default_rng(0)
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(folder / f"{name}.png")
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out)]) == 0, capsys.readouterr().err
    with Image.open(out / "anim_colorized.gif") as gif:
        assert gif.is_animated and gif.n_frames == 6 and gif.size == (48, 32)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        assert durations == [80, 80, 80, 80, 80, 200] and gif.info.get("loop") == 0
    with Image.open(out / "still_colorized.png") as still:  # a one-frame GIF is a still image
        assert still.size == (48, 32)
    for name, size in sizes.items():
        with Image.open(out / f"{name}_colorized.png") as im:
            assert im.size == size


# --- web demo --------------------------------------------------------------------------------------


@pytest.fixture
def demo_handler(tiny_pipe: Pipeline):
    from ensemble_color.app import AppConfig, DemoHandler, PipelineCache

    return lambda **cfg: DemoHandler(PipelineCache(lambda router: tiny_pipe),
                                     AppConfig(routers=("background",), **cfg), default_router="background")


def test_demo_video_tab_colourises_short_clips_and_refuses_long_or_large_ones(
        clip: tuple[Path, list[np.ndarray]], demo_handler, tmp_path: Path) -> None:
    src = clip[0]
    handler = demo_handler()  # keep it: its temporary result folder lives as long as the handler
    out = handler.video(str(src), work_size=128)
    assert out.error is None and out.video is not None and out.video.suffix == ".webm"
    assert len(read_video(out.video)[0]) == PAN + AFTER_CUT and "1 scene cut" in out.status
    payload = {"path": str(src), "orig_name": "grandpa.mp4"}
    long = demo_handler(max_video_seconds=0.5).video(payload)
    assert long.video is None and long.error is not None and "grandpa.mp4" in long.error
    assert "s long, over this demo's 0.5 s limit" in long.error and str(src) not in long.error
    large = demo_handler(max_video_megapixels=0.001).video(str(src))
    assert large.error is not None and "MP limit" in large.error
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    bad = handler.video(str(junk))
    assert bad.error is not None and "cannot open" in bad.error and "\n" not in bad.error
    assert "Upload a video" in (handler.video(None).error or "")


def test_demo_has_a_video_tab_with_an_api(tiny_pipe: Pipeline) -> None:
    pytest.importorskip("gradio")
    from ensemble_color.app import AppConfig, build_demo

    demo = build_demo(lambda router: tiny_pipe, "background", AppConfig(routers=("background",), examples_dir=None))
    assert {"colorize", "colorize_video"} <= {fn.api_name for fn in demo.fns.values()}


def test_frames_decode_as_in_the_blend_whatever_the_still_photo_option(tmp_path: Path) -> None:
    """The generalist colouring a frame alone still decodes as in the blend: a per-frame switch would flip
    within a shot (see video.colorize_frames)."""
    root = tmp_path / "experts"
    make_expert(root, "generalist", [], arch="multihead-unet", seed=9, fallback=True)
    pipe = Pipeline.load([root], router="background", use_shipped=False, device="cpu").with_options(
        decode={"generalist": "regression x2"}, decode_alone="manifest", alone_share=0.9)
    frame = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    still = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
    got = next(colorize_frames(pipe, [frame])).ab_work
    torch.testing.assert_close(got, pipe.with_options(decode_alone="blend").colorize(still).ab_work)
    assert not torch.allclose(got, pipe.colorize(still).ab_work, atol=0.1)
