import json
import pickle
import warnings

import torch
from conftest import make_expert
from safetensors.torch import save_file

from ensemble_color.pipeline import Pipeline
from ensemble_color.plugins import ENV_VAR, discover, expert_search_path, read_state_dict
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
