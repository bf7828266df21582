"""A folder of hostile files through every front end: no traceback, every valid file written, every bad one
named, inputs byte-identical afterwards (files generated from a seed by ``ensemble_color.testing``)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from ensemble_color.app import AppConfig, DemoHandler, PipelineCache
from ensemble_color.batch import BatchConfig, PipelineSpec, run_batch
from ensemble_color.cli import main
from ensemble_color.naming import is_input_image
from ensemble_color.pipeline import Pipeline
from ensemble_color.testing import HostileFolder, png_bomb, write_hostile_folder


def _digests(paths: list[Path]) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileFolder:
    # 36 files: every kind twice; the bomb kinds decode to 144-900 MP
    return write_hostile_folder(tmp_path_factory.mktemp("hostile"), n=36, seed=1)


def _outputs_for(out: Path, src: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.startswith(src.stem + "_colorized")]


def test_generator_is_seeded_and_covers_every_kind(tmp_path: Path) -> None:
    a = write_hostile_folder(tmp_path / "a", n=17, seed=3, bombs=False)
    b = write_hostile_folder(tmp_path / "b", n=17, seed=3, bombs=False)
    assert [p.name for p in a.all] == [p.name for p in b.all]
    assert _digests(a.all).values() and list(_digests(a.all).values()) == list(_digests(b.all).values())
    assert len(a.valid) == 12 and len(a.bad) == 4 and len(a.either) == 1


def test_cli_folder_writes_every_valid_file_and_names_every_bad_one(
        hostile: HostileFolder, tiny_experts: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _digests(hostile.all)
    out = tmp_path / "out"
    code = main([str(hostile.valid[0].parent), "-o", str(out), "--experts", str(tiny_experts),
                 "--router", "background", "--threads", "1", "--batch-size", "4"])
    err = capsys.readouterr().err
    assert code == 1, "some inputs are bad: the exit code says so"
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error: " in line]
    for src in hostile.valid:
        assert _outputs_for(out, src), f"{src.name} was not written"
    for src in hostile.bad:
        assert not _outputs_for(out, src)
        assert sum(str(src) in line for line in errors) == 1, f"{src.name} not named exactly once"
    for src in hostile.either:
        assert bool(_outputs_for(out, src)) != any(str(src) in line for line in errors)
    assert any("limit (max_pixels)" in line for line in errors), "a bomb is refused by its named limit"
    assert _digests(hostile.all) == before, "inputs must stay byte-identical"


def test_batch_local_records_every_file(hostile: HostileFolder, tiny_experts: Path, tmp_path: Path) -> None:
    before = _digests(hostile.all)
    config = BatchConfig(batch_size=4, pipeline=PipelineSpec.of(experts_dirs=(str(tiny_experts),), router="background"))
    summary = run_batch(str(hostile.valid[0].parent), str(tmp_path / "out"), config)
    with open(tmp_path / "out" / "manifest.csv", newline="") as f:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(f)}
    stills = [p for p in hostile.all if is_input_image(p)]  # batch colours stills, not videos or GIFs
    assert sorted(rows) == sorted(p.name for p in stills)
    for src in hostile.valid:
        if src in stills:
            assert rows[src.name]["status"] == "ok", rows[src.name]["error"]
    for src in hostile.bad:
        if src not in stills:
            continue
        assert rows[src.name]["status"] == "error" and src.name in rows[src.name]["error"]
        assert "\n" not in rows[src.name]["error"]
    assert summary.failed >= sum(p in stills for p in hostile.bad)
    assert _digests(hostile.all) == before


def test_app_handler_refuses_bad_files_and_keeps_serving(hostile: HostileFolder, tiny_experts: Path,
                                                          tmp_path: Path) -> None:
    def factory(router: str) -> Pipeline:
        return Pipeline.load(experts_dirs=[tiny_experts], use_shipped=False, router=router, device="cpu")

    handler = DemoHandler(PipelineCache(factory), AppConfig(routers=("background",)), default_router="background")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30000, 30000))
    refused = handler(str(bomb))
    assert refused.error is not None and "bomb.png" in refused.error and "limit" in refused.error
    for src in hostile.bad:
        out = handler(str(src))
        assert out.error is not None and src.name in out.error and out.after is None
    for src in hostile.valid:  # every request after the bad ones is still served
        out = handler(str(src))
        assert out.error is None and out.after is not None, src.name
