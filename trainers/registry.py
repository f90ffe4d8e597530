"""Registry of model kinds: ``model.kind`` in a TrainConfig names a FeatureLearner class registered here."""
from __future__ import annotations

import copy
import importlib
import inspect
from typing import Callable, Dict, Sequence, Type

from ufl.config.base import ConfigError

_MODEL_KINDS: Dict[str, type] = {}

#: Modules that register model kinds when imported (imported lazily by ``model_class``).
MODEL_MODULES = (
    "ufl.trainers.sparse_coding",
    "ufl.trainers.autoencoders",
    "ufl.trainers.conv_autoencoders",
    "ufl.trainers.foldiak",
    "ufl.trainers.cnn_branch",
)


def register_model(kind: str) -> Callable[[Type], Type]:
    """Class decorator: ``@register_model("sparse_coding")`` makes the class buildable from a config."""
    def decorate(cls: Type) -> Type:
        _MODEL_KINDS[kind] = cls
        cls.kind = kind
        return cls
    return decorate


def _import_model_modules() -> None:
    for module in MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def model_kinds() -> Sequence[str]:
    _import_model_modules()
    return sorted(_MODEL_KINDS)


def model_class(kind: str) -> type:
    _import_model_modules()
    if kind not in _MODEL_KINDS:
        raise ConfigError(f"model kind {kind!r} is invalid; use one of: {', '.join(sorted(_MODEL_KINDS))}")
    return _MODEL_KINDS[kind]


def model_arguments(kind: str) -> Sequence[str]:
    """Constructor arguments of model ``kind`` that a config may set (``model.<argument>``), plus ``kind``:
    the named parameters of its ``__init__`` and the ones it takes through ``**kwargs`` and lists in
    ``extra_arguments``."""
    cls = model_class(kind)
    parameters = inspect.signature(cls.__init__).parameters.values()
    named = [p.name for p in parameters
             if p.name not in ("self", "sample_shape") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return sorted(set(named) | set(getattr(cls, "extra_arguments", ())) | {"kind"})


def build_model(model_spec: dict, sample_shape: Sequence[int]):
    """Builds the FeatureLearner for ``model_spec`` (``kind`` plus constructor arguments).

    The spec is deep-copied: Keras deserializers (regularizers, initializers) may mutate nested config dicts,
    and the spec often is a preset's own dict.
    """
    spec = copy.deepcopy(dict(model_spec))
    cls = model_class(spec.pop("kind"))
    return cls(sample_shape=tuple(sample_shape), **spec)
