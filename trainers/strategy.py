"""How ufl spreads training over devices and workers: the tf.distribute strategy, the chief, and the
distributed input pipeline that feeds each replica its share of the global batch.

The strategy is created once by the CLI (``choose_strategy``) and passed to ``train``; a
MultiWorkerMirroredStrategy must exist before TensorFlow runs anything else in the process.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from ufl.config.base import ConfigError, require_choice
from ufl.config.train import STRATEGIES
from ufl.pipeline import read_patches
from ufl.pipeline.tfrecord import shard_files

#: Splits up to this many bytes are read once into memory and shuffled by index each epoch (exact,
#: cheap and reproducible); larger ones stream from the TFRecords with a shuffle buffer.
IN_MEMORY_BYTES = 1 << 30


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


class DistributedInput:
    """Per-epoch distributed datasets of one DATA/ split, split across replicas.

    Each replica receives ``global_batch_size / num_replicas`` examples per step. Every epoch has a fixed
    number of global steps (``steps_per_epoch``, computed from the split's size), and each input pipeline
    repeats its data, so workers with unequal shards never run out mid-step.

    Epoch ``e`` is ordered by ``seed + e`` alone, so a resumed run skips exactly the batches it consumed.
    """

    def __init__(self, strategy: tf.distribute.Strategy, data_dir: str, split: str, *,
                 global_batch_size: int, count: int, patch_dim: int, shuffle: bool, seed: int = 0,
                 with_labels: bool = False):
        self.strategy = strategy
        self.data_dir, self.split = data_dir, split
        self.global_batch_size = global_batch_size
        self.shuffle, self.seed, self.with_labels = shuffle, seed, with_labels
        self.count = count
        self.steps_per_epoch = count // global_batch_size
        self.in_memory = count * patch_dim * 4 <= IN_MEMORY_BYTES
        self._arrays: Dict[int, Dict[str, np.ndarray]] = {}
        self._tensors: Optional[Dict[str, tf.Tensor]] = None

    def epoch(self, epoch: int, *, skip_steps: int = 0):
        """The distributed dataset of epoch ``epoch`` (0-based), without its first ``skip_steps`` steps."""
        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            batch = context.get_per_replica_batch_size(self.global_batch_size)
            replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
            skip_batches = skip_steps * replicas_per_pipeline
            if self.in_memory:
                dataset = self._memory_dataset(context, batch, epoch, skip_batches)
            else:
                dataset = self._streaming_dataset(context, batch, epoch).skip(skip_batches)
            return dataset.prefetch(tf.data.AUTOTUNE)

        options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
        return self.strategy.distribute_datasets_from_function(dataset_fn, options)

    def _pipeline_arrays(self, context: tf.distribute.InputContext) -> Dict[str, np.ndarray]:
        """This input pipeline's rows of the split, read once (rows ``id::num_pipelines``)."""
        key = context.input_pipeline_id
        if key not in self._arrays:
            parts: Dict[str, list] = {}
            for batch in read_patches(self.data_dir, self.split, batch_size=8192,
                                      with_labels=self.with_labels).as_numpy_iterator():
                for name, values in batch.items():
                    parts.setdefault(name, []).append(values)
            arrays = {name: np.concatenate(values) for name, values in parts.items()}
            self._arrays[key] = {name: np.ascontiguousarray(values[key::context.num_input_pipelines])
                                 for name, values in arrays.items()}
        return self._arrays[key]

    def memory_tensors(self) -> Dict[str, tf.Tensor]:
        """The whole split as host tensors (single input pipeline), for ``DistributedSteps.run_train_fused``."""
        if self._tensors is None:
            arrays = self._pipeline_arrays(tf.distribute.InputContext())
            with tf.device("/cpu:0"):
                self._tensors = {name: tf.constant(values) for name, values in arrays.items()}
        return self._tensors

    def memory_batches(self, epoch: int, *, skip_steps: int = 0) -> np.ndarray:
        """Row indices ``(steps, global_batch_size)`` of epoch ``epoch`` after its first ``skip_steps``
        steps, in the order the distributed datasets use (single input pipeline)."""
        return self._epoch_batches(tf.distribute.InputContext(), self.global_batch_size, epoch)[skip_steps:]

    def _epoch_batches(self, context, batch: int, epoch: int) -> np.ndarray:
        rows = len(next(iter(self._pipeline_arrays(context).values())))
        usable = (rows // batch) * batch
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, context.input_pipeline_id]).permutation(rows)
        else:
            order = np.arange(rows)
        return order[:usable].reshape(-1, batch).astype(np.int64)

    def _memory_dataset(self, context, batch: int, epoch: int, skip_batches: int) -> tf.data.Dataset:
        arrays = self._pipeline_arrays(context)
        batches = self._epoch_batches(context, batch, epoch)
        # The epoch's batches after the skipped ones, then (for pipelines with fewer rows than the
        # epoch's steps need) the epoch again; the loop stops at steps_per_epoch.
        batches = np.concatenate([batches[skip_batches % max(len(batches), 1):], batches])
        indices = tf.data.Dataset.from_tensor_slices(batches).repeat()
        tensors = tf.data.Dataset.from_tensors(arrays).repeat()
        return tf.data.Dataset.zip((indices, tensors)).map(
            lambda index, data: {name: tf.gather(values, index) for name, values in data.items()},
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _streaming_dataset(self, context, batch: int, epoch: int) -> tf.data.Dataset:
        by_files = len(shard_files(self.data_dir, self.split)) >= context.num_input_pipelines
        dataset = read_patches(self.data_dir, self.split, batch_size=batch, shuffle=self.shuffle,
                               seed=self.seed + epoch, repeat=True, drop_remainder=True,
                               with_labels=self.with_labels, input_context=context if by_files else None)
        if not by_files and context.num_input_pipelines > 1:
            dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
        return dataset


class DistributedSteps:
    """Compiled functions that run n ``model.train_step``/``test_step`` calls on every replica, pulling the
    batches from a distributed iterator inside the graph (the host syncs once per call).

    The metrics of every step are summed over local replicas inside the graph; with several workers one
    all-gather at the end of an execution averages them across workers, so every worker takes the same
    decisions (stop on NaN) from the same numbers.
    """

    def __init__(self, model, strategy: tf.distribute.Strategy, *, jit_compile: bool):
        self.model, self.strategy, self.jit_compile = model, strategy, jit_compile
        self.workers = worker_count(strategy)
        self.reset()

    def reset(self) -> None:
        self._train = tf.function(self._loop(self.model.train_step))
        self._eval = tf.function(self._loop(self.model.test_step))
        self._fused = None

    @property
    def can_fuse(self) -> bool:
        """Whether ``run_train_fused`` applies: one replica in all and an XLA-compilable step."""
        return self.jit_compile and self.strategy.num_replicas_in_sync == 1

    def run_train_fused(self, tensors: Dict[str, tf.Tensor], batches: np.ndarray, first_step: int,
                        steps_per_execution: int) -> Dict[str, float]:
        """Runs ``len(batches)`` steps as one XLA computation: batches are gathered from the in-memory split
        ``tensors`` by the row indices ``batches`` ``(steps, batch)`` inside a compiled while loop, so no
        per-step work is left to the TensorFlow executor or tf.data."""
        count = len(batches)
        padded = np.zeros((steps_per_execution, batches.shape[1]), np.int64)  # one shape: one compilation
        padded[:count] = batches
        if self._fused is None:
            self._fused = self._fused_loop(tensors)
        outputs = self._fused(tensors, tf.constant(padded), tf.constant(count, tf.int64),
                              tf.constant(first_step, tf.int64))
        return {key: float(value) if key != "first_nonfinite_step" else int(value)
                for key, value in outputs.items()}

    def _fused_loop(self, tensors: Dict[str, tf.Tensor]):
        step_function = self.model.train_step
        spec = {name: tf.TensorSpec([None, *value.shape[1:]], value.dtype) for name, value in tensors.items()}
        # Tracing once (no compilation) tells the metric keys, which the while loop needs up front.
        keys = sorted(tf.function(step_function).get_concrete_function(spec).structured_outputs)

        @tf.function(jit_compile=True)
        def fused(tensors, batches, count, first_step):
            def body(index, sums, bad):
                metrics = step_function({name: tf.gather(value, batches[index]) for name, value in tensors.items()})
                finite = tf.math.is_finite(tf.cast(metrics["loss"], tf.float64))
                bad = tf.where((bad < 0) & ~finite, first_step + index, bad)
                return index + 1, [total + tf.cast(metrics[key], tf.float64) for total, key in zip(sums, keys)], bad

            start = (tf.constant(0, tf.int64), [tf.zeros([], tf.float64) for _ in keys], tf.constant(-1, tf.int64))
            _, sums, bad = tf.while_loop(lambda index, sums, bad: index < count, body, start)
            outputs = {key: tf.cast(total / tf.cast(count, tf.float64), tf.float32) for key, total in zip(keys, sums)}
            outputs["first_nonfinite_step"] = bad
            return outputs

        return fused

    def run_train(self, iterator, count: int, first_step: int) -> Dict[str, float]:
        outputs = self._train(iterator, tf.constant(count, tf.int64), tf.constant(first_step, tf.int64))
        return {key: float(value) if key != "first_nonfinite_step" else int(value)
                for key, value in outputs.items()}

    def run_eval(self, eval_input: DistributedInput, step: int) -> Dict[str, float]:
        outputs = self._eval(iter(eval_input.epoch(0)), tf.constant(eval_input.steps_per_epoch, tf.int64),
                             tf.constant(step, tf.int64))
        outputs.pop("first_nonfinite_step")
        return {key: float(value) for key, value in outputs.items()}

    def _loop(self, step_function):
        strategy, workers = self.strategy, self.workers
        if self.jit_compile:
            step_function = tf.function(step_function, jit_compile=True)

        def local_sums(per_replica: dict) -> Dict[str, tf.Tensor]:
            return {key: tf.add_n([tf.cast(v, tf.float64) for v in strategy.experimental_local_results(value)])
                    for key, value in per_replica.items()}

        def loop(iterator, count, first_step):
            # The first step is peeled off the loop so that the metric keys are known before it.
            sums = local_sums(strategy.run(step_function, args=(next(iterator),)))
            bad = tf.where(tf.math.is_finite(sums["loss"]), tf.constant(-1, tf.int64), first_step)
            for index in tf.range(tf.constant(1, tf.int64), count):
                metrics = local_sums(strategy.run(step_function, args=(next(iterator),)))
                bad = tf.where((bad < 0) & ~tf.math.is_finite(metrics["loss"]), first_step + index, bad)
                sums = {key: sums[key] + metrics[key] for key in sums}
            if workers > 1:
                sums, bad = self._across_workers(sums, bad)
            scale = tf.cast(count, tf.float64) * strategy.num_replicas_in_sync
            outputs = {key: tf.cast(value / scale, tf.float32) for key, value in sums.items()}
            outputs["first_nonfinite_step"] = bad
            return outputs

        return loop

    def _across_workers(self, sums: Dict[str, tf.Tensor], bad: tf.Tensor):
        keys = sorted(sums)
        vector = tf.stack([sums[key] for key in keys] + [tf.cast(bad, tf.float64)])
        gathered = self.strategy.run(
            lambda value: tf.distribute.get_replica_context().all_gather(value[None], axis=0), args=(vector,))
        gathered = self.strategy.experimental_local_results(gathered)[0]
        local_replicas = len(self.strategy.extended.worker_devices)
        totals = tf.reduce_sum(gathered, axis=0) / local_replicas
        steps = gathered[:, -1]
        first = tf.reduce_min(tf.where(steps >= 0, steps, tf.constant(np.inf, tf.float64)))
        bad = tf.where(tf.math.is_finite(first), tf.cast(first, tf.int64), tf.constant(-1, tf.int64))
        return {key: totals[index] for index, key in enumerate(keys)}, bad
