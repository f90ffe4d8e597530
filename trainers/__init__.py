"""ufl.trainers: feature learners (sparse coding, autoencoders, Földiák) and the one training loop.

What a user builds on, each importable from here (loaded on first use)::

    from ufl.trainers import (SparseCoding, DenseAutoencoder, StackedAutoencoder, ConvAutoencoder,
                              TiedConvAutoencoder, FoldiakNetwork, sparse_encode, train)

The models take batches of flattened patches ``(batch, P*P*C)`` and give codes ``(batch, n_codes)``;
``train`` runs any of them on a DATA/ directory of ``ufl preprocess`` into a RUN/ directory.

Examples (each runs as written; a test executes them):

``SparseCoding``, the Keras layer: codes of 8x8 patches under 32 learned atoms.

    >>> import numpy as np
    >>> from ufl.trainers import SparseCoding
    >>> layer = SparseCoding(32, sparsity_weight=0.1)
    >>> layer(np.random.default_rng(0).normal(size=(5, 64)).astype("float32")).shape
    TensorShape([5, 32])

``sparse_encode``, the pure function under it: lasso codes ``(batch, n_atoms)`` of patches under a dictionary.

    >>> from ufl.trainers import sparse_encode
    >>> dictionary = np.eye(4, 16, dtype="float32")
    >>> patches = 3 * dictionary[:2]
    >>> print(np.round(sparse_encode(patches, dictionary, sparsity_weight=0.1).numpy(), 2))
    [[2.9 0.  0.  0. ]
     [0.  2.9 0.  0. ]]

``DenseAutoencoder`` and ``StackedAutoencoder``: codes of 28x28 images.

    >>> from ufl.trainers import DenseAutoencoder, StackedAutoencoder
    >>> images = np.random.default_rng(0).uniform(size=(3, 784)).astype("float32")
    >>> DenseAutoencoder((28, 28, 1), hidden_units=[64, 16]).encode(images).shape
    TensorShape([3, 16])
    >>> StackedAutoencoder((28, 28, 1), hidden_units=[64, 32]).encode(images).shape
    TensorShape([3, 32])

``ConvAutoencoder`` and ``TiedConvAutoencoder``: flattened feature maps (14x14x32), and reconstructions.

    >>> from ufl.trainers import ConvAutoencoder, TiedConvAutoencoder
    >>> ConvAutoencoder((28, 28, 1)).encode(images).shape
    TensorShape([3, 6272])
    >>> TiedConvAutoencoder((28, 28, 1)).reconstruct(images).shape
    TensorShape([3, 784])

``FoldiakNetwork`` and ``train``: see their own docstrings.
"""
from __future__ import annotations

import importlib

from ufl.trainers.base import FeatureLearner
from ufl.trainers.registry import build_model, model_kinds, register_model

#: The public names loaded on first use (importing every model family costs a second at start-up).
_LAZY = {
    "SparseCoding": "ufl.trainers.sparse_coding",
    "DenseAutoencoder": "ufl.trainers.autoencoders",
    "StackedAutoencoder": "ufl.trainers.autoencoders",
    "ConvAutoencoder": "ufl.trainers.conv_autoencoders",
    "TiedConvAutoencoder": "ufl.trainers.conv_autoencoders",
    "FoldiakNetwork": "ufl.trainers.foldiak",
    "sparse_encode": "ufl.trainers.sparse_inference",
    "train": "ufl.trainers.train_loop",
}

__all__ = sorted(_LAZY) + ["FeatureLearner", "build_model", "model_kinds", "register_model"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'ufl.trainers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
