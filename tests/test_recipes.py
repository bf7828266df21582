"""The training recipes in ``scripts/`` against the CLI they call.

Why: a recipe is the record of how a shipped weight was made, and it is only ever *run* on a long training
job; a flag renamed in a trainer, or a typo in a stage added later, would surface hours into a run on a fresh
machine, or never. Every stage of every recipe is printed with ``--dry-run`` and each printed command must
parse with the parser the CLI would use, without building a model or reading data.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from ensemble_color.cli import evaluate_parser, train_parser

REPO = Path(__file__).resolve().parents[1]
PREFIX = ["python", "-m", "ensemble_color"]

#: (recipe, environment) for every stage and switch the recipes document
CASES = [
    ("train_distill.sh", {}),
    ("train_distill.sh", {"VERSION": "2"}),
    ("train_distill.sh", {"VERSION": "3", "RESUME": "1", "STOP": "500"}),
    ("train_experts.sh", {}),
    ("train_experts.sh", {"VERSION": "2", "RESUME": "1"}),
    ("train_experts.sh", {"DECODER": "256 128 64", "ONLY": "birds"}),
    ("train_experts.sh", {"WEIGHTS": "0.6 0.4", "ONLY": "scenes"}),
    ("train_experts.sh", {"INIT": "scratch"}),
    ("train_experts.sh", {"INIT": "inits/resnet18-gray-v3", "ONLY": "people"}),
    ("train_generalist.sh", {}),
    ("train_generalist.sh", {"RESUME": "1"}),
    *[("train_generalist.sh", {"STAGES": stage}) for stage in ("v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10")],
    ("train_generalist.sh", {"STAGES": "v7", "RESUME": "1", "STOP": "1000"}),
    ("train_generalist.sh", {"STAGES": "v10", "RESUME": "1", "STOP": "3400"}),
    ("train_router.sh", {}),
    ("train_router.sh", {"RESUME": "--resume"}),
]


def dry_run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "EXT": "/nonexistent/ext", **env}
    return subprocess.run(["bash", str(REPO / "scripts" / script), "--dry-run"], capture_output=True, text=True,
                          env=full_env, timeout=60)


def cli_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser ``python -m ensemble_color`` would hand ``argv`` (after the module name) to, and its args."""
    if argv[0] == "train":
        return train_parser(), argv[1:]
    if argv[0] == "evaluate":
        return evaluate_parser(argv[1:])
    raise AssertionError(f"a recipe calls a command this test does not know: {shlex.join(argv)}")


@pytest.mark.parametrize(("script", "env"), CASES, ids=[f"{s}:{e}" for s, e in CASES])
def test_recipe_commands_parse(script: str, env: dict[str, str]) -> None:
    proc = dry_run(script, env)
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]
    assert commands, f"{script} {env} printed no command"
    for argv in commands:
        assert argv[:3] == PREFIX, f"{script} runs something other than the package: {shlex.join(argv)}"
        parser, rest = cli_parser(argv[3:])
        try:
            parser.parse_args(rest)
        except SystemExit as err:  # argparse reports the bad flag on stderr and exits 2
            raise AssertionError(f"{script} {env}: {shlex.join(argv)} does not parse") from err


def test_unknown_distill_version_is_an_error() -> None:
    proc = dry_run("train_distill.sh", {"VERSION": "9"})
    assert proc.returncode != 0
    assert "VERSION must be" in proc.stderr
    assert not proc.stdout.strip()
