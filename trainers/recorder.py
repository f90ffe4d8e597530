"""Where training's figures go: TensorBoard scalars and filters (RUN/logs), RUN/logs/history.jsonl (the loss
curve behind plots/loss.png), progress within an epoch, and one line per epoch in the terminal.

Only the chief records; the other workers of a cluster get a Recorder that writes nothing.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import tensorflow as tf

from ufl.progress import progress
from ufl.trainers import plots
from ufl.trainers.checkpoints import Position
from ufl.trainers.run_dir import LOG_DIR, append_history


class Throughput:
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


class Recorder:
    """Records one run's executions and epochs; a context manager around the training (TensorBoard writer)."""

    def __init__(self, run_dir: str, epochs: int, *, chief: bool):
        self.run_dir, self.epochs, self.chief = run_dir, epochs, chief
        self._writer = self._default = self._bar = None

    def __enter__(self) -> "Recorder":
        # Made here, not in __init__: a finished run that is rerun gets no new event file.
        self._writer = (tf.summary.create_file_writer(os.path.join(self.run_dir, LOG_DIR)) if self.chief
                        else tf.summary.create_noop_writer())
        self._default = self._writer.as_default()
        self._default.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._close_bar()
        self._default.__exit__(*exc_info)
        self._writer.close()

    def say(self, text: str) -> None:
        if self.chief:
            print(text, flush=True)

    def start_epoch(self, position: Position, steps_per_epoch: int) -> None:
        """Shows progress within the epoch (a bar on a terminal; plain lines every 10 s in logs)."""
        self._bar = progress(steps_per_epoch - position.step_in_epoch, desc=f"epoch {position.epoch + 1}/{self.epochs}",
                             unit="step", enabled=self.chief)

    def execution(self, position: Position, steps: int, result: Dict[str, float], rate: float) -> None:
        """One compiled execution of ``steps`` steps that ended at ``position`` with mean metrics ``result``."""
        for key, value in result.items():
            plots.log_scalar(f"train/{key}", value, position.step)
        plots.log_scalar("train/examples_per_second", rate, position.step)
        if self._bar is not None:
            self._bar.update(steps)
        if self.chief:
            append_history(self.run_dir, {"split": "train", "step": position.step, "epoch": position.epoch + 1,
                                          "examples_per_second": rate, **result})

    def end_epoch(self, model, position: Position, train_metrics: dict, eval_metrics: dict, examples: int,
                  seconds: float) -> None:
        """The epoch's eval figures, filters and its line in the terminal."""
        self._close_bar()
        if eval_metrics:
            for key, value in eval_metrics.items():
                plots.log_scalar(f"eval/{key}", value, position.step)
            if self.chief:
                append_history(self.run_dir, {"split": "eval", "step": position.step, "epoch": position.epoch + 1,
                                              **eval_metrics})
        log_filters(model, position.step)
        self.say(epoch_line(position, self.epochs, train_metrics, eval_metrics, examples, seconds))

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def log_filters(model, step: int) -> None:
    """The model's first-layer features as a TensorBoard image (every worker runs it)."""
    filters = model.filters()
    if filters is not None:
        plots.log_image("filters", plots.filter_grid(filters), step)


def epoch_line(position: Position, epochs: int, train_metrics: dict, eval_metrics: dict, examples: int,
               seconds: float) -> str:
    """``epoch 2/10  step 96  loss 0.0123  eval 0.0131  nonzeros 9.5  8,000 ex/s  1.2 s``."""
    parts = [f"epoch {position.epoch + 1}/{epochs}", f"step {position.step}"]
    parts += [f"loss {train_metrics['loss']:.5g}"] if "loss" in train_metrics else []
    parts += [f"eval {eval_metrics['loss']:.5g}"] if "loss" in eval_metrics else []
    for key in ("nonzeros", "sparsity", "accuracy"):
        source = eval_metrics if key in eval_metrics else train_metrics
        if key in source:
            parts.append(f"{key} {source[key]:.4g}")
    parts.append(f"{examples / max(seconds, 1e-9):,.0f} ex/s")
    parts.append(f"{seconds:.1f} s")
    return "  ".join(parts)
