"""The one training loop of ufl: every FeatureLearner trains here, on any tf.distribute strategy.

``train(config, strategy=...)`` reads like the loop it runs: ``start_run`` builds the model under the
strategy's scope and restores RUN/'s newest readable checkpoint (or starts over), ``run_epoch`` trains to
the end of the epoch in compiled executions of ``steps_per_execution`` steps (``step_executor.py``) and
records them (``recorder.py``), and ``summarize`` writes metrics.json and the plots. The data position is
saved with the weights (``checkpoints.py``), so a rerun resumes where the previous one stopped; a rerun of
a finished run says so and changes nothing.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError, to_jsonable
from ufl.config.train import TrainConfig
from ufl.errors import TrainingDiverged
from ufl.pipeline import DataError, load_metadata, read_patches
from ufl.pipeline.tfrecord import shard_files
from ufl.trainers import plots
from ufl.trainers.base import FeatureLearner, make_optimizer
from ufl.trainers.checkpoints import Position, RunCheckpoint
from ufl.trainers.distributed_input import DistributedInput
from ufl.trainers.presets import all_presets
from ufl.trainers.recorder import Recorder, Throughput
from ufl.trainers.registry import build_model, model_class
from ufl.trainers.run_dir import (METRICS_FILE, PLOT_DIR, prepare_run_dir, read_history, read_json,
                                  sample_shape_of, truncate_history, write_json)
from ufl.trainers.shard_check import corrupt_data_error, readable_records
from ufl.trainers.step_executor import DistributedSteps
from ufl.trainers.strategy import is_chief, strategy_name, worker_count

#: Patches shown in plots/reconstructions.png.
PLOTTED_PATCHES = 10
#: Metric keys copied to the top level of metrics.json (from the eval split when it exists).
SUMMARY_KEYS = ("reconstruction_error", "sparsity", "nonzeros", "accuracy")


def train(config: TrainConfig, *, strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, object]:
    """Trains ``config.model`` on ``config.data`` into RUN/ = ``config.out``; returns the final metrics.

    Raises:
      ConfigError: bad DATA/ or RUN/, a model that does not fit the data's sample shape, a batch size
        that the replicas cannot share.
      DataError: a corrupt DATA/ shard (named, with the record), or no readable checkpoint in RUN/.
      TrainingDiverged: the loss became NaN/Inf (RUN/ keeps the last good checkpoint).

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> from ufl.config import TrainConfig
      >>> from ufl.pipeline.tfrecord import write_data_dir
      >>> from ufl.trainers import train
      >>> workdir = tempfile.mkdtemp()
      >>> patches = np.random.default_rng(0).normal(size=(512, 64)).astype(np.float32)
      >>> write_data_dir(os.path.join(workdir, "data"), {"train": patches}, patch_size=(8, 8), channels=1)
      >>> config = TrainConfig(preset="sparse-coding", data=os.path.join(workdir, "data"),
      ...                      out=os.path.join(workdir, "run"), model={"kind": "sparse_coding", "n_atoms": 16},
      ...                      epochs=1, batch_size=128)
      >>> metrics = train(config)  # doctest: +ELLIPSIS
      epoch 1/1  step 4  loss ...
      >>> metrics["steps"], sorted(os.listdir(os.path.join(workdir, "run", "plots")))
      (4, ['filters.png', 'loss.png', 'reconstructions.png'])
    """
    try:
        run = start_run(config, strategy or tf.distribute.get_strategy())
        if run.completed_before():
            return run.report_complete()
        try:
            with run.recorder:
                while not run.is_finished():
                    run_epoch(run)
                if run.checkpoint.saved_step != run.position.step:
                    run.checkpoint.save(run.position)
        finally:
            run.checkpoint.close()
        return summarize(run)
    except tf.errors.DataLossError as error:
        raise corrupt_data_error(config.data, error) from None


@dataclasses.dataclass
class Run:
    """One training run's parts: the config with ``jit_compile`` resolved, the model, its inputs and step
    executor, the checkpoints, the recorder, and where training is."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    chief: bool
    model: FeatureLearner
    sample_shape: tuple
    train_input: DistributedInput
    eval_input: Optional[DistributedInput]
    executor: DistributedSteps
    checkpoint: RunCheckpoint
    recorder: Recorder
    position: Position
    skipped_records: Optional[int]
    start_step: int = 0
    started: float = dataclasses.field(default_factory=time.perf_counter)
    throughput: Throughput = dataclasses.field(default_factory=Throughput)
    train_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    eval_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def steps_per_epoch(self) -> int:
        return self.train_input.steps_per_epoch

    def steps_left(self) -> int:
        """Steps until the end of the epoch or ``max_steps``, whichever comes first."""
        left = self.steps_per_epoch - self.position.step_in_epoch
        if self.config.max_steps is not None:
            left = min(left, self.config.max_steps - self.position.step)
        return max(left, 0)

    def is_finished(self) -> bool:
        return self.position.epoch >= self.config.epochs or (
            self.config.max_steps is not None and self.position.step >= self.config.max_steps)

    def completed_before(self) -> bool:
        """Whether RUN/ already holds this training, finished and summarized (a rerun of the same command)."""
        return self.start_step > 0 and self.is_finished() and os.path.exists(
            os.path.join(self.config.out, METRICS_FILE))

    def report_complete(self) -> Dict[str, object]:
        """A finished run rerun with the same settings: say so, change nothing, return its metrics."""
        self.checkpoint.close()
        self.recorder.say(f"{self.config.out} is complete after epoch {self.position.epoch} (step "
                          f"{self.position.step}); nothing to train (a larger --epochs trains on, --restart "
                          "starts over)")
        return read_json(os.path.join(self.config.out, METRICS_FILE))


def start_run(config: TrainConfig, strategy: tf.distribute.Strategy) -> Run:
    """Checks DATA/ and the config, builds the model and its inputs, then readies RUN/ and restores its newest
    readable checkpoint. Nothing is written before every check has passed."""
    started, chief = time.perf_counter(), is_chief(strategy)
    metadata = _load_metadata(config.data)
    sample_shape = sample_shape_of(metadata)
    _check_batch_and_labels(config, metadata, strategy.num_replicas_in_sync)
    tf_keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = _build_model(config, sample_shape)
        if model.uses_optimizer:
            model.compile(optimizer=make_optimizer(config.optimizer))
    config = dataclasses.replace(config, jit_compile=resolve_jit_compile(config.jit_compile, model, strategy))
    (train_input, eval_input), skipped = _inputs(config, metadata, strategy, model, chief)
    fresh = prepare_run_dir(config.out, to_jsonable(config), config.data, restart=config.restart, write=chief)
    recorder = Recorder(config.out, config.epochs, chief=chief)
    checkpoint = RunCheckpoint(model, config.out, chief=chief, keep=config.keep_checkpoints)
    position = Position() if fresh else checkpoint.restore(config.model, recorder.say)
    if position.step_in_epoch >= train_input.steps_per_epoch:
        position.next_epoch()
    run = Run(config, strategy, chief, model, sample_shape, train_input, eval_input,
              DistributedSteps(model, strategy, jit_compile=config.jit_compile), checkpoint, recorder, position,
              skipped, start_step=position.step, started=started)
    if chief and not run.completed_before():
        truncate_history(config.out, position.step)
        plots.preload_in_background()
    if position.step and not run.is_finished():
        recorder.say(f"resuming {config.out} from step {position.step} (epoch {position.epoch + 1}, batch "
                     f"{position.step_in_epoch} of {run.steps_per_epoch})")
    return run


def run_epoch(run: Run) -> None:
    """Trains from ``run.position`` to the end of its epoch (or ``max_steps``), evaluates, and records."""
    position, config = run.position, run.config
    if run.model.on_epoch_begin(position.epoch):
        run.executor.reset()
        run.throughput.retraced()
    feed = EpochFeed(run.executor, run.train_input, position, config.steps_per_execution)
    sums: Dict[str, float] = {}
    steps, started = 0, time.perf_counter()
    run.recorder.start_epoch(position, run.steps_per_epoch)
    while run.steps_left() > 0:
        count = min(config.steps_per_execution, run.steps_left(),
                    config.checkpoint_every - position.step % config.checkpoint_every)
        began = time.perf_counter()
        result = feed.run(count, position.step + 1)
        seconds = time.perf_counter() - began
        _stop_if_diverged(result.pop("first_nonfinite_step"), result, run)
        position.advance(count)
        steps += count
        for key, value in result.items():
            sums[key] = sums.get(key, 0.0) + value * count
        run.recorder.execution(position, count, result, run.throughput.add(count * config.batch_size, seconds))
        if position.step % config.checkpoint_every == 0:
            run.checkpoint.save(position)
    if steps:
        run.train_metrics = {key: value / steps for key, value in sums.items()}
    if run.eval_input is not None:
        run.eval_metrics = run.executor.evaluate(run.eval_input, position.step)
    run.recorder.end_epoch(run.model, position, run.train_metrics, run.eval_metrics,
                           steps * config.batch_size, time.perf_counter() - started)
    if position.step_in_epoch >= run.steps_per_epoch:
        position.next_epoch()


class EpochFeed:
    """The batches of one epoch handed to the step executor: gathered by row index from the split held in
    memory on the fused path, pulled from the distributed iterator otherwise."""

    def __init__(self, executor: DistributedSteps, train_input: DistributedInput, position: Position,
                 steps_per_execution: int):
        self.executor, self.steps_per_execution = executor, steps_per_execution
        self.fused = executor.reads_from_memory(train_input)
        if self.fused:
            self.tensors = train_input.memory_tensors()
            self.batches = train_input.memory_batches(position.epoch, skip_steps=position.step_in_epoch)
            self.offset = 0
        else:
            self.iterator = iter(train_input.epoch(position.epoch, skip_steps=position.step_in_epoch))

    def run(self, count: int, first_step: int) -> Dict[str, float]:
        """Runs ``count`` steps numbered from ``first_step``; their mean metrics + ``first_nonfinite_step``."""
        if not self.fused:
            return self.executor.run_train(self.iterator, count, first_step)
        batches = self.batches[self.offset:self.offset + count]
        self.offset += count
        return self.executor.run_train_fused(self.tensors, batches, first_step, self.steps_per_execution)


def summarize(run: Run) -> Dict[str, object]:
    """The run's final figures; the chief writes them to metrics.json and draws the plots."""
    config = run.config
    if not run.train_metrics:  # nothing trained in this process: the last figures of the history
        run.train_metrics = _last_record(read_history(config.out) if run.chief else [], "train")
    if run.eval_input is not None and not run.eval_metrics:
        run.eval_metrics = run.executor.evaluate(run.eval_input, run.position.step)
    summary = run.eval_metrics or run.train_metrics
    metrics = {
        "preset": config.preset, "model_kind": config.model["kind"], "strategy": strategy_name(run.strategy),
        "replicas": run.strategy.num_replicas_in_sync, "workers": worker_count(run.strategy),
        "batch_size": config.batch_size,
        "execution": "fused" if run.executor.reads_from_memory(run.train_input) else "iterator",
        "steps": run.position.step,
        "epochs": run.position.epoch + run.position.step_in_epoch / run.steps_per_epoch,
        "resumed_from_step": run.start_step,
        "train_objective": run.train_metrics.get("loss"), "eval_objective": run.eval_metrics.get("loss"),
        **{("mean_nonzeros" if key == "nonzeros" else key): summary[key] for key in SUMMARY_KEYS if key in summary},
        "examples_per_second": run.throughput.steady_rate(),
        "wall_seconds": time.perf_counter() - run.started,
        "train": run.train_metrics, "eval": run.eval_metrics, "reference": _reference(config.preset),
    }
    if run.skipped_records is not None:
        metrics["skipped_corrupt_records"] = run.skipped_records
        run.recorder.say(f"skipped {run.skipped_records} corrupt or unreadable records of {config.data}")
    if run.chief:
        _write_plots(run)
        write_json(os.path.join(config.out, METRICS_FILE), metrics)
    return metrics


def resolve_jit_compile(setting, model: FeatureLearner, strategy: tf.distribute.Strategy):
    """The ``jit_compile`` a run uses: ``auto`` becomes True where XLA makes this model's step faster (on a
    GPU; on a CPU when ``model.xla_on_cpu``), else False. XLA compiles the step of a single replica of a
    model that supports it; with several replicas the step holds cross-replica reductions, which XLA
    cannot place across devices."""
    possible = model.supports_jit and strategy.num_replicas_in_sync == 1
    if setting != "auto":
        return bool(setting) and possible
    return possible and (bool(tf.config.list_logical_devices("GPU")) or model.xla_on_cpu)


def _check_batch_and_labels(config: TrainConfig, metadata: dict, replicas: int) -> None:
    if config.batch_size % replicas:
        raise ConfigError(f"batch_size {config.batch_size} is invalid; {replicas} replicas share it, so use "
                          f"a multiple of {replicas} (--batch-size)")
    if model_class(config.model["kind"]).requires_labels and not metadata.get("has_labels", False):
        raise ConfigError(f"preset {config.preset!r} trains with labels but {config.data} has none (source "
                          f"{metadata.get('source')!r}); preprocess a labelled source such as builtin:mnist")


def _stop_if_diverged(bad_step: int, result: Dict[str, float], run: Run) -> None:
    if bad_step < 0:
        return
    kept = (f"kept the last good checkpoint (step {run.checkpoint.saved_step}) in {run.checkpoint.directory}"
            if run.checkpoint.saved_step >= 0 else "no checkpoint was saved yet")
    raise TrainingDiverged(f"loss is {result['loss']} at step {bad_step} (epoch {run.position.epoch + 1}); stopped "
                           f"and {kept}; check DATA/ {run.config.data} for NaN/Inf values or lower the learning "
                           "rate (--set optimizer.learning_rate=...)")


def _load_metadata(data_dir: str) -> dict:
    try:
        return load_metadata(data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None


def _inputs(config: TrainConfig, metadata: dict, strategy, model, chief: bool) -> tuple:
    """``((train input, eval input or None), skipped records or None)``; with ``skip_corrupt_records`` the
    inputs read only the records before each corrupt one."""
    counts, limits, skipped = {}, {}, None
    for split in ("train", "eval"):
        counts[split] = _split_count(config.data, metadata, split)
        if config.skip_corrupt_records and counts[split]:
            readable = readable_records(config.data, split, counts[split])
            counts[split], limits[split] = readable.count, readable.limits
            skipped = (skipped or 0) + readable.skipped
            for problem in readable.problems if chief else ():
                print(f"{problem}; skipping the records from there on (--skip-corrupt-records)", flush=True)
    options = dict(patch_dim=model.patch_dim, with_labels=model.requires_labels)
    train_input = DistributedInput(strategy, config.data, "train", global_batch_size=config.batch_size,
                                   count=counts["train"], shuffle=True, seed=config.seed,
                                   record_limits=limits.get("train"), **options)
    if train_input.steps_per_epoch == 0:
        raise ConfigError(f"batch_size {config.batch_size} is invalid; {config.data} has only "
                          f"{train_input.count} training patches; use --batch-size <= {train_input.count}")
    replicas = strategy.num_replicas_in_sync
    eval_batch = min(config.batch_size, (counts["eval"] // replicas) * replicas)
    eval_input = None if eval_batch <= 0 else DistributedInput(
        strategy, config.data, "eval", global_batch_size=eval_batch, count=counts["eval"], shuffle=False,
        record_limits=limits.get("eval"), **options)
    return (train_input, eval_input), skipped


def _split_count(data_dir: str, metadata: dict, split: str) -> int:
    """Examples in a split, from metadata ``counts.patches`` or, failing that, by counting the records."""
    count = metadata.get("counts", {}).get("patches", {}).get(split)
    if count is not None:
        return int(count)
    if not shard_files(data_dir, split):
        return 0
    return int(read_patches(data_dir, split, batch_size=4096).reduce(
        tf.constant(0, tf.int64), lambda total, batch: total + tf.shape(batch["patch"], out_type=tf.int64)[0]))


def _build_model(config: TrainConfig, sample_shape) -> FeatureLearner:
    """The model, called once on zeros so that every variable exists (checkpoint restore relies on it)."""
    spec = config.model
    try:
        model = build_model(spec, sample_shape)
        model(tf.zeros([1, model.patch_dim]), training=False)
    except ConfigError:
        raise  # the model named its own bad parameter
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model {spec['kind']!r} cannot train on the samples of shape {tuple(sample_shape)} "
                          f"in {config.data}: {error}; preprocess with the patch size and color the preset "
                          "needs (see 'ufl train --list-presets') or change its --set model.* values") from None
    return model


def _reference(preset_name: str) -> dict:
    preset = all_presets().get(preset_name)
    return dict(preset.reference) if preset is not None else {}


def _last_record(history: List[dict], split: str) -> Dict[str, float]:
    records = [record for record in history if record.get("split") == split]
    if not records:
        return {}
    return {key: value for key, value in records[-1].items()
            if key not in ("split", "step", "epoch", "examples_per_second")}


def _plot_patches(run: Run) -> tf.Tensor:
    """A few patches for plots/reconstructions.png: the eval split's first, from memory when it is there."""
    if run.executor.reads_from_memory(run.eval_input):
        return run.eval_input.memory_tensors()["patch"][:PLOTTED_PATCHES]
    split = "eval" if run.eval_input is not None else "train"
    limits = (run.eval_input or run.train_input).record_limits
    return next(iter(read_patches(run.config.data, split, batch_size=PLOTTED_PATCHES, record_limits=limits)))["patch"]


def _write_plots(run: Run) -> None:
    plot_dir = os.path.join(run.config.out, PLOT_DIR)
    model, patches = run.model, _plot_patches(run)
    filters = model.filters()
    if filters is not None:
        plots.plot_filters(filters, os.path.join(plot_dir, "filters.png"))
    if model.supports_reconstruction:
        rebuilt = model.reconstruct(patches)
        plots.plot_reconstructions(patches.numpy(), np.asarray(rebuilt), run.sample_shape,
                                   os.path.join(plot_dir, "reconstructions.png"))
    model.write_plots(plot_dir, patches.numpy())
    history = read_history(run.config.out)
    if history:
        plots.plot_loss(history, os.path.join(plot_dir, "loss.png"))
