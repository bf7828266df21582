"""Materialise the v0 models (as shipped before the ImageNet rebuild) from git, for side-by-side comparisons.

    python bench/v0_models.py OUT [--commit bfdeb0c]

Writes, from the repository's history (nothing is downloaded):

* ``OUT/pipeline/experts/<name>/`` and ``OUT/pipeline/router/``: the v0 plugin folders unchanged, so
  ``Pipeline.load([OUT/pipeline/experts], use_shipped=False, router=OUT/pipeline/router)`` is the v0 pipeline;
* ``OUT/methods/<name>-v0/``: the same weights renamed ``<name>-v0`` and claiming no route (fallback only,
  never chosen over the shipped fallback, which is scanned first), so ``evaluate --experts OUT/methods
  --methods expert:generalist expert:generalist-v0`` scores old and new on the same images in one run
  without changing what the shipped pipeline does.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: the last commit before the ImageNet-initialised rebuild (router v3, the turn-1 experts)
V0_COMMIT = "bfdeb0c"


def extract(commit: str, paths: list[str], dest: Path) -> None:
    """``git archive`` of ``paths`` at ``commit`` unpacked into ``dest`` (regular files only)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, *paths],
                          check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() and not member.name.startswith(("/", "..")) and ".." not in Path(member.name).parts:
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())


def renamed_copies(experts: Path, out: Path, suffix: str = "-v0", only: list[str] | None = None,
                   config: dict | None = None) -> list[str]:
    """Every expert of ``experts`` (or those named in ``only``) as ``<name><suffix>``, routes emptied and marked
    fallback (a method to score side by side, not a route owner); ``config`` entries override the manifests'
    (e.g. ``{"ab_gain": 1.0}``: the same weights at another output gain) and a ``None`` entry removes the key
    (the model's default applies)."""
    names = []
    for manifest_path in sorted(experts.glob("*/expert.json")):
        manifest = json.loads(manifest_path.read_text())
        if only is not None and manifest["name"] not in only:
            continue
        name = f"{manifest['name']}{suffix}"
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes((manifest_path.parent / "model.safetensors").read_bytes())
        manifest.update(name=name, routes=[], fallback=True)
        merged = {**manifest.get("config", {}), **(config or {})}
        manifest["config"] = {k: v for k, v in merged.items() if v is not None}
        (folder / "expert.json").write_text(json.dumps(manifest, indent=2) + "\n")
        names.append(name)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="output folder (outside the repository's plugin folders)")
    ap.add_argument("--commit", default=V0_COMMIT)
    args = ap.parse_args()
    pipeline = args.out / "pipeline"
    extract(args.commit, ["experts", "router"], pipeline)
    names = renamed_copies(pipeline / "experts", args.out / "methods")
    print(f"v0 at {args.commit}: {pipeline} (pipeline), {args.out / 'methods'} ({', '.join(names)})")


if __name__ == "__main__":
    main()
