"""The package's shape holds: layers import downwards only, no import circle, no module over 400 lines, no
dead public function, no process numbers in the repository, and the front ends agree on what flags mean."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "ensemble_color"
#: front ends: nothing below them imports them
FRONT_ENDS = ("ensemble_color.cli", "ensemble_color.app", "ensemble_color.batch", "ensemble_color.video",
              "ensemble_color.__main__")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        name = ".".join(p.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports() -> dict[str, set[str]]:
    """module -> package modules it imports (relative and absolute, lazy ones included)."""
    mods = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("ensemble_color"):
                target = node.module
            else:
                continue
            for t in [target] + [f"{target}.{a.name}" for a in node.names]:
                if t in mods and t != name and not t.startswith(name + "."):
                    graph[name].add(t)
    return graph


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_no_import_circle() -> None:
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in list(graph):
        if module not in state:
            visit(module, [module])


def test_layers_import_downwards_only() -> None:
    for module, targets in _imports().items():
        if not _in(module, FRONT_ENDS):
            bad = [t for t in targets if _in(t, FRONT_ENDS)]
            assert not bad, f"{module} imports the front end(s) {bad}"
        if _in(module, ("ensemble_color.eval", "ensemble_color.data")):
            assert not [t for t in targets if _in(t, ("ensemble_color.train",))], f"{module} imports training"


def test_every_bench_script_imports() -> None:
    """A bench imports names from the package that refactors move; one that cannot import is a dead figure."""
    names = sorted(p.stem for p in (REPO / "bench").glob("*.py"))
    done = subprocess.run([sys.executable, "-c", f"import {', '.join(names)}"], cwd=REPO / "bench",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_public_function_is_used() -> None:
    """A public top-level function nobody calls (the package, benchmarks, tests, docs; registered ones aside) is dead:
    ``color.saturate_ab`` and ``softencode.empirical_distribution`` lingered that way."""
    sources = [*PACKAGE.rglob("*.py"), *(REPO / "bench").glob("*.py"), *(REPO / "tests").glob("*.py"),
               REPO / "app.py", REPO / "README.md", REPO / "CONTRIBUTING.md"]
    users = [p.read_text() for p in sources]
    text = "\n".join(users)
    dead = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            public = isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and not node.decorator_list
            if public and len(re.findall(rf"\b{node.name}\b", text)) < 2:  # the definition itself is one
                dead.append(f"{path.relative_to(REPO)}:{node.name}")
    assert not dead, f"public functions nothing uses: {dead}"


def test_no_process_numbers_in_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=False).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    pattern = re.compile(r"\b(session|issue) [0-9]", re.IGNORECASE)
    hits = []
    for name in tracked:
        path = REPO / name
        if path.suffix in (".py", ".md", ".sh", ".json", ".toml", ".txt", "") and path.is_file():
            text = path.read_text(errors="ignore")
            hits += [f"{name}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not hits, hits[:10]


def test_list_experts_says_who_colours_the_background_as_the_pipeline_does(capsys: pytest.CaptureFixture) -> None:
    from ensemble_color.cli import main
    from ensemble_color.options import PipelineOptions

    assert main(["--list-experts"]) == 0
    routing = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("routing:"))
    expected = "+".join(PipelineOptions().assign["background"])
    assert f"background → {expected}" in routing
    assert main(["--list-experts", "--assign", "background=scenes"]) == 0
    assert "background → scenes" in capsys.readouterr().out


def test_batch_takes_the_main_commands_flags_with_the_same_meaning() -> None:
    from ensemble_color.batch import build_parser, config_from_args
    from ensemble_color.cli import build_parser as main_parser
    from ensemble_color.options import options_from_args

    flags = ["--assign", "background=scenes+generalist", "--decode", "generalist=regression x1.5", "--no-context",
             "--size", "384", "--saturation", "1.2", "--threads", "1"]
    config = config_from_args(build_parser().parse_args(["in", "out", *flags]))
    _, main_options = options_from_args(main_parser().parse_args(["x.png", *flags]))
    assert config.pipeline.options == main_options
    assert config.pipeline.options.context is None and config.pipeline.options.work_size == 384
    assert config.pipeline.options.assign["background"] == ("scenes", "generalist")
    main_subject = config_from_args(build_parser().parse_args(["in", "out", "--main-subject", "--threads", "1"]))
    assert main_subject.pipeline.options.context == config_from_args(
        build_parser().parse_args(["in", "out", "--threads", "1"])).pipeline.options.context is not None


def test_context_sharing_is_documented_as_it_behaves() -> None:
    from ensemble_color import composite
    from ensemble_color.options import PipelineOptions

    source = (PACKAGE / "composite.py").read_text()
    on_by_default = PipelineOptions().context is not None
    assert ("On by\n#: default" in source or "on by default" in source.lower()) == on_by_default
    assert "Opt-in" not in source
    assert PipelineOptions().context == composite.SUBJECT_CONTEXT_RAMP
