"""The compiled step executor of the training loop: n ``train_step``/``test_step`` calls per host sync.

``DistributedSteps.run_train`` pulls batches from a distributed iterator inside one ``tf.function`` and runs
the model's step on every replica; ``run_train_fused`` (one replica, split in memory, XLA) gathers the
batches by index inside one compiled while loop; ``evaluate`` scores an eval split either way.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from ufl.trainers.distributed_input import DistributedInput
from ufl.trainers.strategy import worker_count

#: Rows of an in-memory eval split coded per call (rounded down to whole batches).
EVAL_CHUNK_ROWS = 1024


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
        self._memory_eval = None

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

    def reads_from_memory(self, distributed_input: Optional[DistributedInput]) -> bool:
        """Whether ``distributed_input`` is read from memory (the fused path: one replica, split in memory)."""
        return distributed_input is not None and self.can_fuse and distributed_input.in_memory

    def evaluate(self, eval_input: DistributedInput, step: int) -> Dict[str, float]:
        """Metrics of the eval split (per-batch means, averaged over its whole batches).

        On the fused path the split is coded from memory in chunks of whole batches by one traced,
        uncompiled ``test_step``: the same figures as ``run_eval`` without a second input pipeline and a
        second XLA compilation, which cost seconds for a pass that runs once per epoch.
        """
        if not self.reads_from_memory(eval_input):
            return self.run_eval(eval_input, step)
        tensors = eval_input.memory_tensors()
        if self._memory_eval is None:  # one trace for every chunk size
            spec = {name: tf.TensorSpec([None, *value.shape[1:]], value.dtype) for name, value in tensors.items()}
            self._memory_eval = tf.function(self.model.test_step, input_signature=[spec])
        batch = eval_input.global_batch_size
        chunk_rows = batch * max(1, EVAL_CHUNK_ROWS // batch)
        rows = eval_input.steps_per_epoch * batch
        sums: Dict[str, float] = {}
        for start in range(0, rows, chunk_rows):
            size = min(chunk_rows, rows - start)
            metrics = self._memory_eval({name: value[start:start + size] for name, value in tensors.items()})
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) * size
        return {key: value / rows for key, value in sums.items()}

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
