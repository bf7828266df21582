"""``ensemble_color batch``: same outputs as the CLI, a manifest of every input, idempotent re-runs, on the
local engine (always) and on a local Ray instance (skipped with the reason when Ray is absent)."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ensemble_color.batch import BatchConfig, PipelineSpec, run_batch
from ensemble_color.cli import main
from ensemble_color.options import PipelineOptions

SHIPPED = {"animals", "birds", "generalist", "people", "scenes"}


def make_scans(folder: Path, n: int, corrupt: set[str]) -> Path:
    """``n`` small 48×40 gray PNGs (gradients, a disc, noise: seeded, all different); of the names in
    ``corrupt`` (sorted) the 1st, 3rd… become random bytes, the 2nd, 4th… truncated PNGs (two reasons)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:48]
    for i in range(n):
        name = f"s{i:02d}.png"
        disc = ((x - rng.integers(8, 40)) ** 2 + (y - rng.integers(8, 32)) ** 2 < rng.integers(20, 200)) * 90
        gray = (x * rng.uniform(-3, 3) + y * rng.uniform(-3, 3) + disc + rng.normal(128, 12, x.shape)).clip(0, 255)
        Image.fromarray(gray.astype(np.uint8)).save(folder / name)
        if name in corrupt:
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[:60] if sorted(corrupt).index(name) % 2 else rng.bytes(300))
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def images_in(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir()) if p.suffix == ".png"}


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name != "manifest.csv"}


def manifest_rows(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as f:
        return {row["input"]: row for row in csv.DictReader(f)}


def assert_same_images(a: Path, b: Path) -> None:
    left, right = images_in(a), images_in(b)
    assert sorted(left) == sorted(right)
    for name in left:  # batches differ in size, and CPU convolution kernels by batch size: ±1 level of rounding
        diff = np.abs(left[name].astype(int) - right[name].astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, name


@pytest.fixture
def local_ray():
    """A new 2-CPU Ray instance for this test only, never a cluster found via RAY_ADDRESS or ``ray start``
    (``address="local"``); the batch engine reuses it rather than starting its own."""
    ray = pytest.importorskip("ray", reason="Ray is absent: pip install -e '.[scale]' to run the Ray test")
    pytest.importorskip("ray.data", reason="Ray Data is absent: pip install -e '.[scale]'")
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_batch_matches_cli_records_failures_and_reruns_idempotently(tmp_path, local_ray, monkeypatch):
    scans = make_scans(tmp_path / "scans", 30, corrupt={"s07.png", "s18.png"})
    inputs_before = digests(scans)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main([str(scans), "-o", str(tmp_path / "cli"), "--size", "64"]) == 1
    out = tmp_path / "ray"
    args = ["batch", str(scans), str(out), "--engine", "ray", "--workers", "2", "--size", "64"]
    assert main(args) == 1  # two inputs failed; the other 28 are written

    assert len(images_in(out)) == 28
    assert_same_images(out, tmp_path / "cli")  # the CLI's names and the CLI's pixels, file for file
    rows = manifest_rows(out)
    assert len(rows) == 30 and Counter(r["status"] for r in rows.values()) == {"ok": 28, "error": 2}
    errors = {Path(i).name: r["error"] for i, r in rows.items() if r["status"] == "error"}
    assert set(errors) == {"s07.png", "s18.png"}
    assert errors["s07.png"].startswith(f"{scans / 's07.png'}: not an image file")
    assert errors["s18.png"].startswith(f"{scans / 's18.png'}: corrupt or truncated image")
    for i, r in rows.items():
        if r["status"] == "ok":
            assert r["output"] == str(out / f"{Path(i).stem}_colorized.png") and not r["error"]
            assert r["experts"] and set(r["experts"].split("+")) <= SHIPPED
            assert float(r["seconds"]) > 0 and r["attempts"] == "1"
            assert not r["worker"].endswith(f":{os.getpid()}")  # ran in a Ray actor, not in this process

    before = mtimes(out)
    assert main(args) == 1  # the two corrupt files are retried (and fail again); nothing else runs
    assert mtimes(out) == before  # no new file, no output rewritten
    again = manifest_rows(out)
    assert {i: r for i, r in again.items() if r["status"] == "ok"} == \
           {i: r for i, r in rows.items() if r["status"] == "ok"}  # done rows kept as they were: history
    assert sorted(r["attempts"] for r in again.values() if r["status"] == "error") == ["2", "2"]
    assert digests(scans) == inputs_before
    assert list(cwd.iterdir()) == []


def test_local_engine_names_like_the_cli_and_redoes_only_what_is_missing(tmp_path, tiny_experts, monkeypatch):
    scans = tmp_path / "scans"
    (scans / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for rel in ("a.png", "b.png", "sub/a.png"):  # two stems 'a': the second gets _1, as in the CLI
        Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(scans / rel)
    (scans / "bad.jpg").write_bytes(b"not a jpeg")
    (scans / "notes.txt").write_text("ignored")
    (scans / "clip.mp4").write_bytes(b"not listed: batch colourises stills only")
    inputs_before = digests(scans)
    ref, out = tmp_path / "cli", tmp_path / "batch"
    for folder in (ref, out):  # somebody else's file where b's output would go: kept, b gets _1
        folder.mkdir()
        (folder / "b_colorized.png").write_bytes(b"foreign")
    common = ["--experts", str(tiny_experts), "--router", "background", "-r"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main([str(scans), "-o", str(ref), *common]) == 1
    assert main(["batch", str(scans), str(out), *common]) == 1

    assert sorted(p.name for p in out.iterdir()) == ["a_colorized.png", "a_colorized_1.png", "b_colorized.png",
                                                      "b_colorized_1.png", "manifest.csv"]
    assert (out / "b_colorized.png").read_bytes() == b"foreign"
    (ref / "b_colorized.png").unlink()
    (out / "b_colorized.png").unlink()
    assert_same_images(out, ref)
    rows = manifest_rows(out)
    assert Counter(r["status"] for r in rows.values()) == {"ok": 3, "error": 1}
    assert rows[str(scans / "sub" / "a.png")]["output"] == str(out / "a_colorized_1.png")
    assert rows[str(scans / "bad.jpg")]["error"].startswith(f"{scans / 'bad.jpg'}: ")

    redo = out / "a_colorized_1.png"
    expected = np.asarray(Image.open(redo))
    redo.unlink()  # a lost output is redone (same name, same pixels); the others are left alone
    before = mtimes(out)
    assert main(["batch", str(scans), str(out), *common]) == 1
    assert np.array_equal(np.asarray(Image.open(redo)), expected)
    assert {k: v for k, v in mtimes(out).items() if k != redo.name} == before
    rows = manifest_rows(out)
    assert rows[str(scans / "sub" / "a.png")]["attempts"] == "2" and rows[str(scans / "a.png")]["attempts"] == "1"
    assert digests(scans) == inputs_before
    assert list(cwd.iterdir()) == []


def test_a_failing_image_is_a_manifest_row_not_the_end_of_the_job(tmp_path, tiny_experts, monkeypatch):
    from ensemble_color.batch import stores as batch
    from ensemble_color.pipeline import Pipeline

    scans = make_scans(tmp_path / "scans", 5, corrupt=set())
    colorize_batch, load_image = Pipeline.colorize_batch, batch.load_image

    def decoder_bug(path):  # what Pillow does on some malformed TIFFs: not an ImageLoadError
        if str(path).endswith("s04.png"):
            raise IndexError("tile index out of range")
        return load_image(path)

    def flaky(self, images, **kwargs):
        if any(im.source.endswith("s02.png") for im in images):
            raise RuntimeError("boom\non two lines")
        return colorize_batch(self, images, **kwargs)

    monkeypatch.setattr(Pipeline, "colorize_batch", flaky)
    monkeypatch.setattr(batch, "load_image", decoder_bug)
    config = BatchConfig(batch_size=4, pipeline=PipelineSpec.of(experts_dirs=(str(tiny_experts),), router="background"))
    summary = run_batch(str(scans), str(tmp_path / "out"), config)
    assert (summary.ok, summary.failed) == (3, 2)  # s02's batch-mates were retried alone and succeeded
    assert summary.errors == [f"{scans / 's02.png'}: colourisation failed (RuntimeError: boom on two lines)",
                              f"{scans / 's04.png'}: cannot decode (IndexError: tile index out of range)"]
    assert len(images_in(tmp_path / "out")) == 3


def test_filesystem_uris_give_the_same_outputs_as_local_paths(tmp_path, tiny_experts):
    pytest.importorskip("pyarrow", reason="pyarrow is absent (it comes with the 'scale' extra)")
    scans = make_scans(tmp_path / "scans", 4, corrupt={"s01.png"})
    config = BatchConfig(pipeline=PipelineSpec.of(experts_dirs=(str(tiny_experts),), router="background"))
    local = run_batch(str(scans), str(tmp_path / "local"), config)
    remote = run_batch(f"file://{scans}", f"file://{tmp_path / 'uri'}", config)
    assert (local.ok, local.failed) == (remote.ok, remote.failed) == (3, 1)
    assert remote.errors[0].startswith(f"file://{scans}/s01.png: ")
    assert_same_images(tmp_path / "uri", tmp_path / "local")
    rows = manifest_rows(tmp_path / "uri")
    assert rows[f"file://{scans}/s00.png"]["output"] == f"file://{tmp_path / 'uri'}/s00_colorized.png"
    assert not [p for p in (tmp_path / "uri").iterdir() if p.name.endswith(".tmp")]
    assert run_batch(f"file://{scans}", f"file://{tmp_path / 'uri'}", config).skipped == 3


def test_ray_is_optional(tmp_path, monkeypatch, capsys):
    code = ("import sys, ensemble_color.cli, ensemble_color.batch; "
            "print(sorted(m for m in ('ray', 'pyarrow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    scans = make_scans(tmp_path / "scans", 1, corrupt=set())
    assert main(["batch", str(scans), str(tmp_path / "out"), "--engine", "ray"]) == 1
    assert "needs Ray (pip install 'ensemble_color[scale]')" in capsys.readouterr().err


def test_backend_flags_reach_the_pipeline_options(tmp_path):
    from ensemble_color.batch import build_parser, config_from_args

    parser = build_parser()
    given = config_from_args(parser.parse_args([str(tmp_path), str(tmp_path / "o"), "--router-backend", "torch",
                                                "--backend", "onnxruntime"]))
    load = given.pipeline.load_options
    assert (load.backend, load.router_backend) == ("onnxruntime", "torch")
    plain = config_from_args(parser.parse_args([str(tmp_path), str(tmp_path / "o")]))
    assert plain.pipeline.options == PipelineOptions()
