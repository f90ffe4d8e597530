"""Named presets: a model spec, training settings and the data recipe of a reference experiment.

Each model family defines its presets in its own module as ``PRESETS = [Preset(...), ...]``; this module
collects them lazily (``PRESET_MODULES``) so that ``ufl train --list-presets`` lists every family.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Dict, List

from ufl.config.base import ConfigError

#: Modules that define ``PRESETS``; a missing module is skipped.
PRESET_MODULES = (
    "ufl.trainers.sparse_coding",
    "ufl.trainers.autoencoders",
    "ufl.trainers.conv_autoencoders",
    "ufl.trainers.foldiak",
    "ufl.trainers.cnn_branch",
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named training recipe.

    Attributes:
      name: the name given to ``ufl train`` (e.g. ``sparse-coding``).
      description: one line: what it learns and which experiment it reproduces.
      model: model spec, ``{"kind": <registered kind>, **constructor kwargs}``.
      train: TrainConfig fields (``epochs``, ``batch_size``, ``optimizer``, ...).
      data: the ``ufl preprocess`` options its experiment uses (``source``, ``patch_size``, ``extract``,
        ``normalize``, ...), used by ``ufl run`` and documented in ``--list-presets``.
      reference: the published figures it reproduces, ``{"figure": value, ..., "source": "where from"}``.
      full_run: how long its full ``ufl train`` takes, as measured on a 2-core CPU (shown by
        ``ufl train --list-presets``).
    """

    name: str
    description: str
    model: Dict[str, Any]
    train: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data: Dict[str, Any] = dataclasses.field(default_factory=dict)
    reference: Dict[str, Any] = dataclasses.field(default_factory=dict)
    full_run: str = ""


def idle_run(duration: str, *, note: str = "") -> str:
    """A ``full_run`` measured by ``benchmarks/reproduce.py`` on 2 otherwise idle CPU cores on 2026-12-01:
    ``idle_run("92 s")`` -> ``"92 s of ufl train (2 idle CPU cores, benchmarks/reproduce.py, 2026-12-01)"``."""
    return f"{duration} of ufl train ({note + '; ' if note else ''}2 idle CPU cores, benchmarks/reproduce.py, " \
           "2026-12-01)"


#: Presets registered at run time with ``register_preset`` (extensions and tests).
_REGISTERED: Dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    """Adds a preset besides those of ``PRESET_MODULES`` (a later one with the same name replaces it)."""
    _REGISTERED[preset.name] = preset
    return preset


def all_presets() -> Dict[str, Preset]:
    presets: Dict[str, Preset] = {}
    for module_name in PRESET_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        for preset in getattr(module, "PRESETS", ()):
            presets[preset.name] = preset
    presets.update(_REGISTERED)
    return presets


def preset_names() -> List[str]:
    return sorted(all_presets())


def get_preset(name: str) -> Preset:
    presets = all_presets()
    if name not in presets:
        raise ConfigError(f"preset {name!r} is invalid; use one of: {', '.join(sorted(presets))} "
                          "(see 'ufl train --list-presets')")
    return presets[name]
