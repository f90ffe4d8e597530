"""Where training is and how it resumes: the data position and RUN/checkpoints/, in one place.

A checkpoint holds the model, the optimizer and the position (global step, epoch, batch within the epoch),
so a rerun resumes where the previous one stopped, even after ``kill -9``: epoch ``e`` is ordered by
``seed + e`` alone, and the resumed run skips the batches of the epoch it already consumed. The newest
``keep`` checkpoints are kept; a newest one that cannot be read (a disk that filled up, a copy cut short)
is reported and training resumes from the one before.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Callable, List, Optional

import tensorflow as tf

from ufl.errors import ConfigError, DataError
from ufl.trainers.run_dir import CHECKPOINT_DIR

POSITION_FIELDS = ("step", "epoch", "step_in_epoch")


@dataclasses.dataclass
class Position:
    """Where training is: the global ``step``, the 0-based ``epoch`` and the batches of it done."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0

    def advance(self, steps: int) -> None:
        self.step += steps
        self.step_in_epoch += steps

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch = 0


class RunCheckpoint:
    """The checkpoints of RUN/: ``save`` the model, its optimizer and a Position; ``restore`` the newest
    readable one.

    Every worker of a cluster saves (saving may involve collectives), but only the chief into RUN/; the
    others write to a temporary folder that ``close`` removes.
    """

    def __init__(self, model, run_dir: str, *, chief: bool, keep: int):
        self._counters = {name: tf.Variable(0, dtype=tf.int64, trainable=False, name=name)
                          for name in POSITION_FIELDS}
        items = dict(model=model, **self._counters)
        if model.uses_optimizer:
            items["optimizer"] = model.optimizer
        self._checkpoint = tf.train.Checkpoint(**items)
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        self._save_dir = self.directory if chief else tempfile.mkdtemp(prefix="ufl-worker-checkpoints-")
        self._manager = tf.train.CheckpointManager(self._checkpoint, self._save_dir, max_to_keep=keep)
        self.saved_step = -1  # none saved or restored yet

    def save(self, position: Position) -> None:
        for name in POSITION_FIELDS:
            self._counters[name].assign(getattr(position, name))
        self._manager.save(checkpoint_number=position.step)
        self.saved_step = position.step

    def restore(self, model_spec: dict, say: Callable[[str], None]) -> Position:
        """The Position of the newest readable checkpoint, its weights restored (Position() when RUN/ has
        none). Raises DataError when none can be read, ConfigError when it does not fit the model."""
        candidates = checkpoints_newest_first(self.directory)
        if not candidates:
            return Position()
        path = newest_readable(self.directory, say)
        try:
            self._checkpoint.restore(path).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            raise ConfigError(f"checkpoint {path!r} does not fit model {model_spec!r} ({error}); the model "
                              "settings changed since it was saved: use --restart to train from scratch") from None
        position = Position(*(int(self._counters[name].numpy()) for name in POSITION_FIELDS))
        if path != candidates[0]:
            say(f"resuming from the previous checkpoint, {os.path.basename(path)} (step {position.step})")
        self.saved_step = position.step
        return position

    def close(self) -> None:
        if self._save_dir != self.directory:
            shutil.rmtree(self._save_dir, ignore_errors=True)


def checkpoints_newest_first(directory: str) -> List[str]:
    """Checkpoint prefixes in ``directory``, newest first (from the manager's state file, else the files)."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError):  # a damaged state file: fall back to the files themselves
        state = None
    if state is not None and state.all_model_checkpoint_paths:
        paths = list(state.all_model_checkpoint_paths)  # already joined with ``directory``, relative or not
    else:
        paths = [name[:-len(".index")] for name in tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index"))]
    return sorted(paths, key=_checkpoint_number, reverse=True)


def newest_readable(directory: str, say: Callable[[str], None] = lambda text: None) -> str:
    """The newest checkpoint of ``directory`` whose every tensor reads; ``say`` hears of each one skipped.
    Raises DataError naming ``--restart`` when none can be read (or there is none)."""
    candidates = checkpoints_newest_first(directory)
    for path in candidates:
        problem = unreadable(path)
        if problem is None:
            return path
        say(f"checkpoint {path} cannot be read ({problem}); trying the one before it")
    newest = f" (the newest, {os.path.basename(candidates[0])}: {unreadable(candidates[0])})" if candidates else ""
    raise DataError(f"no checkpoint in {directory} can be read{newest}; use --restart to train from scratch")


def unreadable(path: str) -> Optional[str]:
    """Why the checkpoint ``path`` cannot be read (its first line), or None when every tensor reads."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, OSError) as error:
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    return None


def _checkpoint_number(path: str) -> int:
    suffix = path.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1
