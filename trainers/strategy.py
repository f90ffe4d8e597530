"""Choosing how ufl spreads training over devices and workers: the tf.distribute strategy and the chief.

The strategy is created once by the CLI (``choose_strategy``) and passed to ``train``; a
MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else in the process. The input
that feeds each replica is ``distributed_input.py``; the compiled steps that run on it, ``step_executor.py``.
"""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import tensorflow as tf

from ufl.config.base import ConfigError, require_choice
from ufl.config.train import STRATEGIES


def choose_strategy(name: str = "auto", *, devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """The strategy ``name`` asks for.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` is set, MirroredStrategy with more than one
    GPU, the default strategy otherwise. ``mirrored`` uses ``devices`` (default: every GPU, else every
    logical CPU). ``multiworker`` needs ``TF_CONFIG``.
    """
    require_choice("strategy", name, STRATEGIES)
    tf_config = os.environ.get("TF_CONFIG", "")
    if tf_config:
        try:
            json.loads(tf_config)["cluster"]
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"TF_CONFIG {tf_config!r} is invalid ({error}); set it to JSON such as "
                              '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                              '"task": {"type": "worker", "index": 0}} or unset it') from None
    if name == "auto":
        if tf_config:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        if not tf_config:
            raise ConfigError("strategy 'multiworker' is invalid without TF_CONFIG; set TF_CONFIG to the "
                              "cluster spec on every worker, or use --strategy auto")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
            [d.name for d in tf.config.list_logical_devices("CPU")]
    devices = list(devices)
    # On CPUs, reduce through one device: the collective implementation keys its ops per process, so two
    # MirroredStrategy objects over the same CPUs (e.g. in one test session) would collide.
    cpu_only = all("GPU" not in device.upper() for device in devices)
    return tf.distribute.MirroredStrategy(
        devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice() if cpu_only else None)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes RUN/ (single-process strategies, or the chief / worker 0 of a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The ``--strategy`` name of a strategy object (``default``, ``mirrored``, ``multiworker``), else its class."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return "default"
    return type(strategy).__name__


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """Processes taking part in training (the chief and the workers of TF_CONFIG's cluster; 1 otherwise)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))
