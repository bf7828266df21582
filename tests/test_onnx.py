"""ONNX export and the onnxruntime backend: parity with torch, dynamic sizes, one pipeline code path.

Skipped, with the reason, where onnx and onnxruntime (core dependencies) are missing from the environment.
Hostile ONNX plugin files are in ``test_plugins.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx", reason="onnx and onnxruntime (core dependencies) are not installed here")
pytest.importorskip("onnxruntime", reason="onnx and onnxruntime (core dependencies) are not installed here")

from conftest import REPO, make_expert

from ensemble_color.backends.convert import probe_input, to_onnx_bytes, trace_example
from ensemble_color.backends.onnx_contract import EXPERT_OUTPUT
from ensemble_color.backends.ort import (
    OnnxModelError,
    OrtModel,
    expert_session,
    onnx_router,
    router_on_onnxruntime,
    run_session,
)
from ensemble_color.cli import main
from ensemble_color.export import export_expert_folder, export_router_folder
from ensemble_color.io import load_image
from ensemble_color.nets import create_model, list_architectures, tiny_config
from ensemble_color.pipeline import Pipeline, PipelineOptions
from ensemble_color.plugins import discover
from ensemble_color.routing import RouterConfigError, RoutingTable, smp_router

ORT = {"backend": "onnxruntime", "threads": 1}
TOL_AB = 0.5  # the bar: max |Δab| in Lab units between onnxruntime and torch


def _same_routing(a, b) -> None:
    """Same experts run on the same crops, and the same winning route class wherever the router is not
    torn (top-2 probabilities within 1e-3 could flip on float noise alone)."""
    assert a.boxes == b.boxes
    if a.probs.shape[0] < 2:
        assert torch.equal(a.probs, b.probs)
        return
    top2 = a.probs.topk(2, dim=0).values
    decided = (top2[0] - top2[1]) > 1e-3
    assert torch.equal(a.probs.argmax(0)[decided], b.probs.argmax(0)[decided])


@pytest.mark.parametrize("arch", list_architectures())
def test_expert_graphs_take_any_batch_and_size_and_match_torch(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, **tiny_config(arch)).eval()
    d = model.descriptor
    session = expert_session(to_onnx_bytes(model, trace_example(d.size_multiple, 64), EXPERT_OUTPUT), d, threads=1)
    m = d.size_multiple
    for batch, cells in [(1, (3, 5)), (3, (7, 2)), (2, (4, 4))]:  # none is the traced 3:4 single image
        x = probe_input(m, batch=batch, cells=cells, seed=batch)
        with torch.inference_mode():
            ours, ref = run_session(session, x), model(x)
        assert ours.shape == ref.shape == (batch, 2, cells[0] * m, cells[1] * m)
        assert (ours - ref).abs().max() < 1e-3


def test_generalist_export_folds_its_chosen_decoding_in(tmp_path: Path) -> None:
    known = RoutingTable.load().known_classes()
    make_expert(tmp_path / "src", "generalist", [], arch="multihead-unet", fallback=True)
    manifest_path = tmp_path / "src" / "generalist" / "expert.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["decode"] = "soft"  # not the architecture's regression head: the graph must follow it
    manifest_path.write_text(json.dumps(manifest))
    spec = discover([tmp_path / "src"], known).experts["generalist"]
    block = export_expert_folder(spec, tmp_path / "out" / "generalist", threads=1)
    assert block["decode"] == "soft" and block["parity_max_abs_ab"] < 1e-3
    exported = discover([tmp_path / "out"], known)
    assert not exported.skipped and exported.experts["generalist"].formats == ("onnx",)
    with pytest.warns(UserWarning, match="not applied: .*folded into the graph"):  # the default decode option
        ort_pipe = Pipeline.load([tmp_path / "out"], router="background", use_shipped=False, **ORT)
    assert ort_pipe.options.decode == {}  # the graph's own decoding colours, and the options say so
    ort_model = ort_pipe.experts["generalist"].model
    model = spec.build()
    x = probe_input(16, batch=1, cells=(3, 5))
    with torch.inference_mode():
        ours, soft, reg = ort_model(x), model(x), model.decode_heads(model.forward_heads(x), "regression")
    assert (ours - soft).abs().max() < 1e-3
    assert (ours - reg).abs().max() > 1.0  # really the soft decode, not the regression head


def test_generalist_exported_with_the_pipelines_decoding_loads_without_a_warning(tmp_path: Path, recwarn) -> None:
    known = RoutingTable.load().known_classes()
    make_expert(tmp_path / "src", "generalist", [], arch="multihead-unet", fallback=True)
    spec = discover([tmp_path / "src"], known).experts["generalist"]
    default = PipelineOptions().decode["generalist"]
    export_expert_folder(spec.with_decoding(default), tmp_path / "out" / "generalist", threads=1)
    pipe = Pipeline.load([tmp_path / "out"], router="background", use_shipped=False, **ORT)
    assert pipe.options.decode == {"generalist": default} and not recwarn.list
    x = probe_input(16, batch=1, cells=(3, 5))
    with torch.inference_mode():
        diff = pipe.experts["generalist"].model(x) - spec.with_decoding(default).build()(x)
    assert diff.abs().max() < 1e-3


def test_lite0_fpn_router_exports_with_dynamic_sizes_and_routes_like_torch(tmp_path: Path) -> None:
    """The coming router (FPN over tu-tf_efficientnet_lite0, timm 'same' padding, gray_unit input): exported
    from its folder, loaded from the ONNX folder, it gives torch's probabilities at sizes never traced."""
    from ensemble_color.train.router import build_model, export_router

    torch.manual_seed(0)
    net = build_model("FPN", "tu-tf_efficientnet_lite0")
    src = export_router(net, tmp_path / "lite0", {"input_size": 128, "input_mapping": "gray_unit"}, fp16=False)
    block = export_router_folder(src, tmp_path / "out", threads=1)
    assert block["parity_max_abs_prob"] < 1e-3
    table = RoutingTable.load()
    ref, ours = smp_router(src, table).eval(), onnx_router(tmp_path / "out", table, threads=1)
    assert isinstance(ours.segmenter, OrtModel) and ours.route_classes == ref.route_classes
    assert ours.size_multiple == ref.size_multiple and ours.input_size == ref.input_size == 128
    for h, w in [(97, 131), (200, 77), (128, 128)]:  # segmenter sizes 96x128, 128x64, 128x128
        L = torch.rand(1, 1, h, w) * 100
        with torch.inference_mode():
            p_ref, p_ours = ref(L), ours(L)
        assert p_ours.shape == p_ref.shape == (1, len(ref.route_classes), h, w)
        assert (p_ours - p_ref).abs().max() < 1e-3


@pytest.mark.parametrize(("extra", "error", "message"), [
    ({"backend": "nope", "onnx": {}}, RouterConfigError, "backend 'nope' is unknown"),
    ({"input_size": 4.5, "onnx": {}}, RouterConfigError, "input_size 4.5"),
    ({"onnx": {"size_multiple": 0}}, OnnxModelError, "size_multiple"), ({"onnx": []}, OnnxModelError, "'onnx' object")])
def test_an_exported_router_folder_reads_its_config_as_the_smp_one_does(tmp_path: Path, extra, error, message) -> None:
    """Same checks and messages as an smp folder's config (routing.router_settings), before the graph is read."""
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    (tmp_path / "config.json").write_text(json.dumps({"ensemble_color": extra}))
    with pytest.raises(error, match=message):
        onnx_router(tmp_path, RoutingTable.load())


def test_in_memory_router_conversion_keeps_the_torch_side_of_the_router() -> None:
    """Only the segmenter moves: temperature, feather, table and sizes are the torch router's."""
    from ensemble_color.eval.router import net_router
    from ensemble_color.train.router import build_model

    torch.manual_seed(1)
    ref = net_router(build_model("FPN", "tu-tf_efficientnet_lite0"), input_size=96, input_mapping="gray_unit")
    ref.temperature, ref.feather = 2.0, 1.5
    ref.eval()
    ours = router_on_onnxruntime(ref, threads=1)
    assert (ours.temperature, ours.feather, ours.input_size) == (2.0, 1.5, 96)
    assert ours.name.endswith("@onnxruntime") and isinstance(ours.segmenter, OrtModel)
    L = torch.rand(2, 1, 75, 113) * 100
    with torch.inference_mode():
        assert (ours(L) - ref(L)).abs().max() < 1e-3


@pytest.fixture
def lite0_router_folder(tmp_path: Path) -> Path:
    """A random FPN Lite0 router folder (the shipped architecture, small input)."""
    from ensemble_color.train.router import build_model, export_router

    torch.manual_seed(2)
    return export_router(build_model("FPN", "tu-tf_efficientnet_lite0"), tmp_path / "lite0",
                         {"input_size": 96, "input_mapping": "gray_unit"}, fp16=False)


def test_router_backend_auto_puts_the_router_on_onnxruntime_and_keeps_the_experts_on_torch(
        tiny_experts: Path, lite0_router_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENSEMBLE_COLOR_CACHE", str(tmp_path / "cache"))
    auto = Pipeline.load([tiny_experts], router=str(lite0_router_folder), use_shipped=False)
    torch_router = Pipeline.load([tiny_experts], router=str(lite0_router_folder), use_shipped=False,
                                 router_backend="torch")
    assert auto.load_options.router_backend == "auto" and auto.router.name.endswith("@onnxruntime")
    assert isinstance(auto.router.segmenter, OrtModel) and not isinstance(torch_router.router.segmenter, OrtModel)
    assert {e.backend for e in auto.experts.values()} == {"torch"}
    image = torch.rand(3, 101, 137)
    a, b = torch_router.colorize(image), auto.colorize(image)
    _same_routing(a, b)
    assert (a.probs - b.probs).abs().max() < 1e-3 and (a.ab_work - b.ab_work).abs().max() < 1e-2
    with pytest.raises(ValueError, match="router_backend"):
        auto.with_options(router_backend="torch")
    with pytest.raises(ValueError, match="unknown router backend"):
        Pipeline.load([tiny_experts], router="background", use_shipped=False,
                      router_backend="tensorrt")


def test_converted_router_is_cached_and_a_bad_cached_graph_is_replaced(
        lite0_router_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ensemble_color.backends.ort as ob

    cache = tmp_path / "cache"
    ref = smp_router(lite0_router_folder, RoutingTable.load()).eval()
    router_on_onnxruntime(ref, threads=1, cache=cache)
    (graph,) = cache.glob("router-*.onnx")
    L = torch.rand(1, 1, 70, 90) * 100

    def no_tracing(*args, **kwargs):
        raise AssertionError("traced again although the cache holds this router")

    with monkeypatch.context() as m:  # same weights: read from the cache, never traced
        m.setattr(ob, "to_onnx_bytes", no_tracing)
        cached = router_on_onnxruntime(ref, threads=1, cache=cache)
    with torch.inference_mode():
        assert (cached(L) - ref(L)).abs().max() < 1e-3
    graph.write_bytes(b"not an onnx graph")
    with pytest.warns(UserWarning, match="ignoring the cached router graph"):
        again = router_on_onnxruntime(ref, threads=1, cache=cache)
    with torch.inference_mode():
        assert (again(L) - ref(L)).abs().max() < 1e-3
    assert graph.read_bytes() != b"not an onnx graph"  # replaced by a fresh conversion
    with torch.no_grad():  # other weights, another key: no stale graph is ever used for them
        next(ref.segmenter.parameters()).add_(0.1)
    router_on_onnxruntime(ref, threads=1, cache=cache)
    assert len(list(cache.glob("router-*.onnx"))) == 2


def test_an_unwritable_cache_costs_a_warning_not_the_router(lite0_router_folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    ref = smp_router(lite0_router_folder, RoutingTable.load()).eval()
    with pytest.warns(UserWarning, match="cannot cache the converted router"):
        ours = router_on_onnxruntime(ref, threads=1, cache=blocker / "cache")
    assert isinstance(ours.segmenter, OrtModel)


def test_backend_is_a_property_of_the_loaded_models(tiny_experts: Path) -> None:
    torch_pipe = Pipeline.load([tiny_experts], router="background", use_shipped=False)
    ort_pipe = Pipeline.load([tiny_experts], router="background", use_shipped=False, **ORT)
    image = torch.rand(3, 83, 121)
    a, b = torch_pipe.colorize(image, per_expert=True), ort_pipe.colorize(image, per_expert=True)
    for name, expert in ort_pipe.experts.items():
        assert expert.backend == "onnxruntime" and isinstance(expert.model, OrtModel)
        assert expert.model.descriptor.extra["backend"] == "onnxruntime"
        assert expert.model.session.get_session_options().intra_op_num_threads == 1  # threads reach sessions
        assert expert.model.descriptor.size_multiple == torch_pipe.experts[name].model.descriptor.size_multiple
    _same_routing(a, b)
    assert (a.ab_work - b.ab_work).abs().max() < 1e-3
    assert set(b.per_expert) == set(a.per_expert)
    with pytest.raises(ValueError, match="backend"):
        ort_pipe.with_options(backend="torch")
    assert ort_pipe.with_options(saturation=1.2).experts is ort_pipe.experts  # other knobs: same models
    with pytest.raises(ValueError, match="unknown backend"):
        Pipeline.load([tiny_experts], router="background", use_shipped=False,
                      backend="tensorrt")


def test_an_onnx_only_plugin_runs_on_onnxruntime_beside_torch_experts(tmp_path: Path, tiny_experts: Path) -> None:
    spec = discover([tiny_experts], RoutingTable.load().known_classes()).experts["birds"]
    export_expert_folder(spec, tmp_path / "onnx" / "birds", threads=1)
    pipe = Pipeline.load([tiny_experts, tmp_path / "onnx"], router="background", use_shipped=False)
    backends = {n: e.backend for n, e in pipe.experts.items()}
    assert backends == {"scenes": "torch", "faces": "torch", "birds": "onnxruntime", "animals": "torch"}
    L = torch.rand(1, 1, 40, 56) * 100
    with torch.inference_mode():
        assert (pipe.experts["birds"].run(L) - spec.build()(L)).abs().max() < 1e-3


@pytest.fixture(scope="module")
def shipped_pipelines() -> tuple[Pipeline, Pipeline]:
    """The shipped router and experts on torch and on onnxruntime (converted in memory)."""
    return (Pipeline.load(device="cpu", use_shipped=True),
            Pipeline.load(device="cpu", use_shipped=True, **ORT))


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    low = torch.nn.functional.interpolate(torch.rand(1, 1, 9, 13, generator=g), size=(211, 301), mode="bicubic",
                                          align_corners=False).clamp(0, 1)[0]
    real = [load_image(REPO / "examples" / name).rgb for name in ("chelsea_gray.jpg", "astronaut_gray.jpg")]
    odd = torch.nn.functional.interpolate(real[1][None], size=(333, 251), mode="bilinear", antialias=True,
                                          align_corners=False)[0]
    return [torch.rand(3, 97, 143, generator=g), low.expand(3, -1, -1), real[0], odd]


def test_shipped_models_match_torch_on_random_and_real_images(shipped_pipelines) -> None:
    torch_pipe, ort_pipe = shipped_pipelines
    assert ort_pipe.router.name.endswith("@onnxruntime")
    worst = 0.0
    for image in _images():
        a, b = torch_pipe.colorize(image), ort_pipe.colorize(image)
        _same_routing(a, b)
        worst = max(worst, float((a.ab_work - b.ab_work).abs().max()))
        assert (a.probs - b.probs).abs().max() < 1e-3
    assert worst < TOL_AB
    assert {e.backend for e in ort_pipe.experts.values()} == {"onnxruntime"}


def test_cli_export_then_run_from_the_exported_folders(tmp_path: Path, shipped_pipelines) -> None:
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(out), "--only", "scenes", "people", "--threads", "1"]) == 0
    summary = json.loads((out / "export.json").read_text())
    assert set(summary["experts"]) == {"scenes", "people"}
    assert summary["router_onnx"]["parity_max_abs_prob"] < 1e-3
    config = json.loads((out / "router" / "config.json").read_text())
    assert config["ensemble_color"]["onnx"]["size_multiple"] == 32
    pipe = Pipeline.load([out / "experts"], router=str(out / "router"), device="cpu", **ORT,
                         enabled=["scenes", "people", "generalist"])
    assert pipe.router.name == "onnx:router" and pipe.experts["scenes"].spec.formats == ("onnx",)
    torch_pipe = shipped_pipelines[0].subset(["scenes", "people", "generalist"])
    image = _images()[2]
    a, b = torch_pipe.colorize(image), pipe.colorize(image)
    _same_routing(a, b)
    assert (a.ab_work - b.ab_work).abs().max() < TOL_AB
    # the colourising CLI runs the exported folders too
    photo = tmp_path / "cat.png"
    from ensemble_color.io import to_pil

    to_pil(image).save(photo)
    assert main([str(photo), "-o", str(tmp_path / "res"), "--backend", "onnxruntime", "--threads", "1",
                 "--router", str(out / "router"), "--experts", str(out / "experts"), "--only", "scenes", "people",
                 "generalist"]) == 0
    assert (tmp_path / "res" / "cat_colorized.png").exists()
