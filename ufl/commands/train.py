"""`ufl train PRESET --data DATA --out RUN`: train a feature learner with the one distributed loop."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
from typing import Any, Dict, Mapping, Optional

from ufl.config.base import ConfigError
from ufl.config.preprocess import PreprocessConfig
from ufl.config.train import (LOCATION_FIELDS, STRATEGIES, TrainConfig, apply_overrides, parse_assignment)

EXAMPLES = """examples:
  ufl train --list-presets
  ufl train sparse-coding --data data/ --out run/
  ufl train sparse-coding --data data/ --out run/ --epochs 2 --set model.n_atoms=64 --set model.sparsity_weight=0.2
  ufl train dense-ae --data digits/ --out run-ae/ --set optimizer.learning_rate=0.5
  ufl train dense-ae --data digits/ --out run-ae/ --batch-size 128 --restart

Rerunning the same command resumes RUN/ from its newest readable checkpoint (also after a crash or kill -9);
a finished RUN/ rerun with the same settings changes nothing, and a larger --epochs trains on. --restart
discards RUN/'s checkpoints, logs, plots and metrics and starts over. With TF_CONFIG set, every
worker runs the same command (MultiWorkerMirroredStrategy); only the chief writes RUN/.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a preset (sparse coding, autoencoders, Foldiak) on DATA/ into RUN/",
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", nargs="?", help="preset name (see --list-presets)")
    parser.add_argument("--data", help="DATA/ directory written by 'ufl preprocess'")
    parser.add_argument("--out", help="RUN/ directory to write (resumed when it exists)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's global batch size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a setting the preset uses, e.g. model.n_atoms=64, epochs=2, "
                        "steps_per_execution=10, jit_compile=false, optimizer.learning_rate=0.1 (for models "
                        "with an outer optimizer); values parsed as JSON when possible; repeatable")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None,
                        help="tf.distribute strategy (default auto: MultiWorker when TF_CONFIG is set, "
                        "Mirrored with several GPUs, else one device)")
    parser.add_argument("--restart", action="store_true", help="discard RUN/'s previous training and start over")
    parser.add_argument("--skip-corrupt-records", action="store_true",
                        help="train on the readable records of a truncated or corrupt DATA/ shard (counted and "
                        "reported at the end) instead of stopping with an error")
    parser.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    parser.set_defaults(run=run)


def optimizer_arguments(name: str) -> list:
    """Constructor arguments of the tf_keras optimizer ``name`` (settable as ``optimizer.<argument>``).

    Looked up on the class, without creating an optimizer: creating TensorFlow state before a
    MultiWorkerMirroredStrategy exists would break it.
    """
    import inspect

    import tf_keras

    classes = {cls.__name__.lower(): cls for cls in vars(tf_keras.optimizers).values()
               if isinstance(cls, type) and issubclass(cls, tf_keras.optimizers.Optimizer)}
    cls = classes.get(str(name).lower())
    if cls is None:
        return ["name"]
    parameters = inspect.signature(cls.__init__).parameters.values()
    return ["name"] + [p.name for p in parameters
                       if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def build_train_config(preset_name: str, *, data: str, out: str, overrides: Optional[Mapping[str, Any]] = None,
                       restart: bool = False, strategy: Optional[str] = None,
                       skip_corrupt_records: bool = False) -> TrainConfig:
    """The TrainConfig of ``preset_name`` with ``overrides`` (``{"model.n_atoms": 64, "epochs": 2}``).

    Refuses keys the preset's model does not use (``optimizer.*`` for a model without an outer optimizer).
    """
    from ufl.trainers.presets import get_preset
    from ufl.trainers.registry import model_arguments, model_class

    preset = get_preset(preset_name)
    overrides = dict(overrides or {})
    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(TrainConfig) if f.name not in LOCATION_FIELDS}
    unknown = sorted(set(preset.train) - set(defaults))
    if unknown:
        raise ConfigError(f"preset {preset.name!r} train settings {unknown} are invalid; use TrainConfig "
                          f"fields: {', '.join(sorted(defaults))}")
    settings = {**defaults, **preset.train, "model": dict(preset.model)}
    kind = overrides.get("model.kind", settings["model"].get("kind"))
    optimizer_name = overrides.get("optimizer.name", dict(settings["optimizer"]).get("name", "adam"))
    model_keys = set(model_arguments(kind)) | (set(preset.model) if kind == preset.model.get("kind") else set())
    model_spec = {**settings["model"], **{key.partition(".")[2]: value for key, value in overrides.items()
                                          if key.startswith("model.")}}
    uses_optimizer = model_class(kind).trains_with_optimizer(model_spec)
    settings = apply_overrides(settings, overrides, model_keys=model_keys,
                               optimizer_keys=optimizer_arguments(optimizer_name) if uses_optimizer else [])
    if strategy is not None:
        settings["strategy"] = strategy
    settings["restart"] = bool(restart or settings.get("restart", False))
    settings["skip_corrupt_records"] = bool(skip_corrupt_records or settings.get("skip_corrupt_records", False))
    if not data or not out:
        raise ConfigError(f"data {data!r} / out {out!r} is invalid; give both --data DATA and --out RUN")
    return TrainConfig(preset=preset.name, data=data, out=out, **settings)


def describe_presets() -> str:
    """Each preset: name, description, model, training settings, data recipe and reference figures."""
    from ufl.trainers.presets import all_presets

    lines = []
    for name, preset in sorted(all_presets().items()):
        lines.append(f"{name}\n    {preset.description}")
        lines.append(f"    model:     {json.dumps(preset.model)}")
        if preset.train:
            lines.append(f"    train:     {json.dumps(preset.train)}")
        if preset.data:
            options = {f.name for f in dataclasses.fields(PreprocessConfig)}
            recipe = " ".join(f"--{key.replace('_', '-')} {_cli_value(value)}" for key, value in preset.data.items()
                              if key in options and key not in ("source", "out") and value is not None)
            lines.append(f"    data:      ufl preprocess --source {preset.data.get('source', 'SOURCE')} "
                         f"--out DATA {recipe}".rstrip())
            for key, value in preset.data.items():
                if key not in options:
                    lines.append(f"    {key.replace('_', ' ')}: {value}")
        if preset.reference:
            figures = ", ".join(f"{key} {value}" for key, value in preset.reference.items() if key != "source")
            source = preset.reference.get("source")
            lines.append(f"    reference: {figures}" + (f" ({source})" if source else ""))
        if preset.full_run:
            lines.append(f"    full run:  {preset.full_run}")
    return "\n".join(lines) if lines else "no presets are installed"


def _cli_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def import_tensorflow_with_tf_keras() -> None:
    """Imports TensorFlow with tf_keras as its Keras, unless it is imported already or the user set
    TF_USE_LEGACY_KERAS.

    ufl's models are tf_keras (Keras 2); by default TensorFlow's start-up eagerly imports Keras 3 (and
    scikit-learn through it), about 1.3 s of every ``ufl train``. The variable is removed again after the
    import, so processes the caller starts later see the environment it had.
    """
    if "tensorflow" in sys.modules or "TF_USE_LEGACY_KERAS" in os.environ:
        return
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        importlib.import_module("tensorflow")
    finally:
        del os.environ["TF_USE_LEGACY_KERAS"]


def run(args) -> int:
    import_tensorflow_with_tf_keras()
    if args.list_presets:
        print(describe_presets())
        return 0
    if not args.preset:
        from ufl.trainers.presets import preset_names

        raise ConfigError(f"preset {args.preset!r} is invalid; name one of: {', '.join(preset_names())} "
                          "(see 'ufl train --list-presets')")
    overrides: Dict[str, Any] = dict(parse_assignment(text) for text in args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    config = build_train_config(args.preset, data=args.data, out=args.out, overrides=overrides,
                                restart=args.restart, strategy=args.strategy,
                                skip_corrupt_records=args.skip_corrupt_records)
    from ufl.trainers.strategy import choose_strategy

    strategy = choose_strategy(config.strategy)
    from ufl.trainers.train_loop import train

    metrics = train(config, strategy=strategy)
    figures = {key: metrics.get(key) for key in ("train_objective", "eval_objective", "mean_nonzeros",
                                                   "examples_per_second", "steps", "wall_seconds",
                                                   "skipped_corrupt_records")}
    print("ufl train: done " + json.dumps({k: v for k, v in figures.items() if v is not None}))
    return 0
