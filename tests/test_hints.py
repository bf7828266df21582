"""Colour hints: parsed and checked with one-line errors, reproduced at their point, spread through their object
and stopped at its edge, L never changed; route painting overrides the router."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ensemble_color.color import rgb_to_lab
from ensemble_color.hints import Hint, HintError, check_hints, hint_targets, load_hints, save_hints
from ensemble_color.pipeline import Pipeline

H, W = 120, 160
BLUE = "#3050b0"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    from conftest import make_expert

    root = tmp_path_factory.mktemp("experts")
    for i, (name, routes) in enumerate([("scenes", ["background"]), ("faces", ["person"]), ("birds", ["bird"]),
                                        ("animals", ["animal"])]):
        make_expert(root, name, routes, seed=i)
    return Pipeline.load([root], use_shipped=False, device="cpu", router_backend="torch")  # the embedded router


def two_objects(noise: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A gray photo (3, H, W): a disc (L about 62) on a background (L about 45), lightly noisy; and the disc's mask."""
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    disc = (x - 55) ** 2 + (y - 60) ** 2 < 35 ** 2
    g = torch.Generator().manual_seed(0)
    gray = torch.where(disc, 0.60, 0.42) + noise / 100 * torch.randn(H, W, generator=g)
    return gray.clamp(0, 1).expand(3, -1, -1).contiguous(), disc


def lab(rgb: torch.Tensor) -> torch.Tensor:
    return rgb_to_lab(rgb[None])[0]


def test_parse_and_errors_name_the_hint() -> None:
    h = Hint.parse("10.5,20=#FF0000:5")
    assert h.points == ((10.5, 20.0),) and h.color == "#ff0000" and h.radius == 5.0
    assert Hint.parse("3,4=00ff00").radius == 3.0
    with pytest.raises(HintError, match=r"--hint '3,4=#GG0000'"):
        Hint.parse("3,4=#GG0000")
    with pytest.raises(HintError, match=r"hint at \(500, 4\) #ff0000 is outside the 160x120 image"):
        check_hints([Hint.parse("500,4=#ff0000")], W, H)


def test_hints_file_round_trip(tmp_path: Path) -> None:
    hints = [Hint.parse("1,2=#112233:4"), Hint(((5.0, 6.0), (7.0, 8.0)), "#abcdef", 2.0)]
    save_hints(tmp_path / "h.json", hints, (W, H))
    assert load_hints(tmp_path / "h.json") == hints
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(HintError, match=r"bad\.json: not a hints file"):
        load_hints(tmp_path / "bad.json")


def test_a_point_hint_is_reproduced_and_spreads_through_its_object_only(pipe: Pipeline) -> None:
    gray, disc = two_objects()
    base = pipe.colorize(gray)
    hint = Hint(((55.0, 60.0),), BLUE, 3.0)
    res = pipe.colorize(gray, hints=[hint])
    want = torch.tensor(hint.ab())
    out, before = lab(res.rgb), lab(base.rgb)
    at_point = out[1:, 60, 55]
    assert (at_point - want).norm() < 3.0, f"hint not reproduced at its point: {at_point} vs {want}"
    taken = (out[1:] - want[:, None, None]).norm(dim=0) < 5.0
    assert taken[disc].float().mean() >= 0.9, "the hinted object should take the hint's colour"
    changed = (out[1:] - before[1:]).norm(dim=0) > 5.0
    assert changed[~disc].float().mean() <= 0.05, "the other object should keep its colour"
    assert (out[0] - before[0]).abs().max() < 0.5, "hints never change L"


def test_a_hint_brush_over_an_edge_paints_only_the_side_of_its_point() -> None:
    """A hint 3 px inside an object's edge with a 10 px brush: the seeds stay on the point's side of the edge
    (a scarf hint at the edge of a pale wall must not seed the wall)."""
    L = torch.full((40, 60), 30.0)
    L[:, 33:] = 80.0  # the edge between x = 32 and x = 33
    hint = Hint(((30.0, 20.0),), BLUE, 10.0)
    blind, _ = hint_targets([hint], (40, 60), (40, 60))
    seen, _ = hint_targets([hint], (40, 60), (40, 60), L=L)
    assert blind[0, :, 33:].sum() > 0  # without L the disc crosses the edge
    assert seen[0, :, 33:].sum() == 0 and seen[0, :, :33].sum() == blind[0, :, :33].sum()


def test_no_hints_changes_nothing_and_a_bad_hint_is_refused(pipe: Pipeline) -> None:
    gray, _ = two_objects()
    assert torch.equal(pipe.colorize(gray).rgb, pipe.colorize(gray, hints=[]).rgb)
    with pytest.raises(HintError, match="outside"):
        pipe.colorize(gray, hints=[Hint(((W + 5.0, 3.0),), BLUE)])


def test_route_painting_overrides_the_router(pipe: Pipeline) -> None:
    gray, disc = two_objects()
    stroke = Hint(((55.0, 60.0),), "#000000", 30.0)
    res = pipe.colorize(gray, routes=[(stroke, "bird")])
    bird = res.route_classes.index("bird")
    small = torch.nn.functional.interpolate(disc[None, None].float(), size=res.probs.shape[-2:])[0, 0] > 0.5
    assert res.probs[bird][small].mean() > 0.6 and "birds" in res.boxes
    with pytest.raises(HintError, match="'dragon' is not a route class"):
        pipe.colorize(gray, routes=[(stroke, "dragon")])


def test_cli_hints_are_saved_loaded_again_and_bad_ones_named(tmp_path: Path, tiny_experts: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    from ensemble_color.cli import main
    from ensemble_color.io import to_pil

    gray, _ = two_objects()
    src = tmp_path / "print.png"
    to_pil(gray).save(src)
    common = [str(src), "--experts", str(tiny_experts), "--router", "background", "--threads", "1"]
    assert main([*common, "-o", str(tmp_path / "a"), "--hint", f"55,60={BLUE}:3", "--save-hints"]) == 0
    saved = tmp_path / "a" / "print_hints.json"
    assert load_hints(saved) == [Hint(((55.0, 60.0),), BLUE, 3.0)]
    assert main([*common, "-o", str(tmp_path / "b"), "--hints", str(saved)]) == 0
    a = Image.open(tmp_path / "a" / "print_colorized.png")
    b = Image.open(tmp_path / "b" / "print_colorized.png")
    assert a.tobytes() == b.tobytes(), "hints loaded from the saved file give the same picture"
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "c"), "--hint", "5,5=#12345"]) == 1
    assert "--hint '5,5=#12345': expected X,Y=#RRGGBB[:RADIUS]" in capsys.readouterr().err
    assert main([*common, "-o", str(tmp_path / "d"), "--hint", f"999,5={BLUE}"]) == 1
    err = capsys.readouterr().err
    assert "print.png" in err and "hint at (999, 5)" in err and "outside the 160x120 image" in err


def test_demo_handler_applies_hints_and_offers_the_hints_file(tmp_path: Path, tiny_experts: Path) -> None:
    from ensemble_color.app import AppConfig, DemoHandler, PipelineCache
    from ensemble_color.app.layout import colour_at
    from ensemble_color.io import to_pil

    def factory(router: str) -> Pipeline:
        return Pipeline.load([tiny_experts], router=router, use_shipped=False, device="cpu")

    handler = DemoHandler(PipelineCache(factory), AppConfig(routers=("background",)), default_router="background")
    gray, _ = two_objects()
    src = tmp_path / "print.png"
    to_pil(gray).save(src)
    hint = Hint(((55.0, 60.0),), BLUE, 3.0)
    out = handler(str(src), 256, hints=[hint.to_json()])
    assert out.error is None and out.hints_file is not None and load_hints(out.hints_file) == [hint]
    got = colour_at(out.download, 55, 60)
    got_ab = lab(torch.tensor([int(got[i:i + 2], 16) / 255 for i in (1, 3, 5)]).view(3, 1, 1))[1:, 0, 0]
    assert (got_ab - torch.tensor(hint.ab())).norm() < 3.0, "the download shows the hint's colour at its point"
    bad = handler(str(src), 256, hints=[{"points": [[999, 1]], "color": BLUE}])
    assert bad.error is not None and "outside the 160x120 image" in bad.error
    assert handler(str(src), 256).error is None  # and the next request is served
    painted = {"points": [[10, 10]], "color": "#000000", "radius": 5}
    assert handler(str(src), 256, hints=[{**painted, "route": "background"}]).error is None
    wrong = handler(str(src), 256, hints=[{**painted, "route": "dragon"}])
    assert wrong.error is not None and "'dragon' is not a route class" in wrong.error
