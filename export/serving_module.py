"""The serving graph of a trained ufl model: raw pixels in, normalization inside, codes and features out.

``ServingModule`` is the ``tf.Module`` that ``ufl export`` saves (see ``saved_model.py``) and that
``ufl evaluate --run`` calls in process, so exported and in-process features are the same function. It
owns three ``tf.function``s, one per signature of ``export/signatures.py``:

  serving_default  patches (N, P*P*C) raw [0, 1] -> codes (N, K)
  reconstruct      patches (N, P*P*C) raw [0, 1] -> reconstruction (N, P*P*C) in raw pixel units
  encode_images    images (N, H, W, C) raw [0, 1] -> features (N, F)

The normalization statistics of RUN/data/stats.npz become constants of the graph (no variables, no
files), so a SavedModel is self-contained. ``encode_images`` is one graph from pixels to pooled features:
grid patches, normalization, the model's ``encode`` (for sparse coding the per-patch inference, which
screens out blank patches and lets each patch stop on its own) and pooling. Without ``xla`` (the default)
that inference shrinks its batch as patches finish; XLA needs fixed shapes and runs the batch loop instead
(measured in benchmarks/RESULTS.md, section Encoding).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ufl.export import signatures as sig
from ufl.pipeline.normalize import CONTRAST_EPSILON, STATS_KEYS, apply_normalization, invert_normalization
from ufl.pipeline.image_features import pooled_image_features


def normalization_of(metadata: Mapping) -> Tuple[Tuple[str, ...], float]:
    """``(steps, contrast_epsilon)`` of the normalization recorded in DATA/ metadata."""
    normalization = metadata.get("normalization") or {}
    steps = tuple(normalization.get("steps", ()))
    return steps, float(normalization.get("contrast_epsilon", CONTRAST_EPSILON))


def is_whole_image(metadata: Mapping) -> bool:
    """True when each sample of DATA/ is a whole image (``--extract full``), so image features = codes."""
    if metadata.get("extract") == "full":
        return True
    for key in ("image_size", "image_shape"):
        size = metadata.get(key)
        if size is not None and [int(s) for s in list(size)[:2]] == [int(s) for s in metadata["patch_size"]]:
            return True
    return False


def default_grid_stride(patch_size: int) -> int:
    """Stride of the dense patch grid of ``encode_images`` when the export config leaves it unset."""
    return max(1, patch_size // 4)


def graph_stats(steps: Sequence[str], stats: Mapping[str, np.ndarray], where: str) -> Dict[str, np.ndarray]:
    """The float32 statistics ``steps`` need; raises ValueError naming a missing key."""
    needed = {}
    for step in steps:
        for key in STATS_KEYS.get(step, ()):
            if key not in stats:
                raise ValueError(f"normalization step {step!r} needs {key!r}, which {where} lacks; "
                                 "re-run 'ufl preprocess' and 'ufl train'")
            needed[key] = np.asarray(stats[key], dtype=np.float32)
    return needed


class ServingModule(tf.Module):
    """The exported module of one trained model.

    Attributes:
      model_variables: every variable of the model (what the SavedModel stores).
      trainable_model_variables: the model's trainable variables (``load_encoder(trainable=True)``).
      signature_functions: ``{signature name: tf.function}`` for ``tf.saved_model.save``.
      info: what ``assets/ufl.json`` records about the graph (image mode, stride, feature size).
    """

    def __init__(self, model, metadata: Mapping, stats: Mapping[str, np.ndarray], *,
                 grid_stride: Optional[int] = None, pool_grid: int = 2, xla: bool = False):
        super().__init__(name="ufl_serving")
        self._model = model  # a Python reference only: tf.Module does not track tf_keras models' internals
        self.model_variables = list(model.variables)
        self.trainable_model_variables = list(model.trainable_variables)
        rows, cols = (int(s) for s in metadata["patch_size"])
        channels = int(metadata["channels"])
        if rows != cols:
            raise ValueError(f"patch_size {metadata['patch_size']} is not square; ufl exports square patches")
        self.patch_size, self.channels = rows, channels
        self.patch_dim = rows * cols * channels
        self.steps, self.contrast_epsilon = normalization_of(metadata)
        self._stats = graph_stats(self.steps, stats, "RUN/data/stats.npz")
        self.whole_image = is_whole_image(metadata)
        self.grid_stride = int(grid_stride or default_grid_stride(rows))
        self.pool_grid = int(pool_grid)
        self.xla = bool(xla)

        patches_spec = tf.TensorSpec([None, self.patch_dim], tf.float32, name=sig.PATCHES_INPUT)
        if self.whole_image:
            images_spec = tf.TensorSpec([None, rows, cols, channels], tf.float32, name=sig.IMAGES_INPUT)
        else:
            images_spec = tf.TensorSpec([None, None, None, channels], tf.float32, name=sig.IMAGES_INPUT)

        def serve_codes(patches):
            return {sig.CODES_OUTPUT: self.encode_raw_patches(patches)}

        def serve_reconstruction(patches):
            normalized = self.normalize(patches)
            reconstruction = self._model.reconstruct(normalized)
            return {sig.RECONSTRUCTION_OUTPUT: invert_normalization(
                reconstruction, patches, self.steps, self._stats, xp=tf.experimental.numpy,
                contrast_epsilon=self.contrast_epsilon)}

        def serve_features(images):
            return {sig.FEATURES_OUTPUT: self.image_features(images)}

        self.serving_default = tf.function(serve_codes, input_signature=[patches_spec], jit_compile=self.xla)
        self.encode_images = tf.function(serve_features, input_signature=[images_spec], jit_compile=self.xla)
        self.signature_functions = {sig.SERVING_DEFAULT: self.serving_default,
                                    sig.ENCODE_IMAGES: self.encode_images}
        if getattr(model, "supports_reconstruction", False):
            reconstruct = tf.function(serve_reconstruction, input_signature=[patches_spec], jit_compile=self.xla)
            try:
                reconstruct.get_concrete_function()
            except NotImplementedError:  # the flag is inherited but the model has no reconstruct()
                pass
            else:
                self.reconstruct = reconstruct
                self.signature_functions[sig.RECONSTRUCT] = reconstruct

    def normalize(self, patches: tf.Tensor) -> tf.Tensor:
        """``(N, patch_dim)`` raw patches -> normalized patches, exactly as DATA/ was written."""
        return tf.convert_to_tensor(apply_normalization(
            patches, self.steps, self._stats, xp=tf.experimental.numpy,
            contrast_epsilon=self.contrast_epsilon), dtype=tf.float32)

    def encode_raw_patches(self, patches: tf.Tensor) -> tf.Tensor:
        """Codes ``(N, K)`` of ``(N, patch_dim)`` raw patches."""
        return tf.cast(self._model.encode(self.normalize(patches)), tf.float32)

    def image_features(self, images: tf.Tensor) -> tf.Tensor:
        """Features ``(N, F)`` of ``(N, H, W, C)`` raw images: the codes when a sample is a whole image,
        else codes of every patch on a grid, split by sign and sum-pooled over ``pool_grid``^2 regions."""
        if self.whole_image:
            return self.encode_raw_patches(tf.reshape(images, [-1, self.patch_dim]))
        return pooled_image_features(images, self.encode_raw_patches, patch_size=self.patch_size,
                                     stride=self.grid_stride, pool_grid=self.pool_grid)

    @property
    def code_size(self) -> int:
        return int(self.serving_default.get_concrete_function().structured_outputs[sig.CODES_OUTPUT].shape[-1])

    @property
    def feature_size(self) -> int:
        outputs = self.encode_images.get_concrete_function().structured_outputs
        return int(outputs[sig.FEATURES_OUTPUT].shape[-1])

    @property
    def info(self) -> dict:
        return {
            "image_mode": "whole_image" if self.whole_image else "pooled_patch_grid",
            "grid_stride": None if self.whole_image else self.grid_stride,
            "pool_grid": None if self.whole_image else self.pool_grid,
            "split_sign": not self.whole_image,
            "feature_size": self.feature_size,
            "code_size": self.code_size,
            "signatures": sorted(self.signature_functions),
            "jit_compile": self.xla,
        }
