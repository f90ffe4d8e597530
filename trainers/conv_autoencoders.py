"""Convolutional autoencoders: the classic Keras conv autoencoder and the Lasagne tied-weight autoencoder.

Two FeatureLearners, trained by the one loop (``ufl train conv-ae`` / ``ufl train tied-conv-ae``):

- ``conv_autoencoder`` (:class:`ConvAutoencoder`): Conv 3×3×32 (relu) → maxpool 2 → Conv 3×3×32 (relu) →
  upsample 2 → Conv 3×3×C (sigmoid), binary cross-entropy; the code is the second conv's feature maps.
  The classic Keras convolutional autoencoder (Chollet, "Building Autoencoders in Keras", 2016).
- ``tied_conv_autoencoder`` (:class:`TiedConvAutoencoder`): Conv 5×5×32 tanh → maxpool → Conv 5×5×32 tanh →
  maxpool → flatten → Dense 256 (dropout 0.5) → Dense back to the flattened size (512 for 28×28) → reshape →
  upsample → transposed conv → upsample → transposed conv. Each transposed convolution's kernel **is** the
  kernel variable of the mirrored encoder conv (:class:`TiedConv2DTranspose` holds no kernel of its own),
  so a gradient step updates one variable through both uses: the Lasagne tied-weight autoencoder.

Batches are dicts with ``patch`` float32 ``(batch, P*P*C)``, reshaped to ``(batch, P, P, C)`` images.
``plot_feature_maps`` draws the first layer's feature maps of a few samples (``write_plots`` puts it in
RUN/plots beside the loop's ``filters.png``).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from ufl.config.base import ConfigError, require, require_choice
from ufl.trainers.base import FeatureLearner
from ufl.trainers.losses import reconstruction_loss
from ufl.trainers.presets import Preset, idle_run
from ufl.trainers.registry import register_model

LOSSES = ("binary_crossentropy", "mse")
OUTPUT_ACTIVATIONS = ("sigmoid", "linear")


def upsample(images: tf.Tensor, factor: int = 2) -> tf.Tensor:
    """Nearest-neighbour upsampling of ``(batch, H, W, C)`` by repeating pixels (as UpSampling2D), written with
    broadcasting so that its gradient compiles with XLA (ResizeNearestNeighborGrad has no XLA CPU kernel)."""
    _, rows, cols, channels = images.shape
    tiled = tf.broadcast_to(images[:, :, None, :, None, :],
                            tf.stack([tf.shape(images)[0], rows, factor, cols, factor, channels]))
    return tf.reshape(tiled, (-1, rows * factor, cols * factor, channels))


def kernel_images(kernel: tf.Variable) -> np.ndarray:
    """A conv kernel ``(k, k, C, n)`` as ``n`` images ``(n, k, k, C)``."""
    return np.transpose(np.asarray(kernel.numpy()), (3, 0, 1, 2))


class _ConvAutoencoderBase(FeatureLearner):
    """Shared training/evaluation steps; subclasses define ``_forward(images, training) -> (codes, logits)``."""

    xla_on_cpu = False  # XLA's CPU convolutions are slower than oneDNN's (benchmarks/presets.py)

    def __init__(self, sample_shape, loss: str, output_activation: str, **kwargs):
        super().__init__(sample_shape, **kwargs)
        require_choice("model.loss", loss, LOSSES)
        require_choice("model.output_activation", output_activation, OUTPUT_ACTIVATIONS)
        self.loss_name, self.output_activation = loss, output_activation

    def _images(self, patches: tf.Tensor) -> tf.Tensor:
        return tf.reshape(patches, (-1,) + self.sample_shape)

    def _output(self, logits: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(logits) if self.output_activation == "sigmoid" else logits

    def build(self, input_shape):
        # One forward pass creates every variable (encoder and decoder) on the loop's first call.
        self._forward(tf.zeros((1,) + self.sample_shape), training=False)
        self.built = True

    def call(self, patches, training=None):
        return self._forward(self._images(patches), training=False, decode=False)[0]

    def reconstruct(self, patches):
        logits = self._forward(self._images(patches), training=False)[1]
        return tf.reshape(self._output(logits), (-1, self.patch_dim))

    def _objective(self, patches: tf.Tensor, training: bool) -> Dict[str, tf.Tensor]:
        images = self._images(patches)
        codes, logits = self._forward(images, training=training)
        sigmoid_logits = logits if self.output_activation == "sigmoid" else None
        per_example = reconstruction_loss(images, sigmoid_logits, self._output(logits), self.loss_name)
        nonzero = tf.cast(tf.not_equal(codes, 0.0), codes.dtype)
        return {"loss": tf.reduce_mean(per_example),
                             "reconstruction_error": tf.reduce_mean(tf.square(self._output(logits) - images)),
                             "sparsity": tf.reduce_mean(nonzero)}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            metrics = self._objective(data["patch"], training=True)
        self.minimize(tape, metrics["loss"], self.trainable_variables)
        return metrics

    def test_step(self, data):
        return self._objective(data["patch"], training=False)

    def encoder_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((self.patch_dim,), name="patches")
        return tf_keras.Model(inputs, self.call(inputs), name=f"{self.name}_encoder")

    def feature_maps(self, patches: tf.Tensor) -> tf.Tensor:
        """First-layer feature maps ``(batch, H', W', filters)`` of ``(batch, patch_dim)`` patches."""
        return self.first_conv(self._images(patches))

    def filters(self) -> Optional[np.ndarray]:
        return kernel_images(self.first_conv.kernel)

    def write_plots(self, plot_dir: str, patches: np.ndarray) -> Dict[str, str]:
        """Writes ``feature_maps.png`` of a few ``(n, patch_dim)`` patches to RUN/plots; returns its path."""
        path = os.path.join(plot_dir, "feature_maps.png")
        plot_feature_maps(self, patches, path)
        return {"feature_maps": path}


def _check_side(sample_shape: Sequence[int], preset: str, valid: Callable[[int], bool], rule: str,
                example: int) -> None:
    rows, cols, _ = sample_shape
    if not (valid(rows) and valid(cols)):
        raise ConfigError(f"{preset} needs samples whose side {rule}; DATA/ has samples of "
                          f"{rows}x{cols}x{sample_shape[2]}; rerun 'ufl preprocess' with --patch-size "
                          f"{example} (or --extract full on {example}x{example} images)")


@register_model("conv_autoencoder")
@tf_keras.utils.register_keras_serializable(package="ufl")
class ConvAutoencoder(_ConvAutoencoderBase):
    """The classic Keras convolutional autoencoder.

    Args:
      sample_shape: ``(P, P, C)`` of one sample; P must be even (one 2×2 pooling, undone by upsampling).
      filters: feature maps of both convolutions, > 0 (default 32).
      kernel_size: side of the square kernels, odd >= 1 (default 3).
      loss: ``binary_crossentropy`` (default; inputs in [0, 1]) or ``mse``, mean over pixels.
      output_activation: ``sigmoid`` (default) or ``linear``.
    Codes: the second convolution's maps, flattened to ``(batch, P/2 * P/2 * filters)``.
    """

    def __init__(self, sample_shape, filters: int = 32, kernel_size: int = 3,
                 loss: str = "binary_crossentropy", output_activation: str = "sigmoid", **kwargs):
        super().__init__(sample_shape, loss, output_activation, **kwargs)
        require(int(filters) > 0, "model.filters", filters, "use a positive number of feature maps, e.g. 32")
        require(int(kernel_size) > 0 and int(kernel_size) % 2 == 1, "model.kernel_size", kernel_size,
                "use an odd kernel side such as 3")
        _check_side(self.sample_shape, "conv-ae", lambda side: side % 2 == 0, "is even", 28)
        self.n_filters, self.kernel_size = int(filters), int(kernel_size)
        conv = dict(kernel_size=self.kernel_size, padding="same")
        self.first_conv = tf_keras.layers.Conv2D(self.n_filters, activation="relu", name="conv_1", **conv)
        self.pool = tf_keras.layers.MaxPooling2D(2, name="pool")
        self.second_conv = tf_keras.layers.Conv2D(self.n_filters, activation="relu", name="conv_2", **conv)
        self.output_conv = tf_keras.layers.Conv2D(self.sample_shape[2], name="conv_out", **conv)

    def _forward(self, images, training=False, decode=True):
        maps = self.second_conv(self.pool(self.first_conv(images)))
        codes = tf.reshape(maps, (-1, int(np.prod(maps.shape[1:]))))
        logits = self.output_conv(upsample(maps)) if decode else None
        return codes, logits

    def get_config(self):
        return {**super().get_config(), "filters": self.n_filters, "kernel_size": self.kernel_size,
                "loss": self.loss_name, "output_activation": self.output_activation}


class TiedConv2DTranspose(tf_keras.layers.Layer):
    """A transposed convolution (stride 1, VALID) whose kernel is ``kernel_owner``'s kernel variable.

    The Conv2D kernel ``(k, k, C_in, C_out)`` maps C_in → C_out channels; used as the filter of
    ``tf.nn.conv2d_transpose`` it maps C_out → C_in channels and grows each side by k - 1, undoing the
    conv's shape. The layer owns only its bias: the kernel is read from the owner at every call, so it is
    the same tf.Variable (not a copy) and gradients from both uses add up in it.
    """

    def __init__(self, kernel_owner: tf_keras.layers.Conv2D, activation: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        # A getter rather than an attribute: the owner stays the only layer that tracks the kernel.
        self._owner_kernel = lambda: kernel_owner.kernel
        self.activation = tf_keras.activations.get(activation)

    @property
    def kernel(self) -> tf.Variable:
        return self._owner_kernel()

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(self.kernel.shape[2],), initializer="zeros")
        self.built = True

    def call(self, inputs):
        rows, cols, _, _ = self.kernel.shape
        output_shape = tf.stack([tf.shape(inputs)[0], inputs.shape[1] + rows - 1, inputs.shape[2] + cols - 1,
                                 self.kernel.shape[2]])
        outputs = tf.nn.conv2d_transpose(inputs, self.kernel, output_shape, strides=1, padding="VALID")
        return self.activation(outputs + self.bias)


@register_model("tied_conv_autoencoder")
@tf_keras.utils.register_keras_serializable(package="ufl")
class TiedConvAutoencoder(_ConvAutoencoderBase):
    """The Lasagne tied-weight convolutional autoencoder.

    Args:
      sample_shape: ``(P, P, C)``; P must be a multiple of 4 and >= 16 (two VALID 5×5 convs and two 2×2
        pools must tile exactly: 28 → 24 → 12 → 8 → 4).
      filters: feature maps of both convolutions, > 0 (default 32).
      kernel_size: side of the square kernels, >= 1 (default 5; the size rule above is for 5).
      code_units: size of the dense code, > 0 (default 256).
      dropout: dropout rate after the code during training, in [0, 1) (default 0.5).
      loss: ``mse`` (default, squared error as in the reference) or ``binary_crossentropy``.
      output_activation: ``sigmoid`` (default; inputs in [0, 1]) or ``linear``.
    Codes: ``(batch, code_units)`` tanh activations of the dense code layer.
    """

    def __init__(self, sample_shape, filters: int = 32, kernel_size: int = 5, code_units: int = 256,
                 dropout: float = 0.5, loss: str = "mse", output_activation: str = "sigmoid", **kwargs):
        super().__init__(sample_shape, loss, output_activation, **kwargs)
        require(int(filters) > 0, "model.filters", filters, "use a positive number of feature maps, e.g. 32")
        require(int(kernel_size) > 0, "model.kernel_size", kernel_size, "use a positive kernel side such as 5")
        require(int(code_units) > 0, "model.code_units", code_units, "use a positive code size, e.g. 256")
        require(0.0 <= float(dropout) < 1.0, "model.dropout", dropout, "use a rate in [0, 1), e.g. 0.5")
        self.n_filters, self.kernel_size = int(filters), int(kernel_size)
        self.code_units, self.dropout_rate = int(code_units), float(dropout)
        shrink = self.kernel_size - 1

        def tiles(side: int) -> bool:
            first = side - shrink
            return first > 0 and first % 2 == 0 and first // 2 - shrink > 0 and (first // 2 - shrink) % 2 == 0

        _check_side(self.sample_shape, "tied-conv-ae", tiles,
                    f"minus {shrink} is even and, halved, minus {shrink} is even and positive", 28)
        self.bottleneck_shape = tuple(((side - shrink) // 2 - shrink) // 2 for side in self.sample_shape[:2]) \
            + (self.n_filters,)
        conv = dict(kernel_size=self.kernel_size, padding="valid", activation="tanh")
        self.first_conv = tf_keras.layers.Conv2D(self.n_filters, name="conv_1", **conv)
        self.second_conv = tf_keras.layers.Conv2D(self.n_filters, name="conv_2", **conv)
        self.pool = tf_keras.layers.MaxPooling2D(2, name="pool")
        self.flatten = tf_keras.layers.Flatten(name="flatten")
        self.code = tf_keras.layers.Dense(self.code_units, activation="tanh", name="code")
        self.dropout = tf_keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.expand = tf_keras.layers.Dense(int(np.prod(self.bottleneck_shape)), activation="tanh",
                                            name="expand")
        self.second_deconv = TiedConv2DTranspose(self.second_conv, activation="tanh", name="deconv_2")
        self.first_deconv = TiedConv2DTranspose(self.first_conv, name="deconv_1")

    def _forward(self, images, training=False, decode=True):
        codes = self.code(self.flatten(self.pool(self.second_conv(self.pool(self.first_conv(images))))))
        if not decode:
            return codes, None
        x = tf.reshape(self.expand(self.dropout(codes, training=training)), (-1,) + self.bottleneck_shape)
        x = self.second_deconv(upsample(x))
        return codes, self.first_deconv(upsample(x))

    def decode(self, codes: tf.Tensor) -> tf.Tensor:
        """Reconstruction images ``(batch, P, P, C)`` of ``(batch, code_units)`` codes."""
        x = tf.reshape(self.expand(codes), (-1,) + self.bottleneck_shape)
        return self._output(self.first_deconv(upsample(self.second_deconv(upsample(x)))))

    def get_config(self):
        return {**super().get_config(), "filters": self.n_filters, "kernel_size": self.kernel_size,
                "code_units": self.code_units, "dropout": self.dropout_rate, "loss": self.loss_name,
                "output_activation": self.output_activation}


def plot_feature_maps(model: _ConvAutoencoderBase, patches: np.ndarray, path: str, *, n_samples: int = 4,
                      n_maps: int = 8) -> None:
    """Draws, for ``n_samples`` of ``(n, patch_dim)`` patches, the input and its first ``n_maps``
    first-layer feature maps (one row per sample), and the first-layer kernels in the last row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patches = np.asarray(patches, np.float32)[:n_samples]
    maps = model.feature_maps(tf.constant(patches)).numpy()
    kernels = model.filters()
    n_maps = min(n_maps, maps.shape[-1])
    figure, axes = plt.subplots(len(patches) + 1, n_maps + 1, figsize=(1.4 * (n_maps + 1),
                                                                         1.4 * (len(patches) + 1)),
                                squeeze=False)
    for row, patch in enumerate(patches):
        image = patch.reshape(model.sample_shape)
        axes[row, 0].imshow(image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 1), cmap="gray")
        axes[row, 0].set_title("input" if row == 0 else "", fontsize=7)
        for column in range(n_maps):
            axes[row, column + 1].imshow(maps[row, :, :, column], cmap="viridis")
            if row == 0:
                axes[row, column + 1].set_title(f"map {column}", fontsize=7)
    axes[-1, 0].text(0.5, 0.5, "first-layer\nkernels", ha="center", va="center", fontsize=7)
    axes[-1, 0].axis("off")
    for column in range(n_maps):
        axes[-1, column + 1].imshow(kernels[column].mean(axis=-1), cmap="gray")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


#: Whole 28x28 MNIST digits, raw pixels in [0, 1]; its own split: 60,000 training, 10,000 test digits.
_MNIST_FULL_IMAGES = {"source": "builtin:mnist", "extract": "full", "normalize": "none", "eval_split": "source"}

PRESETS = [
    Preset(
        name="conv-ae",
        description="Keras convolutional autoencoder (Conv 3x3x32 relu, maxpool 2, Conv 3x3x32 relu, upsample 2, "
                    "Conv 3x3x1 sigmoid) on whole 28x28 MNIST digits, binary cross-entropy, RMSprop, batch 256, "
                    "10 epochs",
        model={"kind": "conv_autoencoder", "filters": 32, "kernel_size": 3, "loss": "binary_crossentropy",
               "output_activation": "sigmoid"},
        train={"epochs": 10, "batch_size": 256,
               "optimizer": {"name": "rmsprop", "learning_rate": 1e-3, "rho": 0.9, "epsilon": 1e-7}},
        data=dict(_MNIST_FULL_IMAGES),
        reference={"architecture": "conv 3x3x32 relu / maxpool 2 / conv 3x3x32 relu / upsample 2 / "
                                   "conv 3x3x1 sigmoid; rmsprop, binary cross-entropy, batch 256, 10 epochs",
                   "note": "the reference shows reconstructions and first-layer feature maps, no loss figure",
                   "source": "Keras convolutional autoencoder on MNIST 60k/10k (validation on the test digits)"},
        full_run=idle_run("4.6 min", note="jit_compile auto: no XLA on CPU")
    ),
    Preset(
        name="tied-conv-ae",
        description="Lasagne tied-weight convolutional autoencoder (Conv 5x5x32 tanh, pool, Conv 5x5x32, pool, "
                    "Dense 256 + dropout 0.5, Dense 512, upsample, transposed convs sharing the conv kernels) on "
                    "28x28 MNIST digits",
        model={"kind": "tied_conv_autoencoder", "filters": 32, "kernel_size": 5, "code_units": 256,
               "dropout": 0.5, "loss": "mse", "output_activation": "sigmoid"},
        train={"epochs": 20, "batch_size": 128, "optimizer": {"name": "adam", "learning_rate": 1e-3}},
        data=dict(_MNIST_FULL_IMAGES),
        reference={"architecture": "conv 5x5x32 tanh / pool / conv 5x5x32 / pool / dense 256 (dropout 0.5) / "
                                   "dense 512 / upsample / tied transposed conv",
                   "note": "the reference publishes reconstructions, not a loss figure; ours reports MSE",
                   "source": "Lasagne tied-weight convolutional autoencoder on MNIST (Theano/Lasagne, 2015)"},
        full_run=idle_run("7.0 min", note="jit_compile auto: no XLA on CPU")
    ),
]
