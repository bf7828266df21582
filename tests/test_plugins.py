import json
import pickle
import warnings

import pytest
import torch
from conftest import make_expert
from safetensors.torch import save_file

from ensemble_color.pipeline import Pipeline
from ensemble_color.plugins import ENV_VAR, discover, expert_search_path, read_state_dict, write_state_dict
from ensemble_color.routing import RoutingTable

KNOWN = RoutingTable.load().known_classes()


def _reasons(scan):
    return {folder.name: reason for folder, reason in scan.skipped}


def test_good_plugin_is_found_and_loads(tmp_path):
    make_expert(tmp_path, "birds", ["bird"])
    scan = discover([tmp_path], KNOWN)
    assert list(scan.experts) == ["birds"] and not scan.skipped
    model = scan.experts["birds"].build()
    assert model(torch.rand(1, 1, 16, 16) * 100).shape == (1, 2, 16, 16)


def test_bad_plugins_are_skipped_with_reasons(tmp_path):
    make_expert(tmp_path, "good", ["bird"])
    # corrupt weights
    make_expert(tmp_path, "corrupt", ["bird"])
    (tmp_path / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    # pickle instead of safetensors
    make_expert(tmp_path, "pickled", ["bird"])
    state = read_state_dict(tmp_path / "pickled" / "model.safetensors")
    (tmp_path / "pickled" / "model.safetensors").unlink()
    with open(tmp_path / "pickled" / "model.pt", "wb") as f:
        pickle.dump(state, f)
    # a pickle disguised with the safetensors name
    make_expert(tmp_path, "disguised", ["bird"])
    with open(tmp_path / "disguised" / "model.safetensors", "wb") as f:
        pickle.dump(state, f)
    # wrong shape
    make_expert(tmp_path, "wrongshape", ["bird"])
    st = read_state_dict(tmp_path / "wrongshape" / "model.safetensors")
    key = next(k for k in st if k.endswith("weight") and st[k].dim() == 4)
    st[key] = torch.zeros(*st[key].shape[:-1], st[key].shape[-1] + 1, dtype=st[key].dtype)
    save_file(st, str(tmp_path / "wrongshape" / "model.safetensors"))
    # missing and extra tensors
    make_expert(tmp_path, "extra", ["bird"])
    st = read_state_dict(tmp_path / "extra" / "model.safetensors")
    st["evil.payload"] = torch.zeros(3)
    save_file(st, str(tmp_path / "extra" / "model.safetensors"))
    # unknown route, unknown architecture, broken manifest
    make_expert(tmp_path, "unknownroute", ["spaceship"])
    make_expert(tmp_path, "unknownarch", ["bird"])
    m = json.loads((tmp_path / "unknownarch" / "expert.json").read_text())
    m["architecture"] = "vit-huge"
    (tmp_path / "unknownarch" / "expert.json").write_text(json.dumps(m))
    make_expert(tmp_path, "badjson", ["bird"])
    (tmp_path / "badjson" / "expert.json").write_text("{not json")

    scan = discover([tmp_path], KNOWN)
    reasons = _reasons(scan)
    assert list(scan.experts) == ["good"]
    assert "safetensors" in reasons["corrupt"]
    assert "pickle" in reasons["pickled"] and "refused" in reasons["pickled"]
    assert "safetensors" in reasons["disguised"]
    assert "shape" in reasons["wrongshape"]
    assert "unexpected tensors" in reasons["extra"]
    assert "spaceship" in reasons["unknownroute"]
    assert "vit-huge" in reasons["unknownarch"]
    assert "JSON" in reasons["badjson"]


def test_later_folder_overrides_earlier_and_env_var_is_searched(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_expert(a, "birds", ["bird"], seed=1)
    make_expert(b, "birds", ["bird"], seed=2)
    path = expert_search_path([b], env={ENV_VAR: str(a)})
    assert path[-2:] == [a, b]
    scan = discover(path[1:], KNOWN)
    assert scan.experts["birds"].folder == b / "birds"
    assert scan.overridden == [("birds", a / "birds", b / "birds")]


def test_pipeline_warns_and_still_runs_with_a_bad_plugin(tmp_path, tiny_experts):
    (tiny_experts / "broken").mkdir()
    (tiny_experts / "broken" / "expert.json").write_text("[]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = Pipeline.load([tiny_experts], router="background", use_shipped=False)
    assert any("broken" in str(w.message) for w in caught)
    assert set(pipe.experts) == {"scenes", "faces", "birds", "animals"}
    res = pipe.colorize(torch.rand(3, 40, 50))
    assert res.rgb.shape == (3, 40, 50)


def _onnx_expert(folder, mutate=None, input_name="L", channels=2, opset=17, dims=("B", 1, "H", "W")):
    """Write a small valid-looking ONNX expert graph (3x3 conv, L -> ab) as ``folder/model.onnx``; ``mutate``
    edits the ModelProto first. Adds a tiny manifest unless the folder already has one."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((channels, 1, 3, 3), 0.01, np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", [input_name, "weight"], ["ab"], pads=[1, 1, 1, 1])], "expert",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("ab", TensorProto.FLOAT, ["B", channels, "H", "W"])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if mutate is not None:
        mutate(model)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "expert.json").exists():
        (folder / "expert.json").write_text(json.dumps({"name": folder.name, "architecture": "resnet18-deconv",
                                                        "config": {"decoder_widths": [16, 8, 8]}, "routes": ["bird"]}))
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return folder


def _external(model) -> None:
    """The weight claims to live in another file: onnxruntime would open it, wherever it is."""
    from onnx.external_data_helper import set_external_data

    tensor = model.graph.initializer[0]
    set_external_data(tensor, location="/etc/passwd", offset=0, length=72)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")


def _external_constant(model) -> None:
    """Same trick hidden in a Constant node's tensor attribute instead of an initializer."""
    from onnx import helper
    from onnx.external_data_helper import set_external_data

    tensor = model.graph.initializer.pop()
    set_external_data(tensor, location="../../../../etc/shadow")
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["weight"], value=tensor))


def _custom_op(domain: str):
    def mutate(model) -> None:
        from onnx import helper

        model.opset_import.append(helper.make_opsetid(domain, 1))
        model.graph.node.append(helper.make_node("Evil", ["ab"], ["ab2"], domain=domain))
        model.graph.output[0].name = "ab2"
    return mutate


def _local_function(model) -> None:
    from onnx import helper

    model.functions.append(helper.make_function("", "Twice", ["x"], ["y"], [helper.make_node("Add", ["x", "x"], ["y"])],
                                                [helper.make_opsetid("", 17)]))


def _nan_output(model) -> None:
    """Valid, dynamic, right names and shapes, but returns log(-|conv|): NaN or -inf everywhere."""
    from onnx import helper

    model.graph.node[0].output[0] = "conv"
    model.graph.node.extend([helper.make_node("Abs", ["conv"], ["pos"]), helper.make_node("Neg", ["pos"], ["neg"]),
                             helper.make_node("Log", ["neg"], ["ab"])])


def test_hostile_and_broken_onnx_plugins_are_skipped_with_reasons(tmp_path, tiny_experts):
    pytest.importorskip("onnxruntime", reason="onnx and onnxruntime (core dependencies) are not installed here")
    pytest.importorskip("onnx", reason="onnx and onnxruntime (core dependencies) are not installed here")
    root = tmp_path / "plugins"
    _onnx_expert(root / "onnxonly")
    make_expert(root, "both", ["bird"])
    _onnx_expert(root / "both")
    _onnx_expert(root / "external", _external)
    _onnx_expert(root / "externalconst", _external_constant)
    _onnx_expert(root / "customop", _custom_op("com.example.evil"))
    _onnx_expert(root / "contribop", _custom_op("com.microsoft"))
    _onnx_expert(root / "localfunction", _local_function)
    _onnx_expert(root / "oldopset", opset=9)
    _onnx_expert(root / "wrongname", input_name="image")
    _onnx_expert(root / "wrongchannels", channels=3)
    _onnx_expert(root / "static", dims=(1, 1, 32, 32))  # traced without dynamic axes
    _onnx_expert(root / "nan", _nan_output)
    _onnx_expert(root / "garbage")
    (root / "garbage" / "model.onnx").write_bytes(b"\x08\xff\xff\xff\xff\x0fgarbage" * 10)
    _onnx_expert(root / "pickled")
    (root / "pickled" / "model.onnx").write_bytes(pickle.dumps({"weight": [1.0]}))
    make_expert(root, "badbeside", ["bird"])  # good weights do not excuse a bad graph next to them
    _onnx_expert(root / "badbeside", _custom_op("com.example.evil"))

    scan = discover([root], KNOWN)
    reasons = _reasons(scan)
    assert set(scan.experts) == {"onnxonly", "both"}
    assert scan.experts["onnxonly"].formats == ("onnx",) and scan.experts["onnxonly"].backends == ("onnxruntime",)
    assert scan.experts["both"].formats == ("safetensors", "onnx")
    assert all(r.startswith("model.onnx: ") for r in reasons.values())
    assert "external data: refused" in reasons["external"]
    assert "external data: refused" in reasons["externalconst"]
    assert "'com.example.evil'" in reasons["customop"] and "custom operators are refused" in reasons["customop"]
    assert "'com.microsoft'" in reasons["contribop"]
    assert "function" in reasons["localfunction"]
    assert "opset 9" in reasons["oldopset"]
    assert "'image'" in reasons["wrongname"] and "'L'" in reasons["wrongname"]
    assert "3 channels" in reasons["wrongchannels"]
    assert "probe" in reasons["static"]
    assert "non-finite" in reasons["nan"]
    assert "not a readable ONNX" in reasons["garbage"]
    assert "not a readable ONNX" in reasons["pickled"]
    assert "custom operators" in reasons["badbeside"]
    # the good ONNX-only plugin colours through the same pipeline (on onnxruntime, beside torch experts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = Pipeline.load([tiny_experts, root], router="background", use_shipped=False)
    assert any("external data: refused" in str(w.message) for w in caught)  # skips are warned, with the reason
    assert pipe.experts["onnxonly"].backend == "onnxruntime" and pipe.experts["scenes"].backend == "torch"
    ab = pipe.experts["onnxonly"].run(torch.full((1, 1, 20, 30), 50.0))
    assert ab.shape == (1, 2, 20, 30) and torch.allclose(ab[..., 5:-5, 5:-5], torch.full((1, 2, 10, 20), 4.5))


def test_onnx_plugin_without_onnxruntime_is_skipped_with_the_install_hint(tmp_path, monkeypatch):
    from ensemble_color.backends import onnx_contract as onnx_backend

    def missing(name):
        raise onnx_backend.OnnxUnavailableError(f"{name} is not installed ({onnx_backend.INSTALL_HINT})")

    monkeypatch.setattr(onnx_backend, "_import", missing)
    (tmp_path / "onnxonly").mkdir()
    (tmp_path / "onnxonly" / "model.onnx").write_bytes(b"\x08\x07")
    manifest = {"name": "onnxonly", "architecture": "resnet18-deconv", "routes": ["bird"]}
    (tmp_path / "onnxonly" / "expert.json").write_text(json.dumps(manifest))
    make_expert(tmp_path, "weights", ["bird"])
    scan = discover([tmp_path], KNOWN)
    assert list(scan.experts) == ["weights"]
    assert "not installed" in _reasons(scan)["onnxonly"] and "[onnx]" in _reasons(scan)["onnxonly"]


def test_written_weights_round_trip_in_fp16_and_get_a_plain_files_mode(tmp_path):
    """Weights (plugins, router, trunk, resume points) go through one writer: atomic, fp16 on request, and
    not left private to their writer (the 0o600 of a temporary file)."""
    import os
    import stat

    from safetensors import safe_open

    tensors = {"w": torch.randn(3, 4), "steps": torch.tensor([7])}
    old = os.umask(0o022)
    try:
        out = write_state_dict(tmp_path / "model.safetensors", tensors, fp16=True, metadata={"format": "x"})
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    back = read_state_dict(out)
    assert back["w"].dtype == torch.float16 and torch.allclose(back["w"].float(), tensors["w"], atol=1e-2)
    assert back["steps"].dtype == torch.int64 and back["steps"].item() == 7  # integers are never halved
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"format": "x"}
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["model.safetensors", "plain"]  # no temporary left
