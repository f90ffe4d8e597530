"""The RUN/ contract on disk: where ``ufl train`` puts things, and how later stages rebuild a trained model.

RUN/ holds (see docs/contracts.md):
  config.json            the fully resolved TrainConfig (preset + overrides)
  data/metadata.json     a copy of DATA/metadata.json (sample shape, normalization, source)
  data/stats.npz         a copy of DATA/stats.npz (the normalization statistics)
  checkpoints/           tf.train.Checkpoint(model=..., optimizer=..., step=..., ...) + CheckpointManager
  logs/                  TensorBoard event files
  plots/                 filters.png, reconstructions.png, loss.png
  metrics.json           final figures

The copies under data/ make RUN/ self-contained: export needs the normalization statistics, and DATA/ may
be gone by then. Export restores only the ``model`` entry of the checkpoint (``expect_partial``).
"""
from __future__ import annotations

import json
import os
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf

from ufl.config.base import ConfigError
from ufl.pipeline.tfrecord import load_stats

CONFIG_FILE = "config.json"
DATA_COPY_DIR = "data"
CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
PLOT_DIR = "plots"
METRICS_FILE = "metrics.json"


class TrainedModel(NamedTuple):
    """A model rebuilt from RUN/ with everything export and evaluation need.

    Attributes:
      model: the FeatureLearner with its trained weights restored.
      config: RUN/config.json as a dict.
      metadata: the DATA/ metadata the model was trained on (``patch_size``, ``channels``, ``normalization``).
      stats: the normalization statistics (arrays of DATA/stats.npz).
      checkpoint: path of the restored checkpoint.
    """

    model: object
    config: dict
    metadata: dict
    stats: Dict[str, np.ndarray]
    checkpoint: str


def sample_shape_of(metadata: dict) -> Tuple[int, int, int]:
    """``(P, P, C)`` of one sample from DATA/ metadata."""
    rows, cols = metadata["patch_size"]
    return int(rows), int(cols), int(metadata["channels"])


def read_json(path: str) -> dict:
    with tf.io.gfile.GFile(path, "r") as handle:
        return json.load(handle)


def load_run_files(run_dir: str) -> Tuple[dict, dict, Dict[str, np.ndarray]]:
    """``(config, metadata, stats)`` of RUN/; raises ConfigError naming the missing file."""
    config_path = os.path.join(run_dir, CONFIG_FILE)
    metadata_path = os.path.join(run_dir, DATA_COPY_DIR, "metadata.json")
    for path in (config_path, metadata_path):
        if not tf.io.gfile.exists(path):
            raise ConfigError(f"run {run_dir!r} is invalid; it has no {os.path.relpath(path, run_dir)} "
                              "(train it first with 'ufl train PRESET --data DATA --out RUN')")
    stats = load_stats(os.path.join(run_dir, DATA_COPY_DIR))
    return read_json(config_path), read_json(metadata_path), stats


def load_trained_model(run_dir: str, *, checkpoint: Optional[str] = None) -> TrainedModel:
    """Rebuilds the model of RUN/ and restores its newest (or the given) checkpoint.

    The model is built from ``config["model"]`` (its ``kind`` names a registered FeatureLearner) and called
    once on zeros of shape ``(1, patch_dim)`` so that its variables exist before the restore.
    """
    from ufl.trainers.registry import build_model

    config, metadata, stats = load_run_files(run_dir)
    model = build_model(config["model"], sample_shape_of(metadata))
    model(tf.zeros([1, model.patch_dim]), training=False)
    path = checkpoint or tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))
    if not path:
        raise ConfigError(f"run {run_dir!r} is invalid; it has no checkpoint under "
                          f"{CHECKPOINT_DIR}/ (training has not saved one yet)")
    tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    return TrainedModel(model, config, metadata, stats, path)


HISTORY_FILE = "history.jsonl"
#: What ``--restart`` removes from RUN/ (everything ``ufl train`` writes there, nothing else).
RUN_OUTPUTS = (CHECKPOINT_DIR, LOG_DIR, PLOT_DIR, METRICS_FILE)


def prepare_run_dir(run_dir: str, config: dict, data_dir: str, *, restart: bool, write: bool) -> bool:
    """Checks RUN/ against ``config`` and readies it; returns True when training starts over.

    Refuses a RUN/ made by a different preset unless ``restart``; with ``restart`` removes RUN/'s previous
    outputs. When ``write`` (the chief), saves ``config.json`` and copies DATA/'s metadata and statistics.
    """
    config_path = os.path.join(run_dir, CONFIG_FILE)
    previous = read_json(config_path) if tf.io.gfile.exists(config_path) else None
    if previous is not None and previous.get("preset") != config["preset"] and not restart:
        raise ConfigError(f"run {run_dir!r} was made by preset {previous.get('preset')!r}, not "
                          f"{config['preset']!r}; use another --out, or --restart to discard it")
    fresh = restart or not tf.io.gfile.exists(os.path.join(run_dir, CHECKPOINT_DIR, "checkpoint"))
    if write:
        if restart:
            for name in RUN_OUTPUTS:
                path = os.path.join(run_dir, name)
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                elif tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)
        for name in (CHECKPOINT_DIR, LOG_DIR, PLOT_DIR, DATA_COPY_DIR):
            tf.io.gfile.makedirs(os.path.join(run_dir, name))
        write_json(config_path, config)
        for name in ("metadata.json", "stats.npz"):
            source = os.path.join(data_dir, name)
            if tf.io.gfile.exists(source):
                tf.io.gfile.copy(source, os.path.join(run_dir, DATA_COPY_DIR, name), overwrite=True)
    return fresh


def write_json(path: str, value: dict) -> None:
    """Writes JSON through a temporary sibling and a rename, so readers never see half a file."""
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as handle:
        handle.write(json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _jsonable(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def append_history(run_dir: str, record: dict) -> None:
    """Appends one line to RUN/logs/history.jsonl (the loss curve behind plots/loss.png)."""
    path = os.path.join(run_dir, LOG_DIR, HISTORY_FILE)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, default=_jsonable) + "\n")


def read_history(run_dir: str) -> list:
    path = os.path.join(run_dir, LOG_DIR, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def truncate_history(run_dir: str, step: int) -> None:
    """Drops history records after ``step`` (written after the checkpoint a resumed run starts from)."""
    records = read_history(run_dir)
    kept = [record for record in records if record.get("step", 0) <= step]
    if len(kept) != len(records):
        path = os.path.join(run_dir, LOG_DIR, HISTORY_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(path + ".tmp", path)
