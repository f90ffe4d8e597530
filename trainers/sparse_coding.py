"""Sparse coding: the ``SparseCoding`` tf_keras layer, the ``sparse_coding`` model and its presets.

A patch s ``(patch_dim,)`` is approximated as ``x·A`` with a dictionary A ``(n_atoms, patch_dim)`` and sparse
codes x ``(n_atoms,)`` inferred per patch inside the graph (``ufl.trainers.sparse_inference``). The
dictionary is learned either by online dictionary learning (``ufl.trainers.dictionary_learning``, the fast
default) or by the outer Keras optimizer through the inference loop (the original Keras/Theano layer's way).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError
from ufl.trainers import dictionary_learning
from ufl.trainers.base import FeatureLearner
from ufl.trainers.presets import Preset
from ufl.trainers.registry import register_model
from ufl.trainers.sparse_inference import METHODS, SMOOTH_ABS_EPSILON, lasso_objective, sparse_encode

DICTIONARY_UPDATES = ("online", "gradient")
#: |code| above this counts as nonzero in the ``sparsity``/``nonzeros`` metrics.
NONZERO_THRESHOLD = 1e-6


def _require(condition: bool, field: str, value, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"sparse coding {field} {value!r} is invalid; {allowed}")


@tf_keras.utils.register_keras_serializable(package="ufl")
class SparseCoding(tf_keras.layers.Layer):
    """Sparse codes of patches under a learned dictionary.

    ``call(patches)`` with patches ``(batch, patch_dim)`` returns codes ``(batch, n_atoms)`` (or the
    reconstruction ``(batch, patch_dim)`` = codes·A with ``return_reconstruction=True``).

    Args:
      n_atoms: number of dictionary atoms K (> 0).
      sparsity_weight: γ >= 0, weight of the L1 penalty. Default 0.1.
      inference: ``fista`` (default), ``ista`` (exact lasso codes) or ``rmsprop`` (the original layer's
        inference: zero start, ``n_inference_steps`` RMSprop steps on Σ(s − xA)² + γΣ√(x² + 1e-7)).
      n_inference_steps: RMSprop steps (> 0). Default 100.
      max_inference_steps: FISTA/ISTA step limit (> 0). Default 200.
      tolerance: FISTA/ISTA early exit when the largest code change is below it (>= 0). Default 1e-4.
      truncate_gradient: ``-1`` (default, as the original) backpropagates through every inference step,
        ``k > 0`` through the last k, ``0`` treats the codes as constants (EM-style dictionary gradient).
      rmsprop_learning_rate, rmsprop_rho, rmsprop_momentum, rmsprop_epsilon: the RMSprop inference's
        settings (0.001, 0.9, 0.9, 1e-8 as in the original layer).
      unit_norm_atoms: keep every atom in the unit ball ``‖a‖ <= 1`` after each update (default True).
      non_negative: constrain codes to be >= 0 (default False).
      dictionary_initializer: initializer of A (default ``glorot_uniform`` as the original layer).
      dictionary_regularizer: regularizer of A, e.g. ``{"class_name": "L2", "config": {"l2": 5e-5}}``.
      return_reconstruction: return codes·A instead of the codes (default False).
    """

    def __init__(self, n_atoms: int, *, sparsity_weight: float = 0.1, inference: str = "fista",
                 n_inference_steps: int = 100, max_inference_steps: int = 200, tolerance: float = 1e-4,
                 truncate_gradient: int = -1, rmsprop_learning_rate: float = 0.001, rmsprop_rho: float = 0.9,
                 rmsprop_momentum: float = 0.9, rmsprop_epsilon: float = 1e-8, unit_norm_atoms: bool = True,
                 non_negative: bool = False, dictionary_initializer="glorot_uniform",
                 dictionary_regularizer=None, return_reconstruction: bool = False, **kwargs):
        super().__init__(**kwargs)
        _require(isinstance(n_atoms, (int, np.integer)) and n_atoms > 0, "n_atoms", n_atoms,
                 "use a positive integer such as 256")
        _require(sparsity_weight >= 0, "sparsity_weight", sparsity_weight, "use a value >= 0 such as 0.1")
        _require(inference in METHODS, "inference", inference, "use one of: " + ", ".join(METHODS))
        _require(n_inference_steps > 0, "n_inference_steps", n_inference_steps, "use a positive integer")
        _require(max_inference_steps > 0, "max_inference_steps", max_inference_steps, "use a positive integer")
        _require(tolerance >= 0, "tolerance", tolerance, "use a value >= 0 (0 runs every step)")
        _require(int(truncate_gradient) >= -1, "truncate_gradient", truncate_gradient,
                 "use -1 (every step), k > 0 (the last k steps) or 0 (codes are constants)")
        self.n_atoms = int(n_atoms)
        self.sparsity_weight = float(sparsity_weight)
        self.inference = inference
        self.n_inference_steps = int(n_inference_steps)
        self.max_inference_steps = int(max_inference_steps)
        self.tolerance = float(tolerance)
        self.truncate_gradient = int(truncate_gradient)
        self.rmsprop_learning_rate = float(rmsprop_learning_rate)
        self.rmsprop_rho = float(rmsprop_rho)
        self.rmsprop_momentum = float(rmsprop_momentum)
        self.rmsprop_epsilon = float(rmsprop_epsilon)
        self.unit_norm_atoms = bool(unit_norm_atoms)
        self.non_negative = bool(non_negative)
        self.dictionary_initializer = tf_keras.initializers.get(dictionary_initializer)
        self.dictionary_regularizer = tf_keras.regularizers.get(dictionary_regularizer)
        self.return_reconstruction = bool(return_reconstruction)

    def build(self, input_shape):
        patch_dim = int(input_shape[-1])
        self.dictionary = self.add_weight(
            name="dictionary", shape=(self.n_atoms, patch_dim), initializer=self.dictionary_initializer,
            regularizer=self.dictionary_regularizer, trainable=True,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        if self.unit_norm_atoms:
            self.project_atoms()
        super().build(input_shape)

    def project_atoms(self) -> None:
        """Projects every atom onto the unit ball (a no-op for atoms of norm <= 1)."""
        norms = tf.norm(self.dictionary, axis=1, keepdims=True)
        self.dictionary.assign(self.dictionary / tf.maximum(norms, 1.0))

    def encode(self, patches: tf.Tensor, dictionary: Optional[tf.Tensor] = None, *,
               per_patch: bool = False) -> tf.Tensor:
        """Codes ``(batch, n_atoms)`` of ``(batch, patch_dim)`` patches (under ``dictionary`` if given);
        ``per_patch``: patches whose optimal code is 0 are screened out and each other patch stops once its
        last step moved no code by ``tolerance`` (``sparse_encode``'s ``per_patch``; constant codes only)."""
        dictionary = self.dictionary if dictionary is None else dictionary
        if patches.shape[-1] is not None and patches.shape[-1] != dictionary.shape[-1]:
            raise ValueError(f"patches have length {patches.shape[-1]} but the {self.n_atoms}-atom dictionary "
                             f"of layer {self.name!r} has atoms of length {dictionary.shape[-1]}; feed "
                             "patches of the size the model was built for")
        return sparse_encode(
            patches, dictionary, sparsity_weight=self.sparsity_weight, method=self.inference,
            max_steps=self.max_inference_steps, tolerance=self.tolerance, non_negative=self.non_negative,
            truncate_gradient=0 if per_patch else self.truncate_gradient, n_steps=self.n_inference_steps,
            learning_rate=self.rmsprop_learning_rate, rho=self.rmsprop_rho, momentum=self.rmsprop_momentum,
            epsilon=self.rmsprop_epsilon, per_patch=per_patch)

    def objective(self, patches: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
        """Per-patch cost ``(batch,)`` the inference minimizes: ½‖s − xA‖² + γ‖x‖₁ for FISTA/ISTA,
        Σ(s − xA)² + γΣ√(x² + 1e-7) for RMSprop (the original layer's cost)."""
        if self.inference != "rmsprop":
            return lasso_objective(patches, codes, self.dictionary, sparsity_weight=self.sparsity_weight)
        residual = patches - tf.matmul(codes, self.dictionary)
        smooth_abs = tf.sqrt(tf.square(codes) + SMOOTH_ABS_EPSILON)
        return tf.reduce_sum(tf.square(residual), -1) + self.sparsity_weight * tf.reduce_sum(smooth_abs, -1)

    def call(self, inputs):
        codes = self.encode(tf.cast(inputs, tf.float32))
        return tf.matmul(codes, self.dictionary) if self.return_reconstruction else codes

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate(
            [input_shape[-1] if self.return_reconstruction else self.n_atoms])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            n_atoms=self.n_atoms, sparsity_weight=self.sparsity_weight, inference=self.inference,
            n_inference_steps=self.n_inference_steps, max_inference_steps=self.max_inference_steps,
            tolerance=self.tolerance, truncate_gradient=self.truncate_gradient,
            rmsprop_learning_rate=self.rmsprop_learning_rate, rmsprop_rho=self.rmsprop_rho,
            rmsprop_momentum=self.rmsprop_momentum, rmsprop_epsilon=self.rmsprop_epsilon,
            unit_norm_atoms=self.unit_norm_atoms, non_negative=self.non_negative,
            dictionary_initializer=tf_keras.initializers.serialize(self.dictionary_initializer),
            dictionary_regularizer=tf_keras.regularizers.serialize(self.dictionary_regularizer)
            if self.dictionary_regularizer is not None else None,
            return_reconstruction=self.return_reconstruction)
        return config


#: Layer arguments the model takes through (everything except ``n_atoms`` and ``return_reconstruction``).
_LAYER_ARGUMENTS = (
    "sparsity_weight", "inference", "n_inference_steps", "max_inference_steps", "tolerance",
    "truncate_gradient", "rmsprop_learning_rate", "rmsprop_rho", "rmsprop_momentum", "rmsprop_epsilon",
    "unit_norm_atoms", "non_negative", "dictionary_initializer", "dictionary_regularizer")
DICTIONARY_INITS = ("data", "initializer")


@register_model("sparse_coding")
@tf_keras.utils.register_keras_serializable(package="ufl")
class SparseCodingModel(FeatureLearner):
    """The sparse-coding feature learner: a ``SparseCoding`` layer plus the way its dictionary is learned.

    Args:
      sample_shape: ``(P, P, C)`` of one patch.
      n_atoms: dictionary size K (> 0). Default 256.
      dictionary_update: ``online`` (default: online dictionary learning from sufficient statistics, no
        outer optimizer) or ``gradient`` (the outer optimizer minimizes the layer's cost, backpropagating as
        ``truncate_gradient`` says, as the original Keras layer).
      dictionary_init: ``data`` (default: the first batch's patches, normalized, as SPAMS and scikit-learn
        do) or ``initializer`` (the layer's ``dictionary_initializer``).
      bcd_passes: online mode: block-coordinate-descent sweeps over the atoms per batch (> 0). Default 1.
      forgetting_rate: online mode: ρ >= 0 of the statistics' forgetting factor (1 − 1/t)^ρ at batch t
        (``ufl.trainers.dictionary_learning.forgetting_factor``): batch s counts about (s/t)^ρ at batch
        t. 0 uses scikit-learn's schedule (about s/t for the first batch-size batches). Default 20: lower
        held-out objectives and more localized atoms than 0 on natural patches (measurements at the
        ``sparse-coding`` preset).
      **layer_arguments: the ``SparseCoding`` arguments (``sparsity_weight``, ``inference``, ...).
    """

    #: Model-config keys taken through ``**layer_arguments`` (for ``--set model.<key>=...`` validation).
    extra_arguments = _LAYER_ARGUMENTS

    @classmethod
    def trains_with_optimizer(cls, model_spec) -> bool:
        return model_spec.get("dictionary_update", "online") == "gradient"

    def __init__(self, sample_shape, n_atoms: int = 256, *, dictionary_update: str = "online",
                 dictionary_init: str = "data", bcd_passes: int = 1, forgetting_rate: float = 20.0,
                 name: str = "sparse_coding", **layer_arguments):
        super().__init__(sample_shape, name=name)
        unknown = sorted(set(layer_arguments) - set(_LAYER_ARGUMENTS))
        _require(not unknown, "argument", ", ".join(unknown),
                 "use n_atoms, dictionary_update, dictionary_init, bcd_passes, forgetting_rate or "
                 + ", ".join(_LAYER_ARGUMENTS))
        _require(dictionary_update in DICTIONARY_UPDATES, "dictionary_update", dictionary_update,
                 "use one of: " + ", ".join(DICTIONARY_UPDATES))
        _require(dictionary_init in DICTIONARY_INITS, "dictionary_init", dictionary_init,
                 "use one of: " + ", ".join(DICTIONARY_INITS))
        _require(bcd_passes > 0, "bcd_passes", bcd_passes, "use a positive integer such as 1")
        _require(isinstance(forgetting_rate, (int, float)) and not isinstance(forgetting_rate, bool)
                 and forgetting_rate >= 0, "forgetting_rate", forgetting_rate, "use a number >= 0 such as 20")
        _require(dictionary_update == "gradient" or layer_arguments.get("unit_norm_atoms", True),
                 "unit_norm_atoms", layer_arguments.get("unit_norm_atoms"),
                 "online dictionary learning needs atoms in the unit ball; use unit_norm_atoms=True or "
                 "dictionary_update=gradient")
        self.n_atoms = int(n_atoms)
        self.dictionary_update = dictionary_update
        self.dictionary_init = dictionary_init
        self.bcd_passes = int(bcd_passes)
        self.forgetting_rate = float(forgetting_rate)
        self.layer_arguments = dict(layer_arguments)
        self.uses_optimizer = dictionary_update == "gradient"
        self.coder = SparseCoding(self.n_atoms, name="coder", **layer_arguments)
        first_replica = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.update_count = self.add_weight(name="update_count", shape=(), dtype=tf.int64, initializer="zeros",
                                            trainable=False, aggregation=first_replica)
        if dictionary_update == "online":
            self.code_gram_stat = self.add_weight(
                name="code_gram_stat", shape=(self.n_atoms, self.n_atoms), initializer="zeros",
                trainable=False, aggregation=first_replica)
            self.code_patch_stat = self.add_weight(
                name="code_patch_stat", shape=(self.n_atoms, self.patch_dim), initializer="zeros",
                trainable=False, aggregation=first_replica)

    @property
    def dictionary(self) -> tf.Variable:
        return self.coder.dictionary

    def call(self, inputs, training=None):
        return self.coder(inputs)

    def encode(self, patches: tf.Tensor) -> tf.Tensor:
        """The served codes: patches whose optimal code is 0 are screened out and each other patch's FISTA
        stops once its last step moved no code by ``tolerance`` (``per_patch``); the codes are constants (no
        gradient through inference outside training)."""
        return self.coder.encode(tf.cast(patches, tf.float32), per_patch=True)

    def reconstruct(self, patches: tf.Tensor) -> tf.Tensor:
        return tf.matmul(self.encode(patches), self.dictionary)

    def encoder_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input(shape=(self.patch_dim,), name="patches")
        return tf_keras.Model(inputs, self.coder(inputs), name=f"{self.name}_encoder")

    def filters(self) -> np.ndarray:
        return self.dictionary.numpy().reshape((self.n_atoms,) + self.sample_shape)

    def _patches(self, data) -> tf.Tensor:
        patches = tf.cast(data["patch"] if isinstance(data, dict) else data, tf.float32)
        if patches.shape[-1] is not None and patches.shape[-1] != self.patch_dim:
            raise ConfigError(f"patches have length {patches.shape[-1]} but this sparse_coding model was built "
                              f"for {'x'.join(map(str, self.sample_shape))} patches (length {self.patch_dim}); "
                              "train on DATA/ with the patch size of the run, or start over with --restart")
        return patches

    def _batch_metrics(self, patches, codes, per_example, dictionary) -> Dict[str, tf.Tensor]:
        residual = patches - tf.matmul(codes, dictionary)
        nonzero = tf.cast(tf.abs(codes) > NONZERO_THRESHOLD, tf.float32)
        return {"loss": tf.reduce_mean(per_example),
                "reconstruction_error": tf.reduce_mean(tf.square(residual)),
                "sparsity": tf.reduce_mean(nonzero),
                "nonzeros": tf.reduce_mean(tf.reduce_sum(nonzero, -1))}

    def _first_replica_patches(self, patches: tf.Tensor) -> tf.Tensor:
        """The first replica's batch, on every replica (so that choices made from data agree)."""
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), patches.dtype)
            patches = context.all_reduce(tf.distribute.ReduceOp.SUM, patches * first)
        return patches

    def _initialize_from_data(self, patches: tf.Tensor) -> None:
        """At the first update, atoms := (the first replica's) batch patches, normalized; every
        replica gets the same atoms."""
        patches = self._first_replica_patches(patches)

        def initial_atoms():
            # 1% of another patch keeps atoms distinct when the batch is smaller than n_atoms: atoms j and
            # j + size share their main patch but not the other one (deterministic, unlike random noise,
            # whose generator differs between XLA and TF kernels)
            index = tf.range(self.n_atoms)
            size = tf.shape(patches)[0]
            atoms = tf.gather(patches, index % size) + 0.01 * tf.gather(patches, (index + 1 + index // size) % size)
            return atoms / tf.maximum(tf.norm(atoms, axis=1, keepdims=True), 1e-12)

        self.dictionary.assign(tf.cond(tf.equal(self.update_count, 0), initial_atoms,
                                       lambda: tf.identity(self.dictionary)))

    # The steps use explicit tf.while_loop/tf.cond and Python branches on settings only, so AutoGraph has
    # nothing to convert; skipping its source transformation saves ~1.7 s of start-up per ufl train run.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data) -> Dict[str, tf.Tensor]:
        patches = self._patches(data)
        if self.dictionary_init == "data":
            self._initialize_from_data(patches)
        if self.dictionary_update == "online":
            dictionary = tf.identity(self.dictionary)
            codes = tf.stop_gradient(self.coder.encode(patches, dictionary))
            metrics = self._batch_metrics(patches, codes, self.coder.objective(patches, codes), dictionary)
            code_gram, code_patch = dictionary_learning.update_statistics(
                self.code_gram_stat, self.code_patch_stat, codes, patches, self.update_count,
                forgetting_rate=self.forgetting_rate)
            dictionary = dictionary_learning.update_dictionary(dictionary, code_gram, code_patch,
                                                               n_passes=self.bcd_passes)
            dictionary, code_gram, code_patch = dictionary_learning.replace_redundant_atoms(
                dictionary, code_gram, code_patch, self._first_replica_patches(patches))
            self.code_gram_stat.assign(code_gram)
            self.code_patch_stat.assign(code_patch)
            self.dictionary.assign(dictionary)
        else:
            with tf.GradientTape() as tape:
                codes = self.coder.encode(patches)
                per_example = self.coder.objective(patches, codes)
                loss = tf.reduce_mean(per_example)
                if self.coder.losses:
                    loss += tf.add_n(self.coder.losses)
            metrics = self._batch_metrics(patches, codes, per_example, self.dictionary)
            self.minimize(tape, loss, [self.dictionary])
            if self.coder.unit_norm_atoms:
                self.coder.project_atoms()
        self.update_count.assign_add(1)
        return metrics

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data) -> Dict[str, tf.Tensor]:
        patches = self._patches(data)
        codes = self.coder.encode(patches)
        return self._batch_metrics(patches, codes, self.coder.objective(patches, codes), self.dictionary)

    def get_config(self) -> dict:
        layer_config = self.coder.get_config()
        config = super().get_config()
        config.update({key: layer_config[key] for key in _LAYER_ARGUMENTS})
        config.update(n_atoms=self.n_atoms, dictionary_update=self.dictionary_update,
                      dictionary_init=self.dictionary_init, bcd_passes=self.bcd_passes,
                      forgetting_rate=self.forgetting_rate)
        return config


PRESETS = [
    Preset(
        name="sparse-coding",
        description="Sparse coding, the fast default: 256 atoms on 12x12 contrast-normalized + ZCA-whitened "
        "natural patches, exact lasso codes by FISTA (gamma 1.0), dictionary by online dictionary learning "
        "with forgetting rate 20.",
        # gamma 1.0 is Mairal et al.'s 1.2/sqrt(m) for unit-norm patches scaled to whitened 12x12 patches (norm
        # about 12); forgetting rate 20 and 30 FISTA steps learn the best dictionary per second
        # (benchmarks/RESULTS.md, "Preset choices").
        model={"kind": "sparse_coding", "n_atoms": 256, "sparsity_weight": 1.0, "inference": "fista",
               "max_inference_steps": 30, "tolerance": 1e-3, "dictionary_update": "online", "forgetting_rate": 20},
        # The optimizer serves --set model.dictionary_update=gradient only (online learning needs none).
        train={"epochs": 3, "batch_size": 256, "steps_per_execution": 20, "checkpoint_every": 200,
               "optimizer": {"name": "adam", "learning_rate": 0.015}},
        data={"source": "builtin:natural", "patch_size": 12, "extract": "random", "patches_per_image": 10000,
              "normalize": "contrast,zca"},
        reference={"source": "Mairal, Bach, Ponce & Sapiro, 'Online dictionary learning for sparse coding', "
                   "ICML 2009 (algorithm; batch 256 and 256 atoms on 12x12 natural patches, lambda "
                   "1.2/sqrt(m) for unit-norm patches, scaled here to whitened patches); SPAMS trainDL as "
                   "the reference implementation (benchmarks/dictionary_learning.py)"},
        full_run="about 20 s of ufl train (2 CPU cores)",
    ),
    Preset(
        name="sparse-coding-demo",
        description="The original Keras/Theano sparse-coding demo: 49 atoms on 16x16 whitened, mean-removed "
        "natural patches scaled to pixel variance 0.0005, RMSprop inference (100 steps, gamma 0.1), dictionary "
        "learned by an outer RMSprop (lr 0.1) with l2(5e-5) on it; filters come out Gabor-like.",
        model={"kind": "sparse_coding", "n_atoms": 49, "sparsity_weight": 0.1, "inference": "rmsprop",
               "n_inference_steps": 100, "truncate_gradient": 1, "unit_norm_atoms": False,
               "dictionary_update": "gradient", "dictionary_init": "initializer",
               "dictionary_initializer": "glorot_uniform",
               "dictionary_regularizer": {"class_name": "L2", "config": {"l2": 5e-5}}},
        # Keras 0.x's RMSprop divides by sqrt(accumulator + 1e-6), as tf_keras' current RMSprop does; its legacy
        # RMSprop (what a config without is_legacy_optimizer gives) divides by sqrt(accumulator) + eps, which
        # makes every step about lr = 0.1 per weight even for tiny gradients: the atoms stay noise.
        train={"epochs": 100, "batch_size": 100, "optimizer": {
            "name": "rmsprop", "learning_rate": 0.1, "epsilon": 1e-6, "is_legacy_optimizer": False}},
        # ZCA-whitened patches rescaled to pixel variance 0.0005 stand in for the demo's 1/f-whitened
        # patches.mat: at that scale the RMSprop inference gives sparse codes and Gabor-like atoms
        # (benchmarks/RESULTS.md, "Preset choices").
        data={"source": "builtin:natural", "patch_size": 16, "extract": "random", "patches_per_image": 2000,
              "normalize": "zca,variance", "zca_epsilon": 0.01, "target_variance": 0.0005,
              # the demo's own whitened patches, one 16x16 patch per column
              "with_patches_mat": "ufl preprocess --source mat:patches.mat --extract full --normalize "
              "mean,variance --target-variance 0.0005"},
        reference={"source": "seya (Keras 0.x + Theano) SparseCoding layer and its sparse-coding demo "
                   "notebook: SparseCoding(input_dim=256, output_dim=49, n_steps=100, truncate_gradient=1, "
                   "W_regularizer=l2(.00005)), RMSprop(lr=.1) (Keras 0.x: p - lr*g/sqrt(a + 1e-6)), "
                   "loss 'mse' (ufl minimizes the per-patch sum, 256 times it), batch 100, 100 epochs; "
                   "inference RMSprop rho .9, lr .001, momentum .9, eps 1e-8 on "
                   "sum((s - xW)^2) + gamma*sum(sqrt(x^2+1e-7))",
                   "filters": "Gabor-like: localized, oriented, band-pass",
                   "data": "patches.mat from Olshausen's whitened IMAGES.mat; here ZCA-whitened builtin:natural "
                   "patches rescaled to pixel variance 0.0005, the scale at which the RMSprop inference gives "
                   "sparse codes (README, section Sparse coding)"},
        full_run="about 50 s of ufl train (2 busy CPU cores)",
    ),
]
