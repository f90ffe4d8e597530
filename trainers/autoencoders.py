"""Dense autoencoders: the classic Keras autoencoder, deep sparse (L1 or KL), denoising, and stacked.

Two FeatureLearners, trained by the one loop (``ufl train PRESET``):

- ``dense_autoencoder`` (:class:`DenseAutoencoder`): an encoder of Dense layers (``hidden_units``, the last
  one is the code) and the mirrored decoder, with an optional sparsity penalty on the activations (``l1``:
  λ·Σ_layers mean|a|, as in the deep sparse reference; ``kl``: β·Σ_units KL(ρ ‖ ρ̂) of the mean activation
  ρ̂ of each hidden unit over the batch, the sparse-autoencoder penalty of Ng's notes) and optional input
  corruption (``gaussian`` additive noise or ``masking`` of a random fraction of the inputs, clean target:
  the denoising autoencoder of Vincent et al. 2008).
- ``stacked_autoencoder`` (:class:`StackedAutoencoder`): Dense layers trained greedily, each as an
  autoencoder of the previous layer's code (``pretrain_epochs`` epochs per layer, each layer with its own
  optimizer owned by the model), then a softmax head and end-to-end fine-tuning with labels by the loop's
  optimizer. ``pretrain_epochs=0`` trains the same network from scratch.

Batches are dicts with ``patch`` float32 ``(batch, patch_dim)`` (and ``label`` int64 ``(batch,)``); the input
size follows the data (``patch_dim`` = P·P·C of DATA/).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError, require, require_choice
from ufl.trainers.base import FeatureLearner, make_optimizer  # noqa: F401  (make_optimizer: re-exported)
from ufl.trainers.losses import reconstruction_loss
from ufl.trainers.presets import Preset, idle_run
from ufl.trainers.registry import register_model

ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
LOSSES = ("mse", "binary_crossentropy")
SPARSITY_PENALTIES = ("none", "l1", "kl")
NOISE_KINDS = ("none", "gaussian", "masking")
#: Keeps the mean activation of the KL penalty and the sigmoid probabilities away from 0 and 1.
_EPSILON = 1e-7


def _units(field: str, units: Sequence[int]) -> Tuple[int, ...]:
    units = tuple(units) if isinstance(units, (list, tuple)) else (units,)
    require(len(units) > 0 and all(isinstance(u, (int, np.integer)) and u > 0 for u in units),
            field, list(units), "use a list of positive layer sizes, e.g. --set " + field + "=[256,64]")
    return tuple(int(u) for u in units)


def _activate(logits: tf.Tensor, activation: str) -> tf.Tensor:
    return logits if activation == "linear" else getattr(tf.nn, activation)(logits)


def _build_dense(layer: tf_keras.layers.Dense, input_width: int) -> None:
    """Creates ``layer``'s variables for ``(batch, input_width)`` inputs, named after the layer."""
    with tf.name_scope(layer.name):
        layer.build((None, input_width))


def _create_slots(optimizer, variables: List[tf.Variable]) -> None:
    """Creates the optimizer's slot variables now, so that a checkpoint restores them before training."""
    if hasattr(optimizer, "_create_all_weights"):  # tf_keras legacy optimizers
        optimizer._create_all_weights(variables)
    else:
        optimizer.build(variables)


def kl_sparsity(activations: tf.Tensor, target: float) -> tf.Tensor:
    """Σ_units KL(ρ ‖ ρ̂_j) of ``(batch, units)`` activations in (0, 1), ρ̂_j their batch mean; a scalar."""
    mean = tf.clip_by_value(tf.reduce_mean(activations, axis=0), _EPSILON, 1.0 - _EPSILON)
    return tf.reduce_sum(target * tf.math.log(target / mean)
                         + (1.0 - target) * tf.math.log((1.0 - target) / (1.0 - mean)))


def code_statistics(codes: tf.Tensor) -> Dict[str, tf.Tensor]:
    """``sparsity`` (fraction of nonzero codes), ``nonzeros`` (per code) and ``mean_activation``."""
    nonzero = tf.cast(tf.not_equal(codes, 0.0), codes.dtype)
    return {"sparsity": tf.reduce_mean(nonzero),
            "nonzeros": tf.reduce_mean(tf.reduce_sum(nonzero, axis=-1)),
            "mean_activation": tf.reduce_mean(codes)}


def _dense_filters(kernel: tf.Variable, sample_shape: Sequence[int]) -> np.ndarray:
    """First-layer weights ``(patch_dim, units)`` as ``(units, P, P, C)`` images."""
    return np.transpose(kernel.numpy()).reshape((-1,) + tuple(sample_shape))


@register_model("dense_autoencoder")
@tf_keras.utils.register_keras_serializable(package="ufl")
class DenseAutoencoder(FeatureLearner):
    """A dense autoencoder with optional sparsity penalty and input corruption.

    Args:
      sample_shape: ``(P, P, C)`` of one sample; the input is its flattening, ``patch_dim`` = P·P·C.
      hidden_units: encoder layer sizes, the last is the code size (default ``(32,)``); the decoder mirrors
        them (``(256, 16)`` → decoder ``(256, patch_dim)``).
      activation: hidden activation, one of relu, sigmoid, tanh, linear (default relu).
      code_activation: activation of the code layer (the last encoder layer); default: ``activation``.
      output_activation: reconstruction activation (default sigmoid, for inputs in [0, 1]).
      loss: ``mse`` or ``binary_crossentropy`` (default; needs targets in [0, 1]), mean over features.
      sparsity: ``none`` (default), ``l1`` (λ·Σ over every layer, output included, of mean |activation|) or
        ``kl`` (β·Σ over the sigmoid hidden layers and their units of KL(ρ ‖ ρ̂); needs a sigmoid layer,
        e.g. ``code_activation="sigmoid"``: deep sigmoid stacks barely train, a sigmoid code on ReLU does).
      sparsity_weight: λ or β, >= 0 (default 0.001).
      sparsity_target: ρ of the KL penalty, in (0, 1) (default 0.05).
      noise: input corruption during training: ``none`` (default), ``gaussian`` (x + noise_level·N(0, 1))
        or ``masking`` (each input set to 0 with probability noise_level); the target stays clean.
      noise_level: Gaussian standard deviation (>= 0) or masked fraction (in [0, 1)) (default 0).
    """

    def __init__(self, sample_shape: Sequence[int], hidden_units: Sequence[int] = (32,),
                 activation: str = "relu", code_activation: Optional[str] = None,
                 output_activation: str = "sigmoid", loss: str = "binary_crossentropy", sparsity: str = "none",
                 sparsity_weight: float = 1e-3, sparsity_target: float = 0.05, noise: str = "none", noise_level: float = 0.0, **kwargs):
        super().__init__(sample_shape, **kwargs)
        self.hidden_units = _units("model.hidden_units", hidden_units)
        code_activation = code_activation or activation
        for field, value, choices in (("activation", activation, ACTIVATIONS),
                                      ("code_activation", code_activation, ACTIVATIONS),
                                      ("output_activation", output_activation, ACTIVATIONS),
                                      ("loss", loss, LOSSES), ("sparsity", sparsity, SPARSITY_PENALTIES),
                                      ("noise", noise, NOISE_KINDS)):
            require_choice(f"model.{field}", value, choices)
        require(sparsity_weight >= 0, "model.sparsity_weight", sparsity_weight, "use a weight >= 0")
        require(0.0 < sparsity_target < 1.0, "model.sparsity_target", sparsity_target,
                "use a target mean activation ρ in (0, 1), e.g. 0.05")
        require(sparsity != "kl" or "sigmoid" in (activation, code_activation), "model.code_activation",
                code_activation, "the KL sparsity penalty needs activations in (0, 1): use "
                "--set model.code_activation=sigmoid (or model.activation=sigmoid)")
        require(noise_level >= 0 and (noise != "masking" or noise_level < 1.0), "model.noise_level",
                noise_level, "use a Gaussian standard deviation >= 0, or a masked fraction in [0, 1)")
        self.activation, self.code_activation = activation, code_activation
        self.output_activation, self.loss_name = output_activation, loss
        self.sparsity, self.sparsity_weight, self.sparsity_target = sparsity, float(sparsity_weight), \
            float(sparsity_target)
        self.noise, self.noise_level = noise, float(noise_level)
        self.encoder_layers = [tf_keras.layers.Dense(units, name=f"encoder_{i}")
                               for i, units in enumerate(self.hidden_units)]
        self.decoder_layers = [tf_keras.layers.Dense(units, name=f"decoder_{i}")
                               for i, units in enumerate(self.hidden_units[-2::-1] + (self.patch_dim,))]

    def build(self, input_shape):
        width = self.patch_dim
        for layer in self.encoder_layers + self.decoder_layers:
            _build_dense(layer, width)
            width = layer.units
        self.built = True

    def _forward(self, patches: tf.Tensor) -> Tuple[List[tf.Tensor], tf.Tensor, tf.Tensor]:
        """``(hidden activations of every layer but the output, output logits, reconstruction)``."""
        hidden, x = [], patches
        for layer, activation in zip(self.encoder_layers + self.decoder_layers[:-1], self.hidden_activations):
            x = _activate(layer(x), activation)
            hidden.append(x)
        logits = self.decoder_layers[-1](x)
        return hidden, logits, _activate(logits, self.output_activation)

    @property
    def hidden_activations(self) -> List[str]:
        """Activation of every hidden layer: encoder (the code last), then decoder but the output."""
        encoder = [self.activation] * (len(self.hidden_units) - 1) + [self.code_activation]
        return encoder + [self.activation] * (len(self.hidden_units) - 1)

    def call(self, patches, training=None):
        x = patches
        for layer, activation in zip(self.encoder_layers, self.hidden_activations):
            x = _activate(layer(x), activation)
        return x

    def reconstruct(self, patches):
        return self._forward(patches)[2]

    def corrupt(self, patches: tf.Tensor) -> tf.Tensor:
        """The training input: ``patches`` with this model's noise (identity for ``noise="none"``)."""
        if self.noise == "gaussian" and self.noise_level > 0:
            return patches + self.noise_level * tf.random.normal(tf.shape(patches), dtype=patches.dtype)
        if self.noise == "masking" and self.noise_level > 0:
            keep = tf.random.uniform(tf.shape(patches), dtype=patches.dtype) >= self.noise_level
            return patches * tf.cast(keep, patches.dtype)
        return patches

    def _objective(self, patches: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Metrics of one batch; ``loss`` is the objective (batch mean)."""
        hidden, logits, output = self._forward(self.corrupt(patches))
        per_example = reconstruction_loss(
            patches, logits if self.output_activation == "sigmoid" else None, output, self.loss_name)
        penalty = tf.zeros([], patches.dtype)
        if self.sparsity == "l1":
            per_example += self.sparsity_weight * tf.add_n(
                [tf.reduce_mean(tf.abs(a), axis=-1) for a in hidden + [output]])
        elif self.sparsity == "kl":  # a batch statistic, not a per-example term
            penalty = self.sparsity_weight * tf.add_n([kl_sparsity(a, self.sparsity_target) for a, activation
                                                       in zip(hidden, self.hidden_activations)
                                                       if activation == "sigmoid"])
        codes = hidden[len(self.encoder_layers) - 1]
        metrics = {"loss": tf.reduce_mean(per_example) + penalty,
                   "reconstruction_error": tf.reduce_mean(tf.square(output - patches)),
                   **code_statistics(codes)}
        return metrics

    def train_step(self, data):
        with tf.GradientTape() as tape:
            metrics = self._objective(data["patch"])
        self.minimize(tape, metrics["loss"], self.trainable_variables)
        return metrics

    def test_step(self, data):
        return self._objective(data["patch"])

    def encoder_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((self.patch_dim,), name="patches")
        x = inputs
        for layer, activation in zip(self.encoder_layers, self.hidden_activations):
            x = tf_keras.layers.Activation(activation)(layer(x))
        return tf_keras.Model(inputs, x, name=f"{self.name}_encoder")

    def filters(self) -> Optional[np.ndarray]:
        return _dense_filters(self.encoder_layers[0].kernel, self.sample_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "activation": self.activation,
                "code_activation": self.code_activation,
                "output_activation": self.output_activation, "loss": self.loss_name,
                "sparsity": self.sparsity, "sparsity_weight": self.sparsity_weight,
                "sparsity_target": self.sparsity_target, "noise": self.noise, "noise_level": self.noise_level}


@register_model("stacked_autoencoder")
@tf_keras.utils.register_keras_serializable(package="ufl")
class StackedAutoencoder(FeatureLearner):
    """Greedy layer-wise autoencoders, a softmax trained on their codes, then fine-tuning end to end.

    Training runs in phases, one after the other (``phase_of_epoch``):

    1. greedy layer ``i`` (epochs ``[i·pretrain_epochs, (i+1)·pretrain_epochs)``): layer ``i`` and its own
       decoder learn to reconstruct layer ``i-1``'s code (the image for layer 0), which is held fixed; the
       loss of layer ``i`` is ``pretrain_losses[i]``: ``binary_crossentropy`` with a sigmoid decoder (for
       pixels in [0, 1]) or ``mse`` with a linear decoder;
    2. the softmax head alone on the fixed codes (``classifier_epochs`` epochs);
    3. fine-tuning: every encoder layer and the head on the labels, with the loop's optimizer.

    Each greedy layer and the head phase has its own optimizer (``pretrain_optimizer``), owned by the model
    and checkpointed with it, as a fresh ``compile`` would give each stage in Keras. ``pretrain_epochs=0``
    and ``classifier_epochs=0`` train the same network from scratch.

    Args:
      sample_shape: ``(P, P, C)`` of one sample (the input is its flattening).
      hidden_units: encoder layer sizes (default ``(128, 64)``); the last is the code size.
      num_classes: classes of the softmax head (> 1, default 10); labels must be in [0, num_classes).
      activation: hidden activation (default relu).
      pretrain_epochs: epochs per greedy layer (>= 0, default 5); 0 skips pretraining.
      pretrain_losses: loss of each greedy layer, ``mse`` (linear decoder) or ``binary_crossentropy``
        (sigmoid decoder); one name for every layer or one per layer (default ``mse``).
      classifier_epochs: epochs of the softmax head on the fixed codes before fine-tuning (>= 0, default 0).
      pretrain_optimizer: optimizer spec of every greedy layer and of the head phase.
    """

    requires_labels = True

    def __init__(self, sample_shape: Sequence[int], hidden_units: Sequence[int] = (128, 64),
                 num_classes: int = 10, activation: str = "relu", pretrain_epochs: int = 5,
                 pretrain_losses: Any = "mse", classifier_epochs: int = 0,
                 pretrain_optimizer: Optional[Dict[str, Any]] = None, **kwargs):
        super().__init__(sample_shape, **kwargs)
        self.hidden_units = _units("model.hidden_units", hidden_units)
        require(isinstance(num_classes, (int, np.integer)) and num_classes > 1, "model.num_classes",
                num_classes, "use the number of label classes (> 1), e.g. 10 for MNIST")
        require_choice("model.activation", activation, ACTIVATIONS)
        for field, value in (("pretrain_epochs", pretrain_epochs), ("classifier_epochs", classifier_epochs)):
            require(isinstance(value, (int, np.integer)) and value >= 0, f"model.{field}", value,
                    "use an integer >= 0 (0: skip this phase)")
        losses = [pretrain_losses] * len(self.hidden_units) if isinstance(pretrain_losses, str) \
            else list(pretrain_losses)
        require(len(losses) == len(self.hidden_units) and all(loss in LOSSES for loss in losses),
                "model.pretrain_losses", pretrain_losses,
                f"use one of {', '.join(LOSSES)} or a list of them, one per layer of {list(self.hidden_units)}")
        self.num_classes, self.activation = int(num_classes), activation
        self.pretrain_epochs, self.classifier_epochs = int(pretrain_epochs), int(classifier_epochs)
        self.pretrain_losses = tuple(losses)
        self.pretrain_optimizer = dict(pretrain_optimizer or {"name": "adam", "learning_rate": 1e-3})
        self.encoder_layers = [tf_keras.layers.Dense(units, name=f"encoder_{i}")
                               for i, units in enumerate(self.hidden_units)]
        self.decoder_layers = [tf_keras.layers.Dense(units, name=f"decoder_{i}") for i, units in
                               enumerate((self.patch_dim,) + self.hidden_units[:-1])]
        self.head = tf_keras.layers.Dense(self.num_classes, name="softmax_head")
        self.layer_optimizers = [make_optimizer(self.pretrain_optimizer) for _ in self.hidden_units]
        self.head_optimizer = make_optimizer(self.pretrain_optimizer)
        self.phase = self.phase_of_epoch(0)
        # The phase as a graph value too, for test_step: a traced evaluation (the loop traces it once)
        # then scores the current phase. Not tracked, so it is neither a weight nor in checkpoints.
        object.__setattr__(self, "_phase_index", tf.Variable(self.phase, dtype=tf.int32, trainable=False,
                                                             name="phase"))

    @property
    def head_phase(self) -> int:
        return len(self.hidden_units)

    @property
    def finetune_phase(self) -> int:
        return len(self.hidden_units) + 1

    def phase_of_epoch(self, epoch: int) -> int:
        """The phase of ``epoch`` (0-based): the greedy layer ``i`` it trains, ``head_phase`` or
        ``finetune_phase``."""
        pretraining = self.pretrain_epochs * len(self.hidden_units)
        if epoch < pretraining:
            return epoch // self.pretrain_epochs
        return self.head_phase if epoch < pretraining + self.classifier_epochs else self.finetune_phase

    def on_epoch_begin(self, epoch: int) -> bool:
        phase = self.phase_of_epoch(epoch)
        changed, self.phase = phase != self.phase, phase
        self._phase_index.assign(phase)
        return changed

    def build(self, input_shape):
        widths = (self.patch_dim,) + self.hidden_units
        for i, (encoder, decoder) in enumerate(zip(self.encoder_layers, self.decoder_layers)):
            _build_dense(encoder, widths[i])
            _build_dense(decoder, widths[i + 1])
            _create_slots(self.layer_optimizers[i], encoder.trainable_variables + decoder.trainable_variables)
        _build_dense(self.head, widths[-1])
        _create_slots(self.head_optimizer, self.head.trainable_variables)
        self.built = True

    def _encode_layers(self, patches: tf.Tensor, count: int) -> List[tf.Tensor]:
        codes, x = [], patches
        for layer in self.encoder_layers[:count]:
            x = _activate(layer(x), self.activation)
            codes.append(x)
        return codes

    def call(self, patches, training=None):
        return self._encode_layers(patches, len(self.hidden_units))[-1]

    def _decoder_activation(self, layer: int) -> str:
        return "sigmoid" if self.pretrain_losses[layer] == "binary_crossentropy" else "linear"

    def reconstruct(self, patches):
        """The image rebuilt through every greedy decoder, each with the activation it was trained with."""
        x = self(patches)
        for i in reversed(range(len(self.decoder_layers))):
            x = _activate(self.decoder_layers[i](x), self._decoder_activation(i))
        return x

    def _layer_loss(self, patches: tf.Tensor, layer: int) -> tf.Tensor:
        """Per-example reconstruction loss of greedy layer ``layer`` on its fixed input."""
        target = tf.stop_gradient(self._encode_layers(patches, layer)[-1] if layer else patches)
        logits = self.decoder_layers[layer](_activate(self.encoder_layers[layer](target), self.activation))
        activation = self._decoder_activation(layer)
        return reconstruction_loss(target, logits if activation == "sigmoid" else None,
                                   _activate(logits, activation), self.pretrain_losses[layer])

    def _phase_variables(self, phase: int) -> List[tf.Variable]:
        if phase < self.head_phase:
            return self.encoder_layers[phase].trainable_variables + self.decoder_layers[phase].trainable_variables
        encoder = sum((layer.trainable_variables for layer in self.encoder_layers), [])
        return (encoder if phase == self.finetune_phase else []) + self.head.trainable_variables

    def _phase_objective(self, data: Dict[str, tf.Tensor], phase: int) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
        """``(per-example loss of ``phase``, metrics)`` on one batch; ``loss`` in the metrics is its mean."""
        patches = data["patch"]
        if "label" not in data:
            raise ConfigError(f"{self.kind} needs labels (batch keys: {sorted(data)}); preprocess a labelled "
                              "source such as builtin:mnist or builtin:digits")
        labels = tf.cast(data["label"], tf.int32)
        logits = self.head(self(patches))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                                          tf.float32))
        if phase < self.head_phase:
            per_example = self._layer_loss(patches, phase)
        else:
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        metrics = {"loss": tf.reduce_mean(per_example), "accuracy": accuracy,
                   "reconstruction_error": tf.reduce_mean(tf.square(self.reconstruct(patches) - patches))}
        return per_example, metrics

    def train_step(self, data):
        with tf.GradientTape() as tape:
            _, metrics = self._phase_objective(data, self.phase)
        optimizer = {self.head_phase: self.head_optimizer, self.finetune_phase: self.optimizer}.get(
            self.phase) or self.layer_optimizers[self.phase]
        self.minimize(tape, metrics["loss"], self._phase_variables(self.phase), optimizer)
        return metrics

    def test_step(self, data):
        """Metrics of the current phase: during greedy layer ``i``, ``loss`` is that layer's reconstruction
        loss of its input; afterwards the cross-entropy of the labels. The phase is read in the graph, so a
        test_step traced in one phase still scores the current one."""
        branches = [lambda phase=phase: self._phase_objective(data, phase)[1]
                    for phase in range(self.head_phase + 1)]
        return tf.switch_case(tf.minimum(self._phase_index, self.head_phase), branches)

    def encoder_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((self.patch_dim,), name="patches")
        x = inputs
        for layer in self.encoder_layers:
            x = tf_keras.layers.Activation(self.activation)(layer(x))
        return tf_keras.Model(inputs, x, name=f"{self.name}_encoder")

    def classifier_model(self) -> tf_keras.Model:
        """Encoder + softmax head ``(batch, patch_dim) -> (batch, num_classes)`` probabilities."""
        encoder = self.encoder_model()
        probabilities = tf_keras.layers.Activation("softmax")(self.head(encoder.outputs[0]))
        return tf_keras.Model(encoder.inputs, probabilities, name=f"{self.name}_classifier")

    def filters(self) -> Optional[np.ndarray]:
        return _dense_filters(self.encoder_layers[0].kernel, self.sample_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "num_classes": self.num_classes,
                "activation": self.activation, "pretrain_epochs": self.pretrain_epochs,
                "pretrain_losses": list(self.pretrain_losses), "classifier_epochs": self.classifier_epochs,
                "pretrain_optimizer": dict(self.pretrain_optimizer)}


#: The whole 28x28 image is the sample, raw pixels in [0, 1] (``ufl preprocess --extract full --normalize none``),
#: on MNIST's own split: train on its 60,000 training digits, score on its 10,000 test digits.
MNIST_FULL = {"source": "builtin:mnist", "extract": "full", "normalize": "none", "eval_split": "source"}
#: Fashion-MNIST's whole images on its official split (60,000 train, 10,000 test).
FASHION_FULL = {"source": "builtin:fashion-mnist", "extract": "full", "normalize": "none", "eval_split": "source"}
DEEP_UNITS = [256, 128, 64, 32, 16]
#: Keras 2's RMSprop defaults (the stacked autoencoder reference compiles every stage with "rmsprop").
RMSPROP = {"name": "rmsprop", "learning_rate": 1e-3, "rho": 0.9, "epsilon": 1e-7}
#: Keras' validation_split=0.1 keeps the last 10% of the training digits out of training.
STACKED_DATA = {**MNIST_FULL, "train_images": "the reference trains on the first 54,000 training digits "
                "(benchmarks/reproduce.py does the same); the recipe above trains on all 60,000"}
STACKED = {"kind": "stacked_autoencoder", "hidden_units": [128, 64], "num_classes": 10, "activation": "relu",
           "pretrain_optimizer": RMSPROP}

PRESETS = [
    Preset(
        name="dense-ae",
        description="784-32(relu)-784(sigmoid) autoencoder, adadelta, binary cross-entropy: the classic "
        "Keras autoencoder on MNIST",
        model={"kind": "dense_autoencoder", "hidden_units": [32], "activation": "relu",
               "output_activation": "sigmoid", "loss": "binary_crossentropy"},
        # Keras 2's adadelta defaults (lr 1.0, rho 0.95, epsilon 1e-7); tf_keras' lr 0.001 barely moves.
        train={"epochs": 50, "batch_size": 256,
               "optimizer": {"name": "adadelta", "learning_rate": 1.0, "rho": 0.95, "epsilon": 1e-7}},
        data=MNIST_FULL,
        reference={"eval_loss": 0.09, "epochs": 50,
                   "source": "F. Chollet, 'Building Autoencoders in Keras', The Keras Blog, 2016 "
                             "(MNIST 60k/10k, the test digits as validation: 'a stable train/validation loss of about "
                             "0.09' after 50 epochs; 0.09-0.10 with Keras 2's adadelta)"},
        full_run=idle_run("24 s")),
    Preset(
        name="deep-sparse-ae",
        description="784-256-128-64-32-16 + mirrored decoder, ReLU, MSE + 0.001 mean|activations| (L1), "
        "Adam 1e-3, batch 32, 25 epochs on Fashion-MNIST",
        model={"kind": "dense_autoencoder", "hidden_units": DEEP_UNITS, "activation": "relu",
               "output_activation": "relu", "loss": "mse", "sparsity": "l1", "sparsity_weight": 1e-3},
        train={"epochs": 25, "batch_size": 32, "optimizer": {"name": "adam", "learning_rate": 1e-3}},
        data=FASHION_FULL,
        reference={"eval_reconstruction_error": 0.032, "epochs": 25,
                   "source": "S. R. Rath, 'Sparse Autoencoders using L1 Regularization with PyTorch', "
                             "DebuggerCafe, 2020 (Fashion-MNIST 60k/10k, validation MSE after 25 epochs)"},
        full_run=idle_run("81 s")),
    Preset(
        name="deep-sparse-ae-kl",
        description="the deep sparse autoencoder with the KL-divergence penalty instead of L1: sigmoid "
        "code (16 units, target mean activation 0.05, weight 0.01) on ReLU layers",
        model={"kind": "dense_autoencoder", "hidden_units": DEEP_UNITS, "activation": "relu",
               "code_activation": "sigmoid", "output_activation": "relu", "loss": "mse", "sparsity": "kl",
               "sparsity_weight": 0.01, "sparsity_target": 0.05},
        train={"epochs": 25, "batch_size": 32, "optimizer": {"name": "adam", "learning_rate": 1e-3}},
        data=FASHION_FULL,
        reference={"source": "the KL-divergence penalty the L1 reference names as its next step "
                             "(S. R. Rath, 'Sparse Autoencoders using KL Divergence with PyTorch', DebuggerCafe, "
                             "2020); Ng, 'Sparse autoencoder', CS294A notes, 2011"},
        full_run=idle_run("86 s")),
    Preset(
        name="denoising-ae",
        description="784-512(relu)-784(sigmoid) denoising autoencoder: Gaussian noise (std 0.5) on the "
        "input, clean target, binary cross-entropy",
        model={"kind": "dense_autoencoder", "hidden_units": [512], "activation": "relu",
               "output_activation": "sigmoid", "loss": "binary_crossentropy", "noise": "gaussian",
               "noise_level": 0.5},
        train={"epochs": 50, "batch_size": 128, "optimizer": {"name": "adam", "learning_rate": 1e-3}},
        data=MNIST_FULL,
        reference={"source": "Vincent, Larochelle, Bengio & Manzagol, 'Extracting and composing robust "
                             "features with denoising autoencoders', ICML 2008; noise factor 0.5 as in the "
                             "Keras blog's denoising example (qualitative: digits recovered from the noise)"},
        full_run=idle_run("194 s")),
    Preset(
        name="stacked-ae",
        description="784-128-64 ReLU trained greedily (50 epochs per layer: binary cross-entropy with a sigmoid "
        "decoder, then MSE with a linear decoder), a softmax on the codes (50 epochs), then 50 epochs of "
        "fine-tuning with labels, RMSprop, batch 256, on MNIST",
        model={**STACKED, "pretrain_epochs": 50, "pretrain_losses": ["binary_crossentropy", "mse"],
               "classifier_epochs": 50},
        train={"epochs": 200, "batch_size": 256, "optimizer": RMSPROP},
        data=STACKED_DATA,
        reference={"eval_accuracy": 0.978, "epochs": 200,
                   "source": "stacked autoencoder on MNIST (784-128-64 + softmax, Keras, RMSprop, batch 256, "
                             "50 epochs per greedy layer, 50 for the softmax, 50 of fine-tuning; 60k/10k "
                             "with 10% of train for validation): 97.8% test accuracy"},
        full_run=idle_run("92 s")),
    Preset(
        name="stacked-ae-scratch",
        description="the stacked-ae network (784-128-64 ReLU + softmax) trained from scratch with labels for "
        "50 epochs, RMSprop, batch 256: the baseline of stacked-ae",
        model={**STACKED, "pretrain_epochs": 0, "classifier_epochs": 0},
        train={"epochs": 50, "batch_size": 256, "optimizer": RMSPROP},
        data=STACKED_DATA,
        reference={"source": "baseline of stacked-ae: the same network and fine-tuning budget, random init"},
        full_run=idle_run("33 s")),
]
