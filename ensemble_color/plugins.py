"""Plugin registry: discover expert folders, validate them, load them safely.

One expert = one folder holding ``model.safetensors`` (weights only) and ``expert.json`` (manifest);
``model.onnx`` may stand instead of, or beside, the weights (checked by :mod:`ensemble_color.backends.onnx_contract`).
Plugin files are untrusted: weights are read with safetensors only (never unpickled), the manifest
and every tensor name/shape are checked against the declared architecture *before* anything is
loaded, and a bad folder is skipped with a reason instead of crashing the program.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from .io import atomic_write_bytes, atomic_write_json
from .nets import ModelDescriptor, create_model, list_architectures
from .nets.multihead_unet import with_decoding
from .weights import shipped_experts_dir

MANIFEST = "expert.json"
WEIGHTS = "model.safetensors"
ONNX_WEIGHTS = "model.onnx"  #: an ONNX graph instead of, or beside, the weights (runs on onnxruntime)
ENV_VAR = "ENSEMBLE_COLOR_EXPERTS"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ALLOWED_DTYPES = {"F16", "F32", "BF16", "I64"}


class PluginError(ValueError):
    """A plugin folder that cannot be used; the message says why."""


@dataclass(frozen=True)
class ExpertSpec:
    """A validated expert folder: manifest + where its weights are. Nothing loaded yet."""

    name: str
    folder: Path
    architecture: str
    routes: tuple[str, ...]
    manifest: dict[str, Any]
    fallback: bool = False
    formats: tuple[str, ...] = ("safetensors",)  #: validated model files: "safetensors" and/or "onnx"

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config", {}))

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends that can run it, preferred first: weights run on torch (or converted, on onnxruntime);
        an ONNX graph alone runs on onnxruntime only."""
        return ("torch", "onnxruntime") if "safetensors" in self.formats else ("onnxruntime",)

    def with_decoding(self, name: str) -> ExpertSpec:
        """The same expert decoding as named decoding ``name`` (:data:`.nets.multihead_unet.DECODINGS`) instead of
        as its manifest says; nothing loaded. Only a multi-head generalist with its weights has a decoding to
        choose (an ONNX graph has its own folded in)."""
        if "decodes" not in self.descriptor.extra:
            raise PluginError(f"expert {self.name} ({self.architecture}) has no decoding to choose")
        config = with_decoding(self.config, name)
        if config == self.config:
            return self
        if "safetensors" not in self.formats:
            raise PluginError(f"expert {self.name} ships only {ONNX_WEIGHTS}, its decoding "
                              f"({self.config.get('decode', 'the default')}) folded into the graph")
        return replace(self, manifest={**self.manifest, "config": config})

    def build(self) -> nn.Module:
        """Instantiate the architecture and load the (already validated) weights, in eval mode."""
        if "safetensors" not in self.formats:
            raise PluginError(f"expert {self.name} ships only {ONNX_WEIGHTS}: it has no torch weights")
        model = create_model(self.architecture, **self.config)
        state = read_state_dict(self.folder / WEIGHTS)
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()}, strict=True)
        return model.eval()

    def build_descriptor(self) -> ModelDescriptor:
        with torch.device("meta"):
            return create_model(self.architecture, **self.config).descriptor

    @cached_property
    def descriptor(self) -> ModelDescriptor:
        """:meth:`build_descriptor`, built once per spec (a meta build of the generalist takes ~40 ms)."""
        return self.build_descriptor()


@dataclass
class PluginScan:
    """Result of discovery: usable experts (later folders win by name) and what was skipped, and why."""

    experts: dict[str, ExpertSpec] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    overridden: list[tuple[str, Path, Path]] = field(default_factory=list)

    def warn_skipped(self) -> None:
        for folder, reason in self.skipped:
            warnings.warn(f"skipping expert plugin {folder}: {reason}", stacklevel=2)


def expert_search_path(extra: Sequence[str | Path] = (), env: dict[str, str] | None = None) -> list[Path]:
    """Shipped folder, then ``$ENSEMBLE_COLOR_EXPERTS`` (os.pathsep list), then ``extra`` (``--experts``)."""
    env = os.environ if env is None else env
    from_env = [Path(p) for p in env.get(ENV_VAR, "").split(os.pathsep) if p]
    return [shipped_experts_dir(), *from_env, *(Path(p) for p in extra)]


def _candidate_folders(root: Path) -> Iterable[Path]:
    if (root / MANIFEST).exists():  # a single expert folder passed directly
        yield root
        return
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def discover(search_path: Sequence[Path], known_routes: set[str]) -> PluginScan:
    """Scan every folder of ``search_path`` in order; validate each expert; later names override earlier."""
    scan = PluginScan()
    for root in search_path:
        for folder in _candidate_folders(Path(root)):
            try:
                spec = validate_folder(folder, known_routes)
            except PluginError as err:
                scan.skipped.append((folder, str(err)))
                continue
            if spec.name in scan.experts:
                scan.overridden.append((spec.name, scan.experts[spec.name].folder, folder))
            scan.experts[spec.name] = spec
    return scan


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        raise PluginError(f"no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PluginError(f"{MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise PluginError(f"{MANIFEST} must hold a JSON object")
    return manifest


def _check_manifest(manifest: dict[str, Any], known_routes: set[str]) -> None:
    name, arch, routes = manifest.get("name"), manifest.get("architecture"), manifest.get("routes")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PluginError(f"manifest 'name' must be a lower-case identifier, got {name!r}")
    if arch not in list_architectures():
        raise PluginError(f"unknown architecture {arch!r} (known: {', '.join(list_architectures())})")
    if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
        raise PluginError("manifest 'routes' must be a list of route-class strings")
    if not routes and not manifest.get("fallback", False):
        raise PluginError("manifest 'routes' is empty and the expert is not a fallback")
    unknown = sorted(set(routes) - known_routes)
    if unknown:
        raise PluginError(f"unknown route class(es) {unknown} (no routing table maps to them)")
    if not isinstance(manifest.get("config", {}), dict):
        raise PluginError("manifest 'config' must be an object")


def read_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype, shape) from a safetensors header, without loading the data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise PluginError(f"{path.name} is not a readable safetensors file ({err})") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors from a safetensors file (no pickle involved)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise PluginError(f"{path.name} is not a readable safetensors file ({err})") from None


def write_state_dict(path: Path, tensors: dict[str, torch.Tensor], fp16: bool = False,
                     metadata: dict[str, str] | None = None) -> Path:
    """Write tensors as safetensors, atomically and with a plain file's mode (``io.atomic_write_bytes``);
    ``fp16``: floating-point tensors are stored as float16 (what the repository ships)."""
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(state, metadata))
    return path


def check_tensors(header: dict[str, tuple[str, tuple[int, ...]]], model: nn.Module) -> None:
    """Raise PluginError unless ``header`` has exactly the model's tensors with the right shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing:
        raise PluginError(f"missing tensors: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if extra:
        raise PluginError(f"unexpected tensors: {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}")
    for k, shape in expected.items():
        dtype, got = header[k]
        if got != shape:
            raise PluginError(f"tensor {k} has shape {list(got)}, architecture needs {list(shape)}")
        if dtype not in _ALLOWED_DTYPES:
            raise PluginError(f"tensor {k} has dtype {dtype}, expected a float type")


def check_onnx(path: Path, descriptor: ModelDescriptor) -> None:
    """Raise PluginError unless ``path`` is a safe ONNX expert graph (``backends.onnx_contract.check_graph``) that
    maps a probe L batch to ab of the same size."""
    from .backends.onnx_contract import OnnxModelError, OnnxUnavailableError
    from .backends.ort import validate_expert_file

    try:
        validate_expert_file(path, descriptor)
    except (OnnxModelError, OnnxUnavailableError) as err:
        raise PluginError(f"{ONNX_WEIGHTS}: {err}") from None


def validate_folder(folder: Path, known_routes: set[str]) -> ExpertSpec:
    """Check one plugin folder completely (manifest, weights format, tensor names and shapes; an ONNX
    graph's safety, names and probe shapes). A bad ``model.onnx`` rejects the folder even beside good weights."""
    manifest = _read_manifest(folder)
    _check_manifest(manifest, known_routes)
    weights = folder / WEIGHTS
    formats = tuple(f for f, name in (("safetensors", WEIGHTS), ("onnx", ONNX_WEIGHTS)) if (folder / name).exists())
    if not formats:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise PluginError(f"only pickle weights ({', '.join(pickles)}) found: refused, need {WEIGHTS}")
        raise PluginError(f"no {WEIGHTS} (or {ONNX_WEIGHTS})")
    header = read_header(weights) if "safetensors" in formats else None
    try:
        with torch.device("meta"):
            model = create_model(manifest["architecture"], **manifest.get("config", {}))
    except (TypeError, ValueError) as err:
        raise PluginError(f"bad architecture config {manifest.get('config')} ({err})") from None
    if header is not None:
        check_tensors(header, model)
    if "onnx" in formats:
        check_onnx(folder / ONNX_WEIGHTS, model.descriptor)
    return ExpertSpec(name=manifest["name"], folder=folder, architecture=manifest["architecture"],
                      routes=tuple(manifest["routes"]), manifest=manifest,
                      fallback=bool(manifest.get("fallback", False)), formats=formats)


def export_expert(model: nn.Module, folder: str | Path, manifest: dict[str, Any], fp16: bool = True) -> Path:
    """Write ``model`` as a plugin folder (safetensors + manifest), atomically, and return the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_state_dict(folder / WEIGHTS, model.state_dict(), fp16)
    atomic_write_json(folder / MANIFEST, manifest)
    return folder
