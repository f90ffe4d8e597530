"""Földiák's anti-Hebbian network (Földiák 1990, "Forming sparse representations by local anti-Hebbian
learning"), batched and trained by the one loop without an optimizer (``ufl train foldiak``).

For a batch of inputs x (rows of ``(batch, patch_dim)``, scaled to unit length by default) the outputs settle
to a fixed point of

    y = σ(β (W x + C y − t))

by damped iteration inside a ``tf.while_loop`` (feed-forward weights W ``(n_units, patch_dim)``, lateral
weights C ``(n_units, n_units)`` with C ≤ 0 and zero diagonal, thresholds t ``(n_units,)``); the settled
outputs are rounded to 0/1 as in the paper. Then, with batch averages ⟨·⟩ all-reduced across replicas:

    ΔW = ε_W ⟨y (x − W)⟩           Hebbian: each unit moves towards the inputs it fires for
    ΔC = −ε_C (⟨y yᵀ⟩ − p²)         anti-Hebbian: units that fire together inhibit each other more
    Δt = ε_t (⟨y⟩ − p)              each unit's firing rate is driven to the target activity p

so the units become sparse (rate p), decorrelated (⟨y_i y_j⟩ → p²) and hence distinct.

``settle=False`` with ``lateral_init="positive_random"`` and zero lateral and threshold rates is the known
failed variant (one feed-forward pass through fixed positive lateral weights): every unit fires for every
input and all units learn the same weights; tests/trainers/test_foldiak.py shows the contrast.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import require, require_choice
from ufl.trainers.base import FeatureLearner
from ufl.trainers.presets import Preset
from ufl.trainers.registry import register_model

LATERAL_INITS = ("zero", "positive_random")


def settle_outputs(drive: tf.Tensor, lateral: tf.Tensor, *, steepness: float, settle_rate: float,
                   max_steps: int, tolerance: float) -> Tuple[tf.Tensor, tf.Tensor]:
    """Fixed point of ``y = σ(β (drive + y Cᵀ))`` by damped iteration.

    Args:
      drive: ``(batch, n_units)`` feed-forward input minus thresholds, W x − t.
      lateral: ``(n_units, n_units)`` lateral weights C.
      steepness: β of the sigmoid.
      settle_rate: damping η of ``y ← y + η (σ(β (drive + C y)) − y)``, in (0, 1].
      max_steps: iteration limit.
      tolerance: a sample stops when none of its outputs moves by more than this in one step (the loop
        stops when every sample has).
    Returns:
      ``(outputs (batch, n_units) in (0, 1), steps taken)``.
    """
    def update(outputs):
        return tf.sigmoid(steepness * (drive + tf.matmul(outputs, lateral, transpose_b=True)))

    def keep_going(step, outputs, moving):
        return tf.logical_and(step < max_steps, tf.reduce_any(moving))

    def body(step, outputs, moving):
        moved = settle_rate * (update(outputs) - outputs)
        # A settled sample stays put, so each sample's outputs do not depend on the rest of its batch.
        moved = tf.where(moving, moved, tf.zeros_like(moved))
        still_moving = tf.logical_and(moving, tf.reduce_max(tf.abs(moved), axis=-1, keepdims=True) > tolerance)
        return step + 1, outputs + moved, still_moving

    start = tf.sigmoid(steepness * drive)
    moving = tf.ones_like(drive[:, :1], dtype=tf.bool)
    steps, outputs, _ = tf.while_loop(keep_going, body, (tf.constant(0), start, moving))
    return outputs, steps


@register_model("foldiak")
@tf_keras.utils.register_keras_serializable(package="ufl")
class FoldiakNetwork(FeatureLearner):
    """Földiák's sparse anti-Hebbian network.

    Args:
      sample_shape: ``(P, P, C)`` of one sample.
      n_units: output units, > 1 (default 100).
      target_activity: p, the target firing rate, in (0, 1) (default 0.05).
      steepness: β of the output sigmoid, > 0 (default 20; inputs and drive are in unit-length units).
      feedforward_rate: ε_W, >= 0 (default 0.3 per batch).
      lateral_rate: ε_C, >= 0 (default 0.2 per batch).
      threshold_rate: ε_t, >= 0 (default 0.05 per batch). The rates are per batch of averaged statistics;
        the defaults are stable for batches of a few hundred (the preset uses 500).
      settle: iterate to the fixed point (True, default) or take one feed-forward pass through the lateral
        weights (False: the failed attempt).
      settle_rate: damping of the iteration, in (0, 1] (default 0.2).
      max_settle_steps: iteration limit, > 0 (default 200).
      settle_tolerance: convergence threshold on the largest output change, > 0 (default 1e-3).
      binarize: round settled outputs to 0/1 before learning and as codes (default True, as in the paper).
      normalize_inputs: scale each input to unit length first (default True), so β and t have fixed units
        whatever the DATA/ normalization.
      lateral_init: ``zero`` (default) or ``positive_random`` (uniform in [0, 1/n_units], the failed attempt).
      constrain_lateral: keep C ≤ 0 with zero diagonal (default True).
      seed: seed of the initial feed-forward weights.

    Example:
      >>> import numpy as np
      >>> from ufl.trainers import FoldiakNetwork
      >>> network = FoldiakNetwork((8, 8, 1), n_units=16)
      >>> codes = network.encode(np.random.default_rng(0).normal(size=(4, 64)).astype("float32"))
      >>> codes.shape
      TensorShape([4, 16])
      >>> set(np.unique(codes.numpy())) <= {0.0, 1.0}  # binary outputs, as in the paper
      True
    """

    uses_optimizer = False
    supports_reconstruction = False
    # Cross-replica all-reduce inside the settle loop's step is kept out of XLA.
    supports_jit = False

    def __init__(self, sample_shape, n_units: int = 100, target_activity: float = 0.05, steepness: float = 20.0,
                 feedforward_rate: float = 0.3, lateral_rate: float = 0.2, threshold_rate: float = 0.05,
                 settle: bool = True, settle_rate: float = 0.2, max_settle_steps: int = 200,
                 settle_tolerance: float = 1e-3, binarize: bool = True, normalize_inputs: bool = True,
                 lateral_init: str = "zero", constrain_lateral: bool = True, seed: int = 0, **kwargs):
        super().__init__(sample_shape, **kwargs)
        require(int(n_units) > 1, "model.n_units", n_units, "use at least 2 units, e.g. 100")
        require(0.0 < float(target_activity) < 1.0, "model.target_activity", target_activity,
                "use a firing rate p in (0, 1), e.g. 0.05")
        require(float(steepness) > 0, "model.steepness", steepness, "use a sigmoid steepness > 0, e.g. 10")
        for field, rate in (("feedforward_rate", feedforward_rate), ("lateral_rate", lateral_rate),
                            ("threshold_rate", threshold_rate)):
            require(float(rate) >= 0, f"model.{field}", rate, "use a learning rate >= 0")
        require(0.0 < float(settle_rate) <= 1.0, "model.settle_rate", settle_rate, "use a damping in (0, 1]")
        require(int(max_settle_steps) > 0, "model.max_settle_steps", max_settle_steps, "use a positive integer")
        require(float(settle_tolerance) > 0, "model.settle_tolerance", settle_tolerance, "use a tolerance > 0")
        require_choice("model.lateral_init", lateral_init, LATERAL_INITS)
        self.n_units, self.target_activity, self.steepness = int(n_units), float(target_activity), float(steepness)
        self.feedforward_rate, self.lateral_rate = float(feedforward_rate), float(lateral_rate)
        self.threshold_rate = float(threshold_rate)
        self.settle, self.settle_rate, self.max_settle_steps = bool(settle), float(settle_rate), int(max_settle_steps)
        self.settle_tolerance, self.binarize = float(settle_tolerance), bool(binarize)
        self.normalize_inputs, self.lateral_init = bool(normalize_inputs), lateral_init
        self.constrain_lateral, self.seed = bool(constrain_lateral), int(seed)

    def build(self, input_shape):
        rng = np.random.default_rng(self.seed)
        weights = rng.normal(size=(self.n_units, self.patch_dim))
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        lateral = np.zeros((self.n_units, self.n_units))
        if self.lateral_init == "positive_random":
            lateral = rng.uniform(0.0, 1.0 / self.n_units, size=lateral.shape)
            np.fill_diagonal(lateral, 0.0)
        # Updated in train_step from all-reduced statistics, identical on every replica.
        options = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.feedforward = self.add_weight(name="feedforward", shape=weights.shape,
                                           initializer=tf_keras.initializers.Constant(weights), **options)
        self.lateral = self.add_weight(name="lateral", shape=lateral.shape,
                                       initializer=tf_keras.initializers.Constant(lateral), **options)
        self.thresholds = self.add_weight(name="thresholds", shape=(self.n_units,), initializer="zeros", **options)
        self.built = True

    def _inputs(self, patches: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(patches, axis=-1) if self.normalize_inputs else patches

    def _respond(self, inputs: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """``(outputs (batch, n_units), settle steps)`` of already-scaled inputs."""
        drive = tf.matmul(inputs, self.feedforward, transpose_b=True) - self.thresholds
        if self.settle:
            outputs, steps = settle_outputs(drive, tf.convert_to_tensor(self.lateral), steepness=self.steepness,
                                            settle_rate=self.settle_rate, max_steps=self.max_settle_steps,
                                            tolerance=self.settle_tolerance)
        else:
            feedforward = tf.sigmoid(self.steepness * drive)
            lateral_input = tf.matmul(feedforward, self.lateral, transpose_b=True)
            outputs, steps = tf.sigmoid(self.steepness * (drive + lateral_input)), tf.constant(1)
        if self.binarize:
            outputs = tf.cast(outputs > 0.5, outputs.dtype)
        return outputs, steps

    def call(self, patches, training=None):
        return self._respond(self._inputs(patches))[0]

    def _statistics(self, patches: tf.Tensor):
        inputs = self._inputs(patches)
        outputs, steps = self._respond(inputs)
        # Σ_i y_i |x − W_i|² over the batch: the quantization error the Hebbian rule decreases.
        distances = (tf.reduce_sum(tf.square(inputs), axis=1, keepdims=True)
                     - 2.0 * tf.matmul(inputs, self.feedforward, transpose_b=True)
                     + tf.reduce_sum(tf.square(self.feedforward), axis=1))
        sums = {"count": tf.cast(tf.shape(inputs)[0], inputs.dtype),
                "outputs": tf.reduce_sum(outputs, axis=0),
                "hebbian": tf.matmul(outputs, inputs, transpose_a=True),
                "coactivity": tf.matmul(outputs, outputs, transpose_a=True),
                "error": tf.reduce_sum(outputs * distances)}
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            sums = context.all_reduce(tf.distribute.ReduceOp.SUM, sums)
        return outputs, steps, sums

    def _summary(self, outputs, steps, sums) -> Dict[str, tf.Tensor]:
        rates = sums["outputs"] / sums["count"]
        coactivity = sums["coactivity"] / sums["count"]
        variance = tf.maximum(tf.linalg.diag_part(coactivity) - tf.square(rates), 1e-12)
        covariance = coactivity - rates[:, None] * rates[None, :]
        correlation = covariance / tf.sqrt(variance[:, None] * variance[None, :])
        off_diagonal = 1.0 - tf.eye(self.n_units, dtype=outputs.dtype)
        return {"loss": sums["error"] / tf.maximum(tf.reduce_sum(sums["outputs"]), 1.0),
                "sparsity": tf.reduce_mean(rates),
                "nonzeros": tf.reduce_mean(tf.reduce_sum(tf.cast(outputs > 0, outputs.dtype), axis=1)),
                "mean_abs_correlation": tf.reduce_sum(tf.abs(correlation) * off_diagonal)
                / tf.reduce_sum(off_diagonal),
                "settle_steps": tf.cast(steps, outputs.dtype)}

    def train_step(self, data):
        outputs, steps, sums = self._statistics(data["patch"])
        rates = sums["outputs"] / sums["count"]
        hebbian = sums["hebbian"] / sums["count"] - rates[:, None] * self.feedforward
        coactivity = sums["coactivity"] / sums["count"]
        lateral = self.lateral - self.lateral_rate * (coactivity - self.target_activity ** 2)
        if self.constrain_lateral:
            lateral = tf.linalg.set_diag(tf.minimum(lateral, 0.0), tf.zeros([self.n_units], lateral.dtype))
        metrics = self._summary(outputs, steps, sums)
        self.feedforward.assign_add(self.feedforward_rate * hebbian)
        self.lateral.assign(lateral)
        self.thresholds.assign_add(self.threshold_rate * (rates - self.target_activity))
        return metrics

    def test_step(self, data):
        return self._summary(*self._statistics(data["patch"]))

    def encoder_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((self.patch_dim,), name="patches")
        return tf_keras.Model(inputs, self(inputs), name=f"{self.name}_encoder")

    def filters(self) -> Optional[np.ndarray]:
        return np.asarray(self.feedforward.numpy()).reshape((self.n_units,) + self.sample_shape)

    def get_config(self):
        return {**super().get_config(), "n_units": self.n_units, "target_activity": self.target_activity,
                "steepness": self.steepness, "feedforward_rate": self.feedforward_rate,
                "lateral_rate": self.lateral_rate, "threshold_rate": self.threshold_rate, "settle": self.settle,
                "settle_rate": self.settle_rate, "max_settle_steps": self.max_settle_steps,
                "settle_tolerance": self.settle_tolerance, "binarize": self.binarize,
                "normalize_inputs": self.normalize_inputs, "lateral_init": self.lateral_init,
                "constrain_lateral": self.constrain_lateral, "seed": self.seed}


PRESETS = [
    Preset(
        name="foldiak",
        description="Foldiak's anti-Hebbian sparse network (100 units, p = 0.05, settled outputs) on 10x10 "
                    "patches of natural images",
        model={"kind": "foldiak", "n_units": 100, "target_activity": 0.05},
        train={"epochs": 5, "batch_size": 500},
        data={"source": "builtin:natural", "patch_size": 10, "extract": "random", "patches_per_image": 5000,
              "normalize": "contrast,zca", "eval_fraction": 0.1},
        reference={"mean_activity": 0.05, "mean_abs_correlation": "≈0 (decorrelated units)",
                   "failed_attempt": "one feed-forward pass, positive random lateral weights: no sparsity, "
                                     "identical units",
                   "source": "P. Foldiak, 'Forming sparse representations by local anti-Hebbian learning', "
                             "Biological Cybernetics 64:165-170, 1990"},
        full_run="10 s of ufl train (2 idle CPU cores, 2026-12-01; 12 min at low priority on a CPU at load 16)"
    ),
]
