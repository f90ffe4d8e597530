"""Sparse inference: the codes x of patches s under a dictionary A, in pure TF ops (XLA-compilable).

Every patch is coded independently: ``s ≈ x·A`` with ``A`` of shape ``(n_atoms, patch_dim)`` (one atom per
row) and ``x`` of shape ``(n_atoms,)``. Three methods:

- ``fista`` / ``ista`` minimize the lasso objective ``½‖s − xA‖² + γ‖x‖₁`` exactly: proximal gradient
  steps of size 1/L (L = largest eigenvalue of ``AAᵀ``, by power iteration) with soft-thresholding, FISTA
  with Nesterov momentum (Beck & Teboulle 2009), stopping when the largest code change of the batch is below ``tolerance``. The gradient
  ``xAAᵀ − sAᵀ`` uses the Gram matrix ``G = AAᵀ`` when that is cheaper than two products with ``A``.
- ``rmsprop`` is the inference of the original Keras/Theano sparse-coding layer, reproduced step for step:
  codes start at zero and take ``n_steps`` RMSprop steps (rho 0.9, learning rate 0.001, momentum 0.9 with
  the look-ahead update of that layer, epsilon 1e-8) on ``Σ(s − xA)² + γ·Σ√(x² + 1e-7)`` summed over the
  batch. It does not reach the lasso optimum; it is there for fidelity with the original demo.

With ``per_patch`` (the served codes of sparse-coding models) (F)ISTA runs patch by patch instead of as one
batch: patches whose optimal code is 0 are screened out and each other patch stops on its own
(``ufl.trainers.active_set``).

``truncate_gradient`` chooses what gradients see of the iterations: ``-1`` all of them (backpropagation
through the unrolled loop), ``k > 0`` the last ``k`` (the earlier ones run under ``stop_gradient``), ``0``
none (the codes are constants).
"""
from __future__ import annotations

import functools
from typing import Optional

import tensorflow as tf

from ufl.trainers import active_set

METHODS = ("fista", "ista", "rmsprop")

#: Smoothing of |x| in the RMSprop cost of the original layer: |x| ≈ √(x² + SMOOTH_ABS_EPSILON).
SMOOTH_ABS_EPSILON = 1e-7


def lipschitz_constant(dictionary: tf.Tensor, *, n_iterations: int = 50, safety: float = 1.02) -> tf.Tensor:
    """Upper estimate of the largest eigenvalue of ``AAᵀ`` (the Lipschitz constant of the lasso gradient).

    Power iteration on the smaller of ``AAᵀ`` and ``AᵀA`` (same nonzero eigenvalues). Power iteration
    approaches the eigenvalue from below, so the result is multiplied by ``safety`` to keep 1/L a safe step.

    Args:
      dictionary: ``(n_atoms, patch_dim)``.
      n_iterations: power-iteration steps.
      safety: factor (>= 1) applied to the estimate.
    Returns:
      float32 scalar.
    """
    dictionary = tf.convert_to_tensor(dictionary, tf.float32)
    if dictionary.shape[0] is not None and dictionary.shape[1] is not None \
            and dictionary.shape[0] > dictionary.shape[1]:
        gram = tf.matmul(dictionary, dictionary, transpose_a=True)
    else:
        gram = tf.matmul(dictionary, dictionary, transpose_b=True)
    vector = tf.ones([tf.shape(gram)[0], 1], gram.dtype) / tf.sqrt(tf.cast(tf.shape(gram)[0], gram.dtype))

    def step(_, vector):
        product = tf.matmul(gram, vector)
        return _ + 1, product / (tf.norm(product) + 1e-30)

    _, vector = tf.while_loop(lambda i, _: i < n_iterations, step, (0, vector))
    eigenvalue = tf.reduce_sum(vector * tf.matmul(gram, vector))
    return eigenvalue * safety + 1e-12


def lasso_objective(patches: tf.Tensor, codes: tf.Tensor, dictionary: tf.Tensor, *,
                    sparsity_weight: float) -> tf.Tensor:
    """Per-patch lasso objective ``½‖s − xA‖² + γ‖x‖₁``, shape ``(batch,)``."""
    residual = patches - tf.matmul(codes, dictionary)
    return 0.5 * tf.reduce_sum(tf.square(residual), -1) + sparsity_weight * tf.reduce_sum(tf.abs(codes), -1)


def soft_threshold(values: tf.Tensor, threshold, *, non_negative: bool = False) -> tf.Tensor:
    """The proximal operator of ``threshold·‖x‖₁`` (plus the constraint x >= 0 when ``non_negative``)."""
    if non_negative:
        return tf.nn.relu(values - threshold)
    return values - tf.clip_by_value(values, -threshold, threshold)  # = sign(v)·max(|v| − threshold, 0)


def _gradient_operator(patches, dictionary):
    """``(correlations, apply_gram)``: ``sAᵀ`` and the map ``x -> xAAᵀ``, through the Gram matrix when the
    dictionary has at most twice as many atoms as patch dimensions (then one K×K product beats two K×D)."""
    correlations = tf.matmul(patches, dictionary, transpose_b=True)
    n_atoms, patch_dim = dictionary.shape[0], dictionary.shape[1]
    if n_atoms is None or patch_dim is None or n_atoms <= 2 * patch_dim:
        gram = tf.matmul(dictionary, dictionary, transpose_b=True)
        return correlations, lambda codes: tf.matmul(codes, gram)
    return correlations, lambda codes: tf.matmul(tf.matmul(codes, dictionary), dictionary, transpose_b=True)


def _proximal_iterations(codes, correlations, apply_gram, *, threshold_step, step, accelerate,
                         non_negative, max_steps, tolerance):
    """Runs (F)ISTA from ``codes`` until the largest change is below ``tolerance`` or ``max_steps``.
    Returns ``(codes, steps_taken)``."""
    def body(i, codes, momentum_point, t, _):
        gradient = apply_gram(momentum_point) - correlations
        new_codes = soft_threshold(momentum_point - step * gradient, threshold_step, non_negative=non_negative)
        change = tf.reduce_max(tf.abs(new_codes - codes))
        if not accelerate:
            return i + 1, new_codes, new_codes, t, change
        new_t = (1.0 + tf.sqrt(1.0 + 4.0 * t * t)) / 2.0
        new_point = new_codes + ((t - 1.0) / new_t) * (new_codes - codes)
        return i + 1, new_codes, new_point, new_t, change

    def cond(i, codes, momentum_point, t, change):
        return tf.logical_and(i < max_steps, change >= tolerance)

    initial = (tf.constant(0), codes, codes, tf.constant(1.0), tf.constant(float("inf")))
    steps, codes, _, _, _ = tf.while_loop(cond, body, initial, maximum_iterations=max_steps)
    return codes, steps


def _gradient_step_operator(patches, correlations, dictionary, step):
    """``(data, gradient_step)``: per-patch data and the map ``(point, data) -> point − step·∇`` of the
    lasso's smooth part, written with as few full-size elementwise operations as possible (they, not the
    products, dominate a step on small patches): through the ``patch_dim`` residual
    ``point + (s − point·A)·(step·Aᵀ)`` (data: the patches), or, when one K×K product beats two K×D, through
    ``point·(I − step·AAᵀ) + step·sAᵀ`` (data: the scaled correlations)."""
    n_atoms, patch_dim = dictionary.shape[0], dictionary.shape[1]
    if n_atoms is None or patch_dim is None or n_atoms <= 2 * patch_dim:
        descent = tf.eye(tf.shape(dictionary)[0]) - step * tf.matmul(dictionary, dictionary, transpose_b=True)
        return step * correlations, lambda point, data: tf.matmul(point, descent) + data
    scaled_atoms = step * tf.transpose(dictionary)
    return patches, lambda point, data: point + tf.matmul(data - tf.matmul(point, dictionary), scaled_atoms)


def _fista_steps(codes, momentum_point, t, data, n_steps, *, gradient_step, threshold_step, accelerate,
                 non_negative):
    """``n_steps`` >= 1 (F)ISTA steps continuing from ``(codes, momentum_point, t)`` (``t`` a scalar: the
    rows of a per-patch batch all started together); returns them and each patch's largest code change in
    the last step ``(batch,)``, computed for that step only."""
    def step(codes, momentum_point, t):
        new_codes = soft_threshold(gradient_step(momentum_point, data), threshold_step, non_negative=non_negative)
        if not accelerate:
            return new_codes, new_codes, t
        new_t = (1.0 + tf.sqrt(1.0 + 4.0 * t * t)) / 2.0
        return new_codes, new_codes + ((t - 1.0) / new_t) * (new_codes - codes), new_t

    _, codes, momentum_point, t = tf.while_loop(
        lambda i, *_: i < n_steps - 1, lambda i, *state: (i + 1, *step(*state)),
        (tf.constant(0), codes, momentum_point, t))
    new_codes, momentum_point, t = step(codes, momentum_point, t)
    return new_codes, momentum_point, t, tf.reduce_max(tf.abs(new_codes - codes), -1)


def _in_xla_cluster() -> bool:
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph())


def _rmsprop_iterations(codes, accumulator, velocity, patches, dictionary, correlations, apply_gram, *,
                        sparsity_weight, n_steps, learning_rate, rho, momentum, epsilon):
    """``n_steps`` RMSprop steps of the original layer; returns ``(codes, accumulator, velocity)``."""
    def body(i, codes, accumulator, velocity):
        # d/dx of Σ(s − xA)² + γΣ√(x² + ε): 2(xAAᵀ − sAᵀ) + γ x / √(x² + ε)
        gradient = 2.0 * (apply_gram(codes) - correlations) \
            + sparsity_weight * codes / tf.sqrt(tf.square(codes) + SMOOTH_ABS_EPSILON)
        accumulator = rho * accumulator + (1.0 - rho) * tf.square(gradient)
        scaled = learning_rate * gradient / tf.sqrt(accumulator + epsilon)
        velocity = momentum * velocity - scaled
        codes = codes + momentum * velocity - scaled
        return i + 1, codes, accumulator, velocity

    _, codes, accumulator, velocity = tf.while_loop(
        lambda i, *_: i < n_steps, body, (tf.constant(0), codes, accumulator, velocity),
        maximum_iterations=n_steps)
    return codes, accumulator, velocity


def sparse_encode(patches: tf.Tensor, dictionary: tf.Tensor, *, sparsity_weight: float = 0.1,
                  method: str = "fista", max_steps: int = 200, tolerance: float = 1e-4,
                  non_negative: bool = False, lipschitz: Optional[tf.Tensor] = None,
                  initial_codes: Optional[tf.Tensor] = None, truncate_gradient: int = 0,
                  n_steps: int = 100, learning_rate: float = 0.001, rho: float = 0.9,
                  momentum: float = 0.9, epsilon: float = 1e-8, per_patch: bool = False,
                  check_every: int = 10) -> tf.Tensor:
    """Sparse codes of ``patches`` under ``dictionary``.

    Args:
      patches: float32 ``(batch, patch_dim)``.
      dictionary: float32 ``(n_atoms, patch_dim)``, one atom per row.
      sparsity_weight: γ >= 0, weight of the L1 penalty. Default 0.1.
      method: ``fista`` (default), ``ista`` or ``rmsprop`` (the original layer's inference).
      max_steps: (F)ISTA: at most this many steps (> 0). Default 200.
      tolerance: (F)ISTA: stop when the largest code change of the batch (with ``per_patch``: of the patch)
        is below it (>= 0; 0 runs all ``max_steps``). Default 1e-4.
      non_negative: (F)ISTA: constrain codes to x >= 0; RMSprop: clip the final codes at 0.
      lipschitz: (F)ISTA: the largest eigenvalue of ``AAᵀ`` if already known (else power iteration).
      initial_codes: (F)ISTA: warm start ``(batch, n_atoms)`` (default zeros).
      truncate_gradient: ``-1`` backpropagate through every step, ``k > 0`` through the last ``k``
        (for (F)ISTA: ``k`` extra steps after convergence), ``0`` treat the codes as constants. Default 0.
      n_steps: RMSprop: number of steps (the original ``n_steps``). Default 100.
      learning_rate, rho, momentum, epsilon: RMSprop settings of the original layer (0.001, 0.9, 0.9, 1e-8).
      per_patch: (F)ISTA with constant codes (``truncate_gradient`` 0) outside XLA: patches whose optimal code
        is 0 are screened out, and each other patch stops on its own, its early exit checked every
        ``check_every`` steps (``ufl.trainers.active_set``). Inside an XLA cluster the batch loop runs instead.
      check_every: steps between two early-exit checks with ``per_patch`` (> 0). Default 10.
    Returns:
      float32 codes ``(batch, n_atoms)``.
    """
    if method not in METHODS:
        raise ValueError(f"inference method {method!r} is invalid; use one of: {', '.join(METHODS)}")
    patches = tf.convert_to_tensor(patches, tf.float32)
    dictionary = tf.convert_to_tensor(dictionary, tf.float32)
    if patches.shape[-1] is not None and dictionary.shape[-1] is not None \
            and patches.shape[-1] != dictionary.shape[-1]:
        raise ValueError(f"patches have length {patches.shape[-1]} but the dictionary's atoms have length "
                         f"{dictionary.shape[-1]}; use patches of the size the dictionary was built for")
    truncate_gradient = int(truncate_gradient)
    full_gradient = truncate_gradient < 0
    frozen_dictionary = dictionary if full_gradient else tf.stop_gradient(dictionary)
    frozen_patches = patches if full_gradient else tf.stop_gradient(patches)
    correlations, apply_gram = _gradient_operator(frozen_patches, frozen_dictionary)
    frozen = (frozen_patches, frozen_dictionary, correlations, apply_gram)
    if method == "rmsprop":
        codes = _rmsprop_codes(patches, dictionary, frozen, truncate_gradient=truncate_gradient, n_steps=n_steps,
                               sparsity_weight=sparsity_weight, learning_rate=learning_rate, rho=rho,
                               momentum=momentum, epsilon=epsilon)
        return tf.nn.relu(codes) if non_negative else codes
    return _proximal_codes(patches, dictionary, frozen, method=method, sparsity_weight=sparsity_weight,
                           max_steps=max_steps, tolerance=tolerance, non_negative=non_negative,
                           lipschitz=lipschitz, initial_codes=initial_codes,
                           truncate_gradient=truncate_gradient, per_patch=per_patch, check_every=check_every)


def _rmsprop_codes(patches, dictionary, frozen, *, truncate_gradient: int, n_steps: int, **settings) -> tf.Tensor:
    """The original layer's RMSprop inference; the last ``truncate_gradient`` steps (all when -1) on the
    differentiable patches and dictionary, the others on ``frozen`` = (patches, dictionary, correlations,
    Gram operator) with gradients stopped."""
    frozen_patches, frozen_dictionary, correlations, apply_gram = frozen
    full_gradient = truncate_gradient < 0
    zeros = tf.zeros([tf.shape(patches)[0], tf.shape(dictionary)[0]], tf.float32)
    tail = n_steps if full_gradient else min(max(truncate_gradient, 0), n_steps)
    codes, accumulator, velocity = zeros, zeros, zeros
    if n_steps > tail:
        codes, accumulator, velocity = _rmsprop_iterations(
            codes, accumulator, velocity, frozen_patches, frozen_dictionary, correlations, apply_gram,
            n_steps=n_steps - tail, **settings)
    if tail:
        correlations, apply_gram = _gradient_operator(patches, dictionary)
        codes, _, _ = _rmsprop_iterations(codes, accumulator, velocity, patches, dictionary,
                                          correlations, apply_gram, n_steps=tail, **settings)
    return codes if truncate_gradient != 0 else tf.stop_gradient(codes)


def _proximal_codes(patches, dictionary, frozen, *, method: str, sparsity_weight: float, max_steps: int,
                    tolerance: float, non_negative: bool, lipschitz, initial_codes, truncate_gradient: int,
                    per_patch: bool, check_every: int) -> tf.Tensor:
    """(F)ISTA codes: per patch (screened, each stopping on its own) or as a batch loop; with
    ``truncate_gradient`` k > 0, k differentiable ISTA steps after convergence."""
    frozen_patches, frozen_dictionary, correlations, apply_gram = frozen
    if lipschitz is None:
        lipschitz = lipschitz_constant(tf.stop_gradient(dictionary))
    step = 1.0 / tf.cast(lipschitz, tf.float32)
    codes = (tf.zeros([tf.shape(patches)[0], tf.shape(dictionary)[0]], tf.float32) if initial_codes is None
             else initial_codes)
    settings = dict(threshold_step=sparsity_weight * step, step=step, accelerate=method == "fista",
                    non_negative=non_negative)
    if per_patch and truncate_gradient == 0 and not _in_xla_cluster():
        data, gradient_step = _gradient_step_operator(frozen_patches, correlations, frozen_dictionary, step)
        run_steps = functools.partial(_fista_steps, gradient_step=gradient_step, threshold_step=sparsity_weight * step,
                                      accelerate=method == "fista", non_negative=non_negative)
        return tf.stop_gradient(active_set.per_patch_codes(
            correlations, data, codes, run_steps, sparsity_weight=sparsity_weight, non_negative=non_negative,
            max_steps=max_steps, tolerance=tolerance, check_every=check_every))
    codes, _ = _proximal_iterations(codes, correlations, apply_gram, max_steps=max_steps,
                                    tolerance=tolerance, **settings)
    if truncate_gradient > 0:
        codes = tf.stop_gradient(codes)
        correlations, apply_gram = _gradient_operator(patches, dictionary)
        settings["accelerate"] = False
        codes, _ = _proximal_iterations(codes, correlations, apply_gram, max_steps=truncate_gradient,
                                        tolerance=0.0, **settings)
        return codes
    return codes if truncate_gradient < 0 else tf.stop_gradient(codes)
