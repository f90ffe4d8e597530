"""The one training loop of ufl: every FeatureLearner trains here, on any tf.distribute strategy.

``train(config, strategy=...)`` reads DATA/, builds the model under the strategy's scope, restores RUN/'s
newest checkpoint (the epoch and the step inside it are saved with the weights, so a rerun resumes where
the previous one stopped, even after ``kill -9``), and runs compiled executions of ``steps_per_execution``
steps (``strategy.DistributedSteps``): with one replica, an XLA-able model and an in-memory split, one XLA
while loop gathers the batches by index and runs ``model.train_step``; otherwise one ``tf.function`` pulls
batches from the distributed iterator inside the graph and runs ``model.train_step`` on every replica.
Metrics are summed in the graph, so the host sees one small dict per execution. The eval split is scored
after every epoch (from memory on the fused path, see ``_evaluator``). Metrics go to TensorBoard,
RUN/logs/history.jsonl, a progress line per epoch, and finally metrics.json and the plots.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError, to_jsonable
from ufl.config.train import TrainConfig
from ufl.errors import TrainingDiverged  # noqa: F401  (re-exported for callers of train())
from ufl.pipeline import DataError, load_metadata, read_patches
from ufl.pipeline.tfrecord import shard_files
from ufl.trainers import plots
from ufl.trainers.presets import all_presets
from ufl.trainers.registry import build_model, model_class
from ufl.trainers.run_dir import (CHECKPOINT_DIR, LOG_DIR, METRICS_FILE, PLOT_DIR, append_history,
                                  prepare_run_dir, read_history, sample_shape_of, truncate_history,
                                  write_json)
from ufl.trainers.strategy import DistributedInput, DistributedSteps, is_chief, strategy_name, worker_count

#: Rows of the in-memory eval split coded per call (rounded down to whole batches).
EVAL_CHUNK_ROWS = 1024
#: Patches shown in plots/reconstructions.png.
PLOTTED_PATCHES = 10
#: Metric keys copied to the top level of metrics.json (from the eval split when it exists).
SUMMARY_KEYS = ("reconstruction_error", "sparsity", "nonzeros", "accuracy")


def make_optimizer(spec: dict) -> tf_keras.optimizers.Optimizer:
    """A tf_keras optimizer from ``{"name": "adam", "learning_rate": 1e-3, ...}``."""
    options = dict(spec)
    name = str(options.pop("name"))
    try:
        return tf_keras.optimizers.get({"class_name": name.lower(), "config": options})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer {spec!r} is invalid ({error}); use the constructor arguments of "
                          f"tf_keras.optimizers for {name!r}") from None


def train(config: TrainConfig, *, strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, object]:
    """Trains ``config.model`` on ``config.data`` into RUN/ = ``config.out``; returns the final metrics.

    Raises:
      ConfigError: bad DATA/ or RUN/, a model that does not fit the data's sample shape, a batch size
        that the replicas cannot share.
      TrainingDiverged: the loss became NaN/Inf (RUN/ keeps the last good checkpoint).
    """
    wall_start = time.perf_counter()
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    metadata = _load_metadata(config.data)
    sample_shape = sample_shape_of(metadata)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ConfigError(f"batch_size {config.batch_size} is invalid; {replicas} replicas share it, so use "
                          f"a multiple of {replicas} (--batch-size)")
    if model_needs_labels(config) and not metadata.get("has_labels", False):
        raise ConfigError(f"preset {config.preset!r} trains with labels but {config.data} has none (source "
                          f"{metadata.get('source')!r}); preprocess a labelled source such as builtin:mnist")
    fresh = prepare_run_dir(config.out, to_jsonable(config), config.data, restart=config.restart, write=chief)

    tf_keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = _build_model(config, sample_shape)
        if model.uses_optimizer:
            model.compile(optimizer=make_optimizer(config.optimizer))
    counters = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                for name in ("step", "epoch", "step_in_epoch")}
    items = dict(model=model, **counters)
    if model.uses_optimizer:
        items["optimizer"] = model.optimizer
    checkpoint = tf.train.Checkpoint(**items)
    checkpoint_dir = os.path.join(config.out, CHECKPOINT_DIR)
    # Every worker saves (saving may involve collectives); only the chief saves into RUN/.
    save_dir = checkpoint_dir if chief else tempfile.mkdtemp(prefix="ufl-worker-checkpoints-")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=3)
    if not fresh:
        _restore(checkpoint, checkpoint_dir, config)
    step, epoch, step_in_epoch = (int(counters[name].numpy()) for name in ("step", "epoch", "step_in_epoch"))
    start_step = step
    if chief:
        truncate_history(config.out, step)

    train_input = DistributedInput(
        strategy, config.data, "train", global_batch_size=config.batch_size,
        count=_split_count(config.data, metadata, "train"), patch_dim=model.patch_dim, shuffle=True,
        seed=config.seed, with_labels=model.requires_labels)
    if train_input.steps_per_epoch == 0:
        raise ConfigError(f"batch_size {config.batch_size} is invalid; {config.data} has only "
                          f"{train_input.count} training patches; use --batch-size <= {train_input.count}")
    eval_input = _eval_input(strategy, config, metadata, model)
    steps_per_epoch = train_input.steps_per_epoch
    if chief:
        plots.preload_in_background()
    if step_in_epoch >= steps_per_epoch:
        epoch, step_in_epoch = epoch + 1, 0

    # XLA compiles the step of a single replica; with several replicas the step holds the cross-replica
    # reductions, which XLA cannot place across devices.
    jit_compile = config.jit_compile and model.supports_jit and replicas == 1
    executor = DistributedSteps(model, strategy, jit_compile=jit_compile)
    evaluate = _evaluator(executor, eval_input, model)
    log_dir = os.path.join(config.out, LOG_DIR)
    writer = tf.summary.create_file_writer(log_dir) if chief else tf.summary.create_noop_writer()
    say = print if chief else (lambda *args, **kwargs: None)
    live = chief and sys.stdout.isatty()  # a progress line updated after every execution
    if step:
        say(f"resuming {config.out} from step {step} (epoch {epoch + 1}, batch {step_in_epoch} of "
            f"{steps_per_epoch})", flush=True)
    throughput = _Throughput()
    train_metrics: Dict[str, float] = {}
    eval_metrics: Dict[str, float] = {}
    saved_step = step if not fresh else -1

    def save() -> None:
        nonlocal saved_step
        for name, value in (("step", step), ("epoch", epoch), ("step_in_epoch", step_in_epoch)):
            counters[name].assign(value)
        manager.save(checkpoint_number=step)
        saved_step = step

    try:
        with writer.as_default():
            while epoch < config.epochs and (config.max_steps is None or step < config.max_steps):
                if model.on_epoch_begin(epoch):
                    executor.reset()
                    throughput.retraced()
                fused = executor.can_fuse and train_input.in_memory
                if fused:
                    tensors = train_input.memory_tensors()
                    batches, position = train_input.memory_batches(epoch, skip_steps=step_in_epoch), 0
                else:
                    iterator = iter(train_input.epoch(epoch, skip_steps=step_in_epoch))
                sums: Dict[str, float] = {}
                epoch_steps, epoch_start = 0, time.perf_counter()
                while step_in_epoch < steps_per_epoch and (config.max_steps is None or step < config.max_steps):
                    count = min(config.steps_per_execution, steps_per_epoch - step_in_epoch,
                                config.checkpoint_every - step % config.checkpoint_every,
                                (config.max_steps or sys.maxsize) - step)
                    started = time.perf_counter()
                    if fused:
                        result = executor.run_train_fused(tensors, batches[position:position + count], step + 1,
                                                          config.steps_per_execution)
                        position += count
                    else:
                        result = executor.run_train(iterator, count, step + 1)
                    seconds = time.perf_counter() - started
                    bad_step = int(result.pop("first_nonfinite_step"))
                    if bad_step >= 0:
                        kept = (f"kept the last good checkpoint (step {saved_step}) in {checkpoint_dir}"
                                if saved_step >= 0 else "no checkpoint was saved yet")
                        raise TrainingDiverged(
                            f"loss is {result['loss']} at step {bad_step} (epoch {epoch + 1}); stopped and "
                            f"{kept}; check DATA/ {config.data} for NaN/Inf values or lower the learning "
                            "rate (--set optimizer.learning_rate=...)")
                    step, step_in_epoch, epoch_steps = step + count, step_in_epoch + count, epoch_steps + count
                    rate = throughput.add(count * config.batch_size, seconds)
                    for key, value in result.items():
                        sums[key] = sums.get(key, 0.0) + value * count
                        plots.log_scalar(f"train/{key}", value, step)
                    plots.log_scalar("train/examples_per_second", rate, step)
                    if live:
                        print(f"\r  epoch {epoch + 1}/{config.epochs}  batch {step_in_epoch}/{steps_per_epoch}  "
                              f"loss {result['loss']:.5g}  {rate:,.0f} ex/s ", end="", flush=True)
                    if chief:
                        append_history(config.out, {"split": "train", "step": step, "epoch": epoch + 1,
                                                    "examples_per_second": rate, **result})
                    if step % config.checkpoint_every == 0:
                        save()
                if epoch_steps:
                    train_metrics = {key: value / epoch_steps for key, value in sums.items()}
                ended = step_in_epoch >= steps_per_epoch
                if eval_input is not None:
                    eval_metrics = evaluate(step)
                    for key, value in eval_metrics.items():
                        plots.log_scalar(f"eval/{key}", value, step)
                    if chief:
                        append_history(config.out, {"split": "eval", "step": step, "epoch": epoch + 1,
                                                    **eval_metrics})
                _log_filters(model, step)
                if live:
                    print("\r\033[K", end="")
                say(_progress_line(epoch, config.epochs, step, train_metrics, eval_metrics,
                                   epoch_steps * config.batch_size, time.perf_counter() - epoch_start),
                    flush=True)
                if ended:
                    epoch, step_in_epoch = epoch + 1, 0
            if saved_step != step:
                save()
    finally:
        writer.close()
        if not chief:
            shutil.rmtree(save_dir, ignore_errors=True)

    if not train_metrics:
        train_metrics = _last_record(read_history(config.out) if chief else [], "train")
    if eval_input is not None and not eval_metrics:
        eval_metrics = evaluate(step)
    summary = eval_metrics or train_metrics
    metrics = {
        "preset": config.preset,
        "model_kind": config.model["kind"],
        "strategy": strategy_name(strategy),
        "replicas": replicas,
        "workers": worker_count(strategy),
        "batch_size": config.batch_size,
        "execution": "fused" if executor.can_fuse and train_input.in_memory else "iterator",
        "steps": step,
        "epochs": epoch + step_in_epoch / steps_per_epoch,
        "resumed_from_step": start_step,
        "train_objective": train_metrics.get("loss"),
        "eval_objective": eval_metrics.get("loss"),
        **{("mean_nonzeros" if key == "nonzeros" else key): summary[key] for key in SUMMARY_KEYS
           if key in summary},
        "examples_per_second": throughput.steady_rate(),
        "wall_seconds": time.perf_counter() - wall_start,
        "train": train_metrics,
        "eval": eval_metrics,
        "reference": _reference(config.preset),
    }
    if chief:
        _write_plots(model, config, sample_shape, _plot_patches(config, eval_input, executor))
        write_json(os.path.join(config.out, METRICS_FILE), metrics)
    return metrics


class _Throughput:
    """Examples per second after warm-up: the first ``WARMUP`` executions after each (re)trace compile the
    step function and fill the input pipeline, so they are left out when later ones exist."""

    WARMUP = 2

    def __init__(self):
        self.examples = self.seconds = 0.0
        self.all_examples = self.all_seconds = 0.0
        self.since_trace = 0

    def retraced(self) -> None:
        self.since_trace = 0

    def add(self, examples: int, seconds: float) -> float:
        self.all_examples += examples
        self.all_seconds += seconds
        self.since_trace += 1
        if self.since_trace > self.WARMUP:
            self.examples += examples
            self.seconds += seconds
        return examples / max(seconds, 1e-9)

    def steady_rate(self) -> Optional[float]:
        if self.seconds > 0:
            return self.examples / self.seconds
        return self.all_examples / self.all_seconds if self.all_seconds > 0 else None


def model_needs_labels(config: TrainConfig) -> bool:
    return bool(getattr(model_class(config.model["kind"]), "requires_labels", False))


def _load_metadata(data_dir: str) -> dict:
    try:
        return load_metadata(data_dir)
    except DataError as error:
        raise ConfigError(str(error)) from None


def _split_count(data_dir: str, metadata: dict, split: str) -> int:
    """Examples in a split, from metadata ``counts.patches`` or, failing that, by counting the records."""
    count = metadata.get("counts", {}).get("patches", {}).get(split)
    if count is not None:
        return int(count)
    if not shard_files(data_dir, split):
        return 0
    return int(read_patches(data_dir, split, batch_size=4096).reduce(
        tf.constant(0, tf.int64), lambda total, batch: total + tf.shape(batch["patch"], out_type=tf.int64)[0]))


def _build_model(config: TrainConfig, sample_shape):
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


def _restore(checkpoint: tf.train.Checkpoint, checkpoint_dir: str, config: TrainConfig) -> None:
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    try:
        checkpoint.restore(latest).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        raise ConfigError(f"checkpoint {latest!r} does not fit model {config.model!r} ({error}); the model "
                          "settings changed since it was saved: use --restart to train from scratch") from None


def _eval_input(strategy, config: TrainConfig, metadata: dict, model) -> Optional[DistributedInput]:
    count = _split_count(config.data, metadata, "eval")
    replicas = strategy.num_replicas_in_sync
    batch = min(config.batch_size, (count // replicas) * replicas)
    if batch <= 0:
        return None
    return DistributedInput(strategy, config.data, "eval", global_batch_size=batch, count=count,
                            patch_dim=model.patch_dim, shuffle=False, with_labels=model.requires_labels)


def _reference(preset_name: str) -> dict:
    preset = all_presets().get(preset_name)
    return dict(preset.reference) if preset is not None else {}


def _last_record(history: list, split: str) -> Dict[str, float]:
    records = [record for record in history if record.get("split") == split]
    if not records:
        return {}
    return {key: value for key, value in records[-1].items()
            if key not in ("split", "step", "epoch", "examples_per_second")}


def _log_filters(model, step: int) -> None:
    filters = model.filters()
    if filters is not None:
        plots.log_image("filters", plots.filter_grid(filters), step)


def _progress_line(epoch: int, epochs: int, step: int, train_metrics: dict, eval_metrics: dict,
                   examples: int, seconds: float) -> str:
    parts = [f"epoch {epoch + 1}/{epochs}", f"step {step}"]
    parts += [f"loss {train_metrics['loss']:.5g}"] if "loss" in train_metrics else []
    parts += [f"eval {eval_metrics['loss']:.5g}"] if "loss" in eval_metrics else []
    for key in ("nonzeros", "sparsity", "accuracy"):
        source = eval_metrics if key in eval_metrics else train_metrics
        if key in source:
            parts.append(f"{key} {source[key]:.4g}")
    parts.append(f"{examples / max(seconds, 1e-9):,.0f} ex/s")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)


def _eval_from_memory(executor: DistributedSteps, eval_input: Optional[DistributedInput]) -> bool:
    """Whether the eval split is read from memory (the fused path: one replica, split held in memory)."""
    return eval_input is not None and executor.can_fuse and eval_input.in_memory


def _evaluator(executor: DistributedSteps, eval_input: Optional[DistributedInput], model):
    """``evaluate(step) -> metrics`` of the eval split.

    On the fused path (one replica, split in memory) the split is coded in chunks of whole batches by one
    traced, uncompiled ``test_step``: the same per-batch means as ``DistributedSteps.run_eval`` without a
    second input pipeline and a second XLA compilation, which cost seconds for a pass that runs once per
    epoch. Elsewhere ``run_eval`` pulls the batches through the distributed iterator.
    """
    if not _eval_from_memory(executor, eval_input):
        return lambda step: executor.run_eval(eval_input, step)
    chunk_rows = eval_input.global_batch_size * max(1, EVAL_CHUNK_ROWS // eval_input.global_batch_size)
    test_step = None

    def evaluate(step: int) -> Dict[str, float]:
        nonlocal test_step
        tensors = eval_input.memory_tensors()
        if test_step is None:  # one trace for every chunk size
            spec = {name: tf.TensorSpec([None, *value.shape[1:]], value.dtype) for name, value in tensors.items()}
            test_step = tf.function(model.test_step, input_signature=[spec])
        rows = eval_input.steps_per_epoch * eval_input.global_batch_size
        sums: Dict[str, float] = {}
        for start in range(0, rows, chunk_rows):
            size = min(chunk_rows, rows - start)
            metrics = test_step({name: value[start:start + size] for name, value in tensors.items()})
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) * size
        return {key: value / rows for key, value in sums.items()}

    return evaluate


def _plot_patches(config: TrainConfig, eval_input: Optional[DistributedInput], executor: DistributedSteps):
    """A few patches for plots/reconstructions.png: the eval split's first, from memory when it is there."""
    if _eval_from_memory(executor, eval_input):
        return eval_input.memory_tensors()["patch"][:PLOTTED_PATCHES]
    split = "eval" if shard_files(config.data, "eval") else "train"
    return next(iter(read_patches(config.data, split, batch_size=PLOTTED_PATCHES)))["patch"]


def _write_plots(model, config: TrainConfig, sample_shape, patches: tf.Tensor) -> None:
    plot_dir = os.path.join(config.out, PLOT_DIR)
    filters = model.filters()
    if filters is not None:
        plots.plot_filters(filters, os.path.join(plot_dir, "filters.png"))
    if model.supports_reconstruction:
        rebuilt = model.reconstruct(patches)
        plots.plot_reconstructions(patches.numpy(), np.asarray(rebuilt), sample_shape,
                                   os.path.join(plot_dir, "reconstructions.png"))
    model.write_plots(plot_dir, patches.numpy())
    history = read_history(config.out)
    if history:
        plots.plot_loss(history, os.path.join(plot_dir, "loss.png"))
