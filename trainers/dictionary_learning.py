"""Online dictionary learning (Mairal, Bach, Ponce & Sapiro 2009), one mini-batch at a time, in TF ops.

Per batch of patches S ``(batch, patch_dim)`` with sparse codes X ``(batch, n_atoms)``:

1. Sufficient statistics with forgetting: ``C ← β·C + XᵀX / n`` and ``B ← β·B + XᵀS / n`` (``C`` is
   ``(n_atoms, n_atoms)``, ``B`` is ``(n_atoms, patch_dim)``, n the global batch size). β is
   ``(1 − 1/t)^ρ`` at batch t (Mairal et al., JMLR 2010, §3.4.2 "scaling the past data"): with the
   forgetting rate ρ > 0 the statistics weigh batch s by about ``(s/t)^ρ``, so codes inferred under the
   early, poor dictionaries fade out. ρ = 0 selects scikit-learn's ``MiniBatchDictionaryLearning``
   schedule instead, which weighs batch s by about s/t for the first n batches (ρ ≈ 1) and then forgets at
   the rate 1/n per batch.
2. Block coordinate descent over the atoms (rows of A), warm-started at the current dictionary:
   ``a_j ← a_j + (B_j − C_j·A) / C_jj``, then ``a_j`` is projected onto the unit ball ``‖a_j‖ <= 1``
   (the constraint of the paper; onto the unit sphere when ``unit_norm`` is exact). Atoms no patch has used
   yet (``C_jj`` ≈ 0) are left unchanged.

Under tf.distribute each replica computes its batch's ``XᵀX`` and ``XᵀS``; they are summed across replicas
(all-reduce) before the update, so every replica applies the same update and holds the same dictionary.
"""
from __future__ import annotations

from typing import Tuple

import tensorflow as tf

#: Atoms whose accumulated code energy C_jj is below this are not updated (no patch has used them).
UNUSED_ATOM_THRESHOLD = 1e-10


def forgetting_factor(step: tf.Tensor, batch_size: tf.Tensor, *, rate: float = 0.0) -> tf.Tensor:
    """β of batch number ``step`` (0-based) for global batches of ``batch_size`` patches.

    ``rate`` ρ > 0: β = (1 − 1/t)^ρ with t = step + 1 (Mairal et al. 2010, §3.4.2). ``rate`` 0: the schedule
    of scikit-learn: θ = (t+1)·n for t < n − 1, else n² + t + 1 − n; β = (θ + 1 − n) / (θ + 1).
    """
    step = tf.cast(step, tf.float32)
    if rate > 0:
        return tf.pow(1.0 - 1.0 / (step + 1.0), float(rate))
    batch_size = tf.cast(batch_size, tf.float32)
    theta = tf.where(step < batch_size - 1.0, (step + 1.0) * batch_size,
                     batch_size * batch_size + step + 1.0 - batch_size)
    return (theta + 1.0 - batch_size) / (theta + 1.0)


def batch_statistics(codes: tf.Tensor, patches: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(XᵀX, XᵀS, n)`` of a batch, summed over every replica when called in a replica context of a
    multi-replica strategy. Shapes ``(n_atoms, n_atoms)``, ``(n_atoms, patch_dim)``, scalar."""
    code_gram = tf.matmul(codes, codes, transpose_a=True)
    code_patch = tf.matmul(codes, patches, transpose_a=True)
    count = tf.cast(tf.shape(codes)[0], tf.float32)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        code_gram, code_patch, count = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [code_gram, code_patch, count])
    return code_gram, code_patch, count


def update_statistics(code_gram_stat: tf.Tensor, code_patch_stat: tf.Tensor, codes: tf.Tensor,
                      patches: tf.Tensor, step: tf.Tensor, *, forgetting_rate: float = 0.0
                      ) -> Tuple[tf.Tensor, tf.Tensor]:
    """New ``(C, B)`` after the batch ``(codes, patches)``; ``step`` is the 0-based batch number and
    ``forgetting_rate`` the ρ of ``forgetting_factor``."""
    code_gram, code_patch, count = batch_statistics(codes, patches)
    beta = forgetting_factor(step, count, rate=forgetting_rate)
    return beta * code_gram_stat + code_gram / count, beta * code_patch_stat + code_patch / count


def update_dictionary(dictionary: tf.Tensor, code_gram_stat: tf.Tensor, code_patch_stat: tf.Tensor, *,
                      n_passes: int = 1, unit_norm: bool = False) -> tf.Tensor:
    """Block coordinate descent on ``½ tr(AᵀCA) − tr(AᵀB)`` over the atoms, warm-started at ``dictionary``.

    Args:
      dictionary: ``(n_atoms, patch_dim)`` current atoms (rows).
      code_gram_stat: C ``(n_atoms, n_atoms)``.
      code_patch_stat: B ``(n_atoms, patch_dim)``.
      n_passes: sweeps over all atoms (> 0).
      unit_norm: project every updated atom onto the unit sphere instead of the unit ball.
    Returns:
      The updated ``(n_atoms, patch_dim)`` dictionary.
    """
    n_atoms = tf.shape(dictionary)[0]
    total = n_passes * n_atoms

    def body(i, atoms):
        j = i % n_atoms
        diagonal = code_gram_stat[j, j]
        row = tf.matmul(code_gram_stat[j][tf.newaxis, :], atoms)[0]
        updated = atoms[j] + (code_patch_stat[j] - row) / tf.maximum(diagonal, UNUSED_ATOM_THRESHOLD)
        norm = tf.norm(updated)
        updated = updated / (tf.maximum(norm, 1e-12) if unit_norm else tf.maximum(norm, 1.0))
        updated = tf.where(diagonal > UNUSED_ATOM_THRESHOLD, updated, atoms[j])
        atoms = tf.tensor_scatter_nd_update(atoms, [[j]], updated[tf.newaxis, :])
        return i + 1, atoms

    _, dictionary = tf.while_loop(lambda i, _: i < total, body, (tf.constant(0), dictionary))
    return dictionary


def replace_redundant_atoms(dictionary: tf.Tensor, code_gram_stat: tf.Tensor, code_patch_stat: tf.Tensor,
                            patches: tf.Tensor, *, max_cosine: float = 0.95
                            ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Replaces atoms that duplicate an earlier atom (|cos| > ``max_cosine``) by batch patches.

    Two atoms converging to the same feature is the usual local minimum of dictionary learning; SPAMS
    prunes such atoms the same way (``clean``). Atom j is replaced by patch ``j mod batch`` (normalized) and
    its rows and columns of the statistics are cleared, so the next updates learn it afresh.

    Args:
      dictionary: ``(n_atoms, patch_dim)``.
      code_gram_stat, code_patch_stat: C ``(n_atoms, n_atoms)`` and B ``(n_atoms, patch_dim)``.
      patches: ``(batch, patch_dim)``, the same on every replica (the caller's job).
      max_cosine: atoms more similar than this to an earlier atom are replaced.
    Returns:
      ``(dictionary, C, B)`` updated.
    """
    norms = tf.maximum(tf.norm(dictionary, axis=1, keepdims=True), 1e-12)
    unit = dictionary / norms
    cosines = tf.abs(tf.matmul(unit, unit, transpose_b=True))
    earlier = tf.linalg.band_part(tf.ones_like(cosines), -1, 0) - tf.eye(tf.shape(cosines)[0])
    duplicate = tf.reduce_any((cosines * earlier) > max_cosine, axis=1)
    index = tf.range(tf.shape(dictionary)[0]) % tf.shape(patches)[0]
    fresh = tf.gather(patches, index)
    fresh /= tf.maximum(tf.norm(fresh, axis=1, keepdims=True), 1e-12)
    keep = tf.cast(tf.logical_not(duplicate), dictionary.dtype)[:, tf.newaxis]
    dictionary = tf.where(duplicate[:, tf.newaxis], fresh, dictionary)
    return dictionary, code_gram_stat * keep * tf.transpose(keep), code_patch_stat * keep
