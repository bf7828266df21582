"""The trained weights shipped with the package, as named versions with a ``DEFAULT`` (torchvision's weights-enum
idea): each entry knows its folder (package data, so a plain ``pip install .`` carries it), its model card,
its manifest and the preprocessing its network expects.

    from ensemble_color.weights import ExpertWeights, RouterWeights
    RouterWeights.DEFAULT.folder        # .../ensemble_color/weights/router
    RouterWeights.DEFAULT.card          # its README.md (what it does, figures, limits, licence)
    RouterWeights.DEFAULT.preprocessing # {"input": "L ...", "input_mapping": "gray_unit", "input_size": 256}
    ExpertWeights.PEOPLE.meta["routes"] # ["person"]

Users' own experts are plugin folders (``--experts DIR``, ``$ENSEMBLE_COLOR_EXPERTS``), never written here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any


def weights_root() -> Path:
    """This package's folder of shipped weights (a real directory: the package is installed unzipped)."""
    return Path(str(files(__name__)))


@dataclass(frozen=True)
class WeightsEntry:
    """One shipped weight: ``kind`` (router/expert), ``name``, ``version`` and where it lives."""

    kind: str
    name: str
    version: str
    relative: str  #: folder, relative to :func:`weights_root`

    @property
    def folder(self) -> Path:
        return weights_root() / self.relative

    @property
    def card(self) -> Path:
        return self.folder / "README.md"

    @cached_property
    def meta(self) -> dict[str, Any]:
        """The folder's manifest: ``expert.json`` for an expert, the ``ensemble_color`` block of a router's
        ``config.json``."""
        if self.kind == "expert":
            return json.loads((self.folder / "expert.json").read_text(encoding="utf-8"))
        return json.loads((self.folder / "config.json").read_text(encoding="utf-8")).get("ensemble_color", {})

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What the network expects (the model owns its normalisation; this says which one it owns)."""
        keys = ("input", "input_mapping", "input_size", "decode", "gain")
        source = self.meta | self.meta.get("config", {}) if self.kind == "expert" else self.meta
        return {k: source[k] for k in keys if k in source}


class RouterWeights(Enum):
    """Shipped routers. ``DEFAULT`` is what ``Pipeline.load()`` uses."""

    FPN_LITE0 = WeightsEntry("router", "router", "v11", "router")
    DEFAULT = FPN_LITE0


class ExpertWeights(Enum):
    """Shipped experts (each a plugin folder: ``model.safetensors`` + ``expert.json``)."""

    SCENES = WeightsEntry("expert", "scenes", "1.0", "experts/scenes")
    PEOPLE = WeightsEntry("expert", "people", "1.0", "experts/people")
    BIRDS = WeightsEntry("expert", "birds", "3.0", "experts/birds")
    ANIMALS = WeightsEntry("expert", "animals", "1.0", "experts/animals")
    GENERALIST = WeightsEntry("expert", "generalist", "3.0", "experts/generalist")


def shipped_experts_dir() -> Path:
    """The folder holding every shipped expert plugin (first on the plugin search path)."""
    return weights_root() / "experts"


def router_dir() -> Path:
    """The default router's folder (weights, config, routing table, card)."""
    return RouterWeights.DEFAULT.value.folder
