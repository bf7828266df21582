"""bench/timing_env.py: every timing report says which threading variables it ran under."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("timing_env", Path(__file__).parent.parent / "bench" / "timing_env.py")


@pytest.fixture
def timing_env():
    module = importlib.util.module_from_spec(SPEC)
    SPEC.loader.exec_module(module)
    return module


def test_defaults_are_said_to_be_defaults(monkeypatch, timing_env):
    for name in timing_env.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert timing_env.threading_env() == {}
    assert "defaults" in timing_env.env_note()


def test_passive_wait_policy_is_recorded_and_warned_about(monkeypatch, timing_env):
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert timing_env.threading_env() == {"OMP_WAIT_POLICY": "passive", "OMP_NUM_THREADS": "2"}
    note = timing_env.env_note()
    assert "OMP_NUM_THREADS=2" in note and "slows inference" in note
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "slows" not in timing_env.env_note()
