"""The shipped weights: package data, one named entry per shipped folder, each with its card and preprocessing."""

from __future__ import annotations

from ensemble_color.plugins import discover, expert_search_path
from ensemble_color.routing import RoutingTable
from ensemble_color.weights import ExpertWeights, RouterWeights, shipped_experts_dir, weights_root


def test_every_shipped_folder_is_a_named_entry_and_back() -> None:
    folders = {p.name for p in shipped_experts_dir().iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders == {e.value.name for e in ExpertWeights}
    for entry in (*ExpertWeights, *RouterWeights):
        w = entry.value
        assert w.folder.is_relative_to(weights_root())
        assert (w.folder / "model.safetensors").is_file(), w.name
        assert w.card.is_file() or (w.kind == "expert" and (w.folder.parent / "README.md").is_file()), w.name


def test_entries_carry_their_preprocessing_and_manifest() -> None:
    router = RouterWeights.DEFAULT.value
    assert router.preprocessing["input_mapping"] == "gray_unit" and router.preprocessing["input_size"] == 256
    assert ExpertWeights.PEOPLE.value.meta["routes"] == ["person"]
    assert ExpertWeights.GENERALIST.value.meta["architecture"] == "multihead-lite"


def test_shipped_experts_are_first_on_the_plugin_path_and_all_load() -> None:
    path = expert_search_path(env={})
    assert path[0] == shipped_experts_dir()
    scan = discover(path, RoutingTable.load().known_classes())
    assert not scan.skipped and set(scan.experts) == {e.value.name for e in ExpertWeights}
