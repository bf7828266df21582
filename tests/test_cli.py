import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ensemble_color.cli import main
from ensemble_color.naming import output_path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_with_corrupt_file(tmp_path, tiny_experts, photo, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo, folder / "a.png")
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(folder / "b.jpg")
    (folder / "c.jpg").write_bytes(b"not really a jpeg")
    before = {p.name: _digest(p) for p in folder.iterdir()}
    code = main([str(folder), "--experts", str(tiny_experts), "--router", "background", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert "c.jpg" in err and "error:" in err
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == ["a_colorized.png", "b_colorized.jpg"]
    assert Image.open(tmp_path / "out" / "a_colorized.png").size == Image.open(photo).size
    assert {p.name: _digest(p) for p in folder.iterdir()} == before  # inputs untouched


def test_outputs_never_overwrite_inputs_or_earlier_outputs(tmp_path, tiny_experts, photo):
    src = tmp_path / "p_colorized.png"  # an input that looks like an output name
    shutil.copy(photo, src)
    protected = {src.resolve()}
    p1 = output_path(tmp_path / "p.png", None, "_colorized", None, overwrite=True, protected=protected)
    assert p1 != src
    args = [str(photo), "--experts", str(tiny_experts), "--router", "background", "--save-masks"]
    assert main(args) == 0
    assert main(args) == 0
    names = sorted(p.name for p in photo.parent.iterdir() if "colorized" in p.name or "routing" in p.name)
    assert "photo_colorized.png" in names and "photo_colorized_1.png" in names and "photo_routing.png" in names


def test_missing_input_and_glob(tmp_path, tiny_experts, photo, capsys):
    code = main([str(tmp_path / "nope.png"), str(tmp_path / "*.png"), "--experts", str(tiny_experts),
                 "--router", "background", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "nope.png: no such file" in err
    assert (tmp_path / "o" / "photo_colorized.png").exists()


def test_list_experts_shows_skipped_reason(tmp_path, tiny_experts):
    (tiny_experts / "bad").mkdir()
    (tiny_experts / "bad" / "model.pt").write_bytes(b"\x80\x04")
    (tiny_experts / "bad" / "expert.json").write_text(
        '{"name": "bad", "architecture": "resnet18-deconv", "routes": ["bird"]}')
    proc = subprocess.run([sys.executable, "-m", "ensemble_color", "--list-experts", "--experts", str(tiny_experts),
                           "--router", "background"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "birds" in proc.stdout and "skipped" in proc.stdout and "pickle" in proc.stdout


def test_no_inputs_is_a_usage_error(capsys):
    assert main([]) == 2


def test_assign_routes_a_class_to_the_named_expert(tmp_path, tiny_experts, photo, capsys):
    common = [str(photo), "--experts", str(tiny_experts), "--router", "background", "--format", "png"]
    assert main([*common, "-o", str(tmp_path / "assigned"), "--assign", "background=faces"]) == 0
    assert main([*common, "-o", str(tmp_path / "only"), "--only", "faces"]) == 0
    assert main([*common, "-o", str(tmp_path / "default")]) == 0
    read = [np.asarray(Image.open(tmp_path / d / "photo_colorized.png")) for d in ("assigned", "only", "default")]
    assert np.array_equal(read[0], read[1])  # all background -> the faces expert, as if it were alone
    assert not np.array_equal(read[0], read[2])  # by default the scenes expert colours background
    assert main([*common, "--assign", "background=nobody", "-o", str(tmp_path / "x")]) == 1
    assert main([*common, "--assign", "background", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "'nobody'" in err and "expected CLASS=EXPERT" in err


def test_decode_changes_how_the_shipped_generalist_colours_the_background(tmp_path, tiny_experts, photo, capsys):
    # the generalist colours this photo alone: as in the blend only with --decode-alone blend
    common = [str(photo), "--experts", str(tiny_experts), "--router", "background", "--format", "png"]
    assert main([*common, "-o", str(tmp_path / "manifest")]) == 0
    common += ["--decode-alone", "blend"]
    assert main([*common, "-o", str(tmp_path / "default")]) == 0
    assert main([*common, "-o", str(tmp_path / "reg"), "--decode", "generalist=regression x1.5"]) == 0
    read = {d: np.asarray(Image.open(tmp_path / d / "photo_colorized.png")) for d in ("manifest", "default", "reg")}
    assert not np.array_equal(read["default"], read["reg"])  # the background is the generalist's, decoded otherwise
    assert not np.array_equal(read["default"], read["manifest"])
    assert main([*common, "--alone-share", "1.5", "-o", str(tmp_path / "x")]) == 1
    assert main([*common, "--decode", "generalist=median", "-o", str(tmp_path / "x")]) == 1
    assert main([*common, "--decode", "nobody=regression", "-o", str(tmp_path / "x")]) == 1
    assert main([*common, "--decode", "generalist", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "unknown decoding 'median'" in err and "['nobody']" in err and "expected EXPERT=DECODING" in err
    assert "alone_share must be in (0, 1]" in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_context_option_is_checked(tmp_path, tiny_experts, photo, capsys):
    from ensemble_color.options import parse_context

    assert parse_context(["0.2", "0.5"]) == (0.2, 0.5)
    common = [str(photo), "--experts", str(tiny_experts), "--router", "background", "-o", str(tmp_path / "o")]
    assert main([*common, "--context", "0.5", "0.2"]) == 1
    assert "--context needs 0 <= LO < HI <= 1" in capsys.readouterr().err
    assert main([*common, "--context", "0.2", "0.5"]) == 0


def test_main_subject_flag_is_the_shared_context_ramp(tmp_path, tiny_experts, photo, capsys, contexts_used):
    from ensemble_color.composite import SUBJECT_CONTEXT_RAMP

    common = [str(photo), "--experts", str(tiny_experts), "--router", "background", "--overwrite"]
    assert main([*common, "-o", str(tmp_path / "a")]) == 0
    assert main([*common, "--no-context", "-o", str(tmp_path / "b")]) == 0
    assert main([*common, "--main-subject", "-o", str(tmp_path / "c")]) == 0
    assert contexts_used == [SUBJECT_CONTEXT_RAMP, None, SUBJECT_CONTEXT_RAMP]  # on by default (docs/tuning.md)
    with pytest.raises(SystemExit):  # one or the other, not both
        main([*common, "--main-subject", "--context", "0.1", "0.3"])
    assert "not allowed with" in capsys.readouterr().err


def test_router_backend_flag_reaches_the_pipeline_and_is_checked(tmp_path, tiny_experts, photo, monkeypatch, capsys):
    from ensemble_color.pipeline import Pipeline

    seen = []
    load = Pipeline.load

    def recording_load(*args, **kwargs):
        pipe = load(*args, **kwargs)
        seen.append((kwargs["load"].router_backend, pipe.router.name))
        return pipe

    monkeypatch.setattr(Pipeline, "load", recording_load)
    common = [str(photo), "--experts", str(tiny_experts), "--router", "background"]
    assert main([*common, "-o", str(tmp_path / "a")]) == 0
    assert main([*common, "--router-backend", "torch", "-o", str(tmp_path / "b")]) == 0
    assert [b for b, _ in seen] == ["auto", "torch"]
    with pytest.raises(SystemExit):  # argparse: an unknown choice is a usage error
        main([*common, "--router-backend", "tensorrt", "-o", str(tmp_path / "c")])
    assert "invalid choice" in capsys.readouterr().err
