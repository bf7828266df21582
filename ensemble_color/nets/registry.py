"""Architecture registry (timm-style ``register`` / ``create`` / ``list``).

Plugins name their architecture by string in ``expert.json``; this table is how the string
becomes a module. It is filled once, by the decorators in this package's modules, when
``ensemble_color.nets`` is imported, and only read afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ModelDescriptor:
    """What a loaded model supports (spandrel-style), so callers never guess.

    ``size_multiple``: input H and W must be multiples of it (the pipeline pads).
    ``supports_half``: safe to run under fp16 autocast on CUDA.
    ``input_size``: the working size it was trained at (pixels, short side of its crops).
    """

    architecture: str
    size_multiple: int
    supports_half: bool = True
    input_size: int = 128
    extra: dict[str, Any] = field(default_factory=dict)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_TINY_CONFIGS: dict[str, dict[str, Any]] = {}


def register_architecture(name: str, tiny_config: dict[str, Any] | None = None):
    """Decorator: make ``builder(**config) -> nn.Module`` creatable by ``name``.

    ``tiny_config`` is a small configuration the test-suite loops over (fast, random weights).
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"architecture {name!r} registered twice")
        _BUILDERS[name] = builder
        _TINY_CONFIGS[name] = dict(tiny_config or {})
        return builder

    return wrap


def create_model(name: str, **config: Any) -> nn.Module:
    """Build architecture ``name`` with ``config`` (random weights). KeyError names the choices."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(_BUILDERS))}") from None
    return builder(**config)


def list_architectures() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_BUILDERS)


def tiny_config(name: str) -> dict[str, Any]:
    """A fast configuration of ``name`` for tests."""
    return dict(_TINY_CONFIGS[name])
