"""The contract between ufl's models and the one training loop (``trainers/train_loop.py``).

Every ufl model is a ``FeatureLearner``: a tf_keras.Model that the loop builds under the strategy's scope,
compiles with an optimizer (or none), and drives by calling ``train_step`` inside ``strategy.run``.
Export (``ufl.export``) only uses ``encode``/``reconstruct``/``encoder_model`` and ``get_config``.

Batches are dicts from ``ufl.pipeline.read_patches``: ``patch`` float32 ``(batch, patch_dim)`` with
patch_dim = P*P*C in row-major (H, W, C) order, plus ``label`` int64 ``(batch,)`` for models with
``requires_labels``. Models that want images reshape with ``sample_shape``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras


def replica_mean(per_example: tf.Tensor) -> tf.Tensor:
    """Mean over the local batch, scaled so that gradients summed over replicas equal the global mean.

    Under tf.distribute the optimizer sums gradients across replicas; with equal per-replica batches
    (the loop drops remainders), mean / num_replicas_in_sync is the global-batch mean.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return tf.reduce_mean(per_example) / tf.cast(replicas, per_example.dtype)


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
      extra_arguments: constructor arguments taken through ``**kwargs`` (e.g. forwarded to an inner
        layer); ``ufl train --set model.<argument>`` accepts these besides the named parameters.
    """

    requires_labels: bool = False
    supports_reconstruction: bool = True
    uses_optimizer: bool = True
    supports_jit: bool = True
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

    def train_step(self, data: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """One update on a per-replica batch; returns per-replica scalar metrics (the loop averages them).

        The returned dict must contain ``loss`` (the objective being minimized, a plain batch mean, not
        scaled by the number of replicas).
        """
        raise NotImplementedError

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
