"""The contract between ufl's models and the one training loop (``trainers/train_loop.py``).

Every ufl model is a ``FeatureLearner``: a tf_keras.Model that the loop builds under the strategy's scope,
compiles with an optimizer (or none), and drives by calling ``train_step`` inside ``strategy.run``.
Export (``ufl.export``) only uses ``encode``/``reconstruct``/``encoder_model`` and ``get_config``.

Batches are dicts from ``ufl.pipeline.read_patches``: ``patch`` float32 ``(batch, patch_dim)`` with
patch_dim = P*P*C in row-major (H, W, C) order, plus ``label`` int64 ``(batch,)`` for models with
``requires_labels``. Models that want images reshape with ``sample_shape``.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError, require


def make_optimizer(spec: Dict[str, Any]) -> tf_keras.optimizers.Optimizer:
    """A tf_keras optimizer from ``{"name": "adam", "learning_rate": 1e-3, ...}`` (the other keys are the
    optimizer's constructor arguments); raises ConfigError naming the spec."""
    options = dict(spec)
    name = options.pop("name", None)
    require(bool(name), "optimizer", dict(spec), "give a name, e.g. {'name': 'adam', 'learning_rate': 0.001}")
    try:
        return tf_keras.optimizers.get({"class_name": str(name).lower(), "config": options})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer {dict(spec)!r} is invalid ({error}); use the constructor arguments of "
                          f"tf_keras.optimizers for {name!r}") from None


@tf_keras.utils.register_keras_serializable(package="ufl")
class FeatureLearner(tf_keras.Model):
    """Base class of every ufl model.

    Subclasses implement ``call`` (patches -> codes), ``train_step`` and, where they can, ``reconstruct``.

    Attributes:
      sample_shape: ``(P, P, C)`` of one sample, from DATA/metadata.json.
      requires_labels: the loop reads ``label`` too (e.g. fine-tuning of the stacked autoencoder).
      supports_reconstruction: ``reconstruct`` is implemented (export adds the ``reconstruct`` signature).
      uses_optimizer: the loop gives ``compile`` an outer optimizer (False for closed-form learners such
        as online dictionary learning and the Földiák network).
      supports_jit: ``train_step``/``test_step`` compile with XLA (the loop honours ``jit_compile`` only
        when this is True).
      xla_on_cpu: what ``jit_compile: auto`` chooses on a CPU: True where XLA's compiled step is faster
        than TensorFlow's oneDNN kernels (dense models), False where it is slower (convolutions; see
        benchmarks/presets.py). On a GPU ``auto`` compiles every model that supports it.
      extra_arguments: constructor arguments taken through ``**kwargs`` (e.g. forwarded to an inner
        layer); ``ufl train --set model.<argument>`` accepts these besides the named parameters.
    """

    requires_labels: bool = False
    supports_reconstruction: bool = True
    uses_optimizer: bool = True
    supports_jit: bool = True
    xla_on_cpu: bool = True
    extra_arguments: Tuple[str, ...] = ()

    def __init__(self, sample_shape: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        sample_shape = tuple(int(s) for s in sample_shape)
        if len(sample_shape) != 3 or min(sample_shape) <= 0:
            raise ValueError(f"sample_shape {sample_shape!r} is invalid; use (height, width, channels)")
        self.sample_shape: Tuple[int, int, int] = sample_shape

    @property
    def patch_dim(self) -> int:
        return int(np.prod(self.sample_shape))

    def encode(self, patches: tf.Tensor) -> tf.Tensor:
        """Codes ``(batch, n_codes)`` of raw-normalized patches ``(batch, patch_dim)``; the served features."""
        return self(patches, training=False)

    def reconstruct(self, patches: tf.Tensor) -> tf.Tensor:
        """Reconstruction ``(batch, patch_dim)`` of ``(batch, patch_dim)`` patches."""
        raise NotImplementedError(f"{type(self).__name__} cannot reconstruct")

    def encoder_model(self) -> tf_keras.Model:
        """The encoder alone as a tf_keras model ``(batch, patch_dim) -> (batch, n_codes)``, sharing this
        model's variables (what export serves and ``load_encoder`` reuses)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose an encoder model")

    @classmethod
    def trains_with_optimizer(cls, model_spec: Dict[str, Any]) -> bool:
        """Whether a model built from ``model_spec`` uses the loop's outer optimizer (``uses_optimizer``),
        known before the model is built (``ufl train`` refuses ``--set optimizer.*`` when it is False)."""
        return bool(cls.uses_optimizer)

    def train_step(self, data: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """One update on a per-replica batch; returns per-replica scalar metrics (the loop averages them).

        The returned dict must contain ``loss`` (the objective being minimized, a plain batch mean, not
        scaled by the number of replicas). Gradient steps go through ``minimize``.
        """
        raise NotImplementedError

    def minimize(self, tape: tf.GradientTape, loss: tf.Tensor, variables: Sequence[tf.Variable],
                 optimizer: Optional[tf_keras.optimizers.Optimizer] = None) -> None:
        """One step of ``optimizer`` (default: the loop's) on ``loss``, this replica's plain batch mean.

        Under tf.distribute the optimizer sums gradients across replicas; with equal per-replica batches
        (the loop drops remainders) the gradient of loss / num_replicas_in_sync summed over the replicas is
        the gradient of the global-batch mean. This is the one place where that scaling happens.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        scale = tf.constant(1.0 / replicas, loss.dtype)
        gradients = tape.gradient(loss, variables, output_gradients=scale)
        (optimizer or self.optimizer).apply_gradients(zip(gradients, variables))

    def test_step(self, data: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """Held-out metrics of one batch (no update); same keys as ``train_step`` where they apply."""
        raise NotImplementedError

    def on_epoch_begin(self, epoch: int) -> bool:
        """Called by the loop (eagerly, outside tf.function) before each epoch, 0-based; e.g. to switch the
        phase of greedy layer-wise training. Returns True when the model changed what ``train_step``
        traces (the loop then rebuilds its compiled step function). Default: nothing, False."""
        return False

    def write_plots(self, plot_dir: str, patches: np.ndarray) -> Dict[str, str]:
        """Writes the model's own figures (e.g. feature maps) of a few ``(n, patch_dim)`` patches into
        RUN/plots after training, beside the loop's filters/reconstructions/loss; returns name -> path.
        Default: none."""
        return {}

    def filters(self) -> Optional[np.ndarray]:
        """First-layer features as images ``(n, P, P, C)`` for plots, or None."""
        return None

    def get_config(self) -> dict:
        return {"sample_shape": list(self.sample_shape), "name": self.name}
