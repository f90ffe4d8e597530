"""The RUN/ contract on disk: where ``ufl train`` puts things, and how later stages rebuild a trained model.

RUN/ holds (see ../shared/DESIGN.md):
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
    stats_path = os.path.join(run_dir, DATA_COPY_DIR, "stats.npz")
    stats: Dict[str, np.ndarray] = {}
    if tf.io.gfile.exists(stats_path):
        with tf.io.gfile.GFile(stats_path, "rb") as handle:
            with np.load(handle) as archive:
                stats = {key: archive[key] for key in archive.files}
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
