"""The distributed input of the training loop: one DATA/ split fed to every replica, epoch by epoch.

Splits that fit in memory are read once and shuffled by index each epoch (exact, cheap, reproducible, and
what the fused XLA path of ``step_executor.py`` gathers from); larger ones stream from the TFRecords.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import tensorflow as tf

from ufl.pipeline import read_patches
from ufl.pipeline.tfrecord import shard_files

#: Splits up to this many bytes are read once into memory and shuffled by index each epoch (exact,
#: cheap and reproducible); larger ones stream from the TFRecords with a shuffle buffer.
IN_MEMORY_BYTES = 1 << 30


class DistributedInput:
    """Per-epoch distributed datasets of one DATA/ split, split across replicas.

    Each replica receives ``global_batch_size / num_replicas`` examples per step. Every epoch has a fixed
    number of global steps (``steps_per_epoch``, computed from the split's size), and each input pipeline
    repeats its data, so workers with unequal shards never run out mid-step.

    Epoch ``e`` is ordered by ``seed + e`` alone, so a resumed run skips exactly the batches it consumed.
    ``record_limits`` (shard path -> count) reads only the first records of the shards it names, the
    readable ones before a corrupt record (``ufl train --skip-corrupt-records``).
    """

    def __init__(self, strategy: tf.distribute.Strategy, data_dir: str, split: str, *,
                 global_batch_size: int, count: int, patch_dim: int, shuffle: bool, seed: int = 0,
                 with_labels: bool = False, record_limits: Optional[Mapping[str, int]] = None):
        self.strategy = strategy
        self.record_limits = dict(record_limits or {})
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
            for batch in read_patches(self.data_dir, self.split, batch_size=8192, with_labels=self.with_labels,
                                      record_limits=self.record_limits).as_numpy_iterator():
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
                               with_labels=self.with_labels, input_context=context if by_files else None,
                               record_limits=self.record_limits)
        if not by_files and context.num_input_pipelines > 1:
            dataset = dataset.shard(context.num_input_pipelines, context.input_pipeline_id)
        return dataset
