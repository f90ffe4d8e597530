"""TrainConfig: a named preset plus ``--set key=value`` overrides, fully resolved and validated."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

from ufl.config.base import require, require_choice

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Config of ``ufl train``.

    Attributes:
      preset: name of the preset the run started from (see ``ufl train --list-presets``).
      data: the DATA/ directory written by ``ufl preprocess``.
      out: the RUN/ directory to write.
      model: the model's constructor arguments (preset values with overrides applied), including
        ``kind`` (the registered model name).
      epochs: passes over the training split (> 0).
      batch_size: global batch size, split evenly across replicas (> 0).
      optimizer: outer optimizer spec, e.g. ``{"name": "adam", "learning_rate": 1e-3}``
        (ignored by models that learn without one, such as online dictionary learning).
      strategy: ``auto`` (MultiWorker from TF_CONFIG, Mirrored with >1 GPU, else default) or a name.
      checkpoint_every: steps between checkpoints (> 0); a checkpoint is also written at the end.
      steps_per_execution: training steps run per call of the compiled step function (> 0).
      jit_compile: compile the step function with XLA.
      seed: seed of initialization and shuffling.
      restart: discard RUN/'s checkpoints and start over.
    """

    preset: str
    data: str
    out: str
    model: Dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 256
    optimizer: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    strategy: str = "auto"
    checkpoint_every: int = 500
    steps_per_execution: int = 50
    jit_compile: bool = True
    seed: int = 0
    restart: bool = False
    max_steps: Optional[int] = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        require(self.epochs > 0, "epochs", self.epochs, "use --epochs with a positive integer")
        require(self.batch_size > 0, "batch_size", self.batch_size, "use --batch-size with a positive integer")
        require_choice("strategy", self.strategy, STRATEGIES)
        require(self.checkpoint_every > 0, "checkpoint_every", self.checkpoint_every, "use a positive integer")
        require(self.steps_per_execution > 0, "steps_per_execution", self.steps_per_execution,
                "use a positive integer")
        require(self.max_steps is None or self.max_steps > 0, "max_steps", self.max_steps,
                "use a positive integer or leave it unset")
        require("kind" in self.model, "model", self.model, "the model spec needs a 'kind'")
