"""Online dictionary learning's sufficient statistics: how fast they forget early batches."""
import numpy as np
import pytest
import tensorflow as tf

from ufl.trainers.dictionary_learning import forgetting_factor, update_statistics


def share_of_early_batches(rate, *, early=50, late=50, batch=128, n_atoms=4):
    """Fraction of the code-Gram statistic C that the first ``early`` batches still hold after ``late`` more:
    early batches use only atom 0, later ones only atom 1, so C[0, 0] / trace(C) is the early batches' share."""
    code_gram, code_patch = tf.zeros([n_atoms, n_atoms]), tf.zeros([n_atoms, 3])
    patches = tf.ones([batch, 3])
    for step in range(early + late):
        codes = tf.one_hot(tf.fill([batch], 0 if step < early else 1), n_atoms)
        code_gram, code_patch = update_statistics(code_gram, code_patch, codes, patches, tf.constant(step),
                                                  forgetting_rate=rate)
    code_gram = code_gram.numpy()
    return code_gram[0, 0] / np.trace(code_gram)


def test_forgetting_rate_fades_out_the_statistics_of_early_batches():
    # rate 0 (scikit-learn's schedule) weighs batch s by about s/t during the first batch_size (128) batches,
    # so the early half of the run still holds about 1275/5050 of C; rate 20 weighs it by about (s/t)^20,
    # which leaves the early half below 0.1%
    assert share_of_early_batches(0.0) == pytest.approx(1275 / 5050, abs=0.01)
    assert share_of_early_batches(20.0) < 1e-3
    assert share_of_early_batches(5.0) > share_of_early_batches(20.0)


def test_forgetting_factor_replaces_the_first_batch_and_grows_towards_one():
    for rate in (0.0, 1.0, 20.0):
        betas = [float(forgetting_factor(tf.constant(step), tf.constant(256.0), rate=rate)) for step in range(400)]
        assert betas[0] < 0.01  # the first batch's statistics (all but) replace the zeros
        assert all(0.0 <= a <= b < 1.0 for a, b in zip(betas, betas[1:]))
