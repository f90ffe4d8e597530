"""Sparse inference (ufl.trainers.sparse_inference) against NumPy references and scikit-learn."""
import numpy as np
import pytest
import tensorflow as tf
from sklearn.decomposition import sparse_encode as sklearn_sparse_encode

from ufl.trainers import sparse_inference
from ufl.trainers.active_set import zero_code_patches
from ufl.trainers.sparse_inference import lasso_objective, lipschitz_constant

GAMMA = 0.1
#: compiled once per option set: an eager tf.while_loop would run step by step in Python
sparse_encode = tf.function(sparse_inference.sparse_encode)


@pytest.fixture(scope="module")
def problem():
    """40 patches of 24 dims drawn from a 48-atom unit-norm dictionary with 4 nonzeros each, plus noise."""
    rng = np.random.default_rng(0)
    dictionary = rng.standard_normal((48, 24)).astype(np.float32)
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    codes = np.zeros((40, 48), np.float32)
    for row in codes:
        row[rng.choice(48, 4, replace=False)] = rng.standard_normal(4) * 2
    patches = codes @ dictionary + 0.05 * rng.standard_normal((40, 24)).astype(np.float32)
    return patches.astype(np.float32), dictionary


def numpy_objective(patches, codes, dictionary, gamma=GAMMA):
    return 0.5 * np.sum((patches - codes @ dictionary) ** 2, 1) + gamma * np.abs(codes).sum(1)


def numpy_fista(patches, dictionary, gamma, steps, lipschitz):
    """Textbook FISTA (Beck & Teboulle 2009) on ½‖s − xA‖² + γ‖x‖₁, float64."""
    patches, dictionary = patches.astype(np.float64), dictionary.astype(np.float64)
    codes = np.zeros((len(patches), len(dictionary)))
    point, t = codes.copy(), 1.0
    for _ in range(steps):
        gradient = (point @ dictionary - patches) @ dictionary.T
        value = point - gradient / lipschitz
        new_codes = np.sign(value) * np.maximum(np.abs(value) - gamma / lipschitz, 0)
        new_t = (1 + np.sqrt(1 + 4 * t * t)) / 2
        point = new_codes + (t - 1) / new_t * (new_codes - codes)
        codes, t = new_codes, new_t
    return codes


def numpy_rmsprop(patches, dictionary, gamma, steps):
    """The original Keras/Theano layer's inference: zero start, RMSprop (rho .9, lr .001, momentum .9 with
    its look-ahead step, eps 1e-8) on Σ(s − xA)² + γΣ√(x² + 1e-7)."""
    patches, dictionary = patches.astype(np.float64), dictionary.astype(np.float64)
    codes = np.zeros((len(patches), len(dictionary)))
    accumulator, velocity = np.zeros_like(codes), np.zeros_like(codes)
    for _ in range(steps):
        gradient = 2 * (codes @ dictionary - patches) @ dictionary.T + gamma * codes / np.sqrt(codes ** 2 + 1e-7)
        accumulator = 0.9 * accumulator + 0.1 * gradient ** 2
        velocity = 0.9 * velocity - 0.001 * gradient / np.sqrt(accumulator + 1e-8)
        codes = codes + 0.9 * velocity - 0.001 * gradient / np.sqrt(accumulator + 1e-8)
    return codes


def test_lipschitz_constant_bounds_the_largest_eigenvalue(problem):
    _, dictionary = problem
    exact = np.linalg.eigvalsh(dictionary.astype(np.float64) @ dictionary.T.astype(np.float64)).max()
    estimate = float(lipschitz_constant(dictionary))
    assert exact <= estimate <= 1.05 * exact


def test_fista_matches_numpy_reference_step_for_step(problem):
    patches, dictionary = problem
    lipschitz = float(lipschitz_constant(dictionary))
    codes = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=30, tolerance=0.0,
                          lipschitz=lipschitz).numpy()
    expected = numpy_fista(patches, dictionary, GAMMA, 30, lipschitz)
    np.testing.assert_allclose(codes, expected, atol=2e-4)


@pytest.mark.parametrize("method", ["fista", "ista"])
def test_codes_reach_scikit_learn_lasso_optimum(problem, method):
    patches, dictionary = problem
    reference = sklearn_sparse_encode(patches.astype(np.float64), dictionary.astype(np.float64),
                                      algorithm="lasso_cd", alpha=GAMMA, max_iter=5000)
    codes = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, method=method, max_steps=3000,
                          tolerance=1e-7).numpy()
    ours, theirs = numpy_objective(patches, codes, dictionary), numpy_objective(patches, reference, dictionary)
    assert ours.mean() <= theirs.mean() * (1 + 1e-4)
    np.testing.assert_allclose(codes, reference, atol=5e-3)
    # the optimum is sparse: nonzeros where scikit-learn has them, and far fewer than atoms
    assert np.mean(np.abs(codes) > 1e-6) < 0.35
    np.testing.assert_array_equal(np.abs(codes) > 1e-3, np.abs(reference) > 1e-3)


def test_non_negative_codes_match_positive_lasso(problem):
    patches, dictionary = problem
    reference = sklearn_sparse_encode(patches.astype(np.float64), dictionary.astype(np.float64),
                                      algorithm="lasso_cd", alpha=GAMMA, max_iter=5000, positive=True)
    codes = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, non_negative=True, max_steps=3000,
                          tolerance=1e-7).numpy()
    assert codes.min() >= 0
    np.testing.assert_allclose(codes, reference, atol=5e-3)


def test_early_exit_stops_near_the_optimum_with_few_steps(problem):
    patches, dictionary = problem
    exact = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=3000, tolerance=1e-7)
    loose = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=3000, tolerance=1e-3)
    few = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=3, tolerance=0.0)
    objective = lambda codes: float(tf.reduce_mean(lasso_objective(patches, codes, dictionary,  # noqa: E731
                                                                   sparsity_weight=GAMMA)))
    assert objective(loose) <= objective(exact) * 1.01
    assert objective(few) > objective(exact) * 1.01


def test_rmsprop_reproduces_the_original_layer(problem):
    patches, dictionary = problem
    codes = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, method="rmsprop", n_steps=10).numpy()
    np.testing.assert_allclose(codes, numpy_rmsprop(patches, dictionary, GAMMA, 10), atol=1e-4)
    # after 100 steps float32 rounding near x = 0 (where √(x² + 1e-7) bends sharply) scatters a few codes by
    # ~1e-2, as it does between float32 and float64 NumPy; the codes and the cost still agree
    codes = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, method="rmsprop", n_steps=100).numpy()
    expected = numpy_rmsprop(patches, dictionary, GAMMA, 100)
    assert np.median(np.abs(codes - expected)) < 1e-3
    assert np.abs(codes - expected).max() < 0.03
    cost = lambda x: np.sum((patches - x @ dictionary) ** 2) + GAMMA * np.sqrt(x ** 2 + 1e-7).sum()  # noqa: E731
    assert abs(cost(codes) / cost(expected) - 1) < 1e-3


def test_xla_compiled_inference_matches_eager(problem):
    patches, dictionary = problem
    for method in ("fista", "rmsprop"):
        encode = lambda s, a: sparse_inference.sparse_encode(  # noqa: E731
            s, a, sparsity_weight=GAMMA, method=method, n_steps=10)
        np.testing.assert_allclose(tf.function(encode, jit_compile=True)(patches, dictionary).numpy(),
                                   encode(patches, dictionary).numpy(), atol=1e-4)


def _dictionary_gradient(patches, dictionary, truncate_gradient, method="rmsprop"):
    dictionary = tf.Variable(dictionary)
    with tf.GradientTape() as tape:
        codes = sparse_inference.sparse_encode(
            patches, dictionary, sparsity_weight=GAMMA, method=method, n_steps=5,
            max_steps=5, tolerance=0.0, truncate_gradient=truncate_gradient)
        loss = tf.reduce_sum(tf.square(patches - tf.matmul(codes, dictionary)))
    return tape.gradient(loss, dictionary).numpy(), codes.numpy()


def test_truncate_gradient_zero_gives_the_closed_form_dictionary_gradient(problem):
    patches, dictionary = problem
    gradient, codes = _dictionary_gradient(patches, dictionary, 0)
    np.testing.assert_allclose(gradient, -2 * codes.T @ (patches - codes @ dictionary), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["rmsprop", "fista"])
def test_truncate_gradient_backpropagates_through_the_steps(problem, method):
    patches, dictionary = problem
    constant, _ = _dictionary_gradient(patches, dictionary, 0, method)
    every, _ = _dictionary_gradient(patches, dictionary, -1, method)
    last_two, _ = _dictionary_gradient(patches, dictionary, 2, method)
    assert np.abs(every - constant).max() > 1e-2 * np.abs(constant).max()
    assert np.abs(last_two - constant).max() > 1e-3 * np.abs(constant).max()
    if method == "rmsprop":  # all 5 steps = every step
        all_five, _ = _dictionary_gradient(patches, dictionary, 5, method)
        np.testing.assert_allclose(all_five, every, rtol=1e-4, atol=1e-5)


def test_wrong_patch_length_is_refused(problem):
    patches, dictionary = problem
    with pytest.raises(ValueError, match="patches have length 23 but the dictionary's atoms have length 24"):
        sparse_inference.sparse_encode(patches[:, :23], dictionary)


def test_unknown_method_is_refused(problem):
    patches, dictionary = problem
    with pytest.raises(ValueError, match="inference method 'lars' is invalid; use one of: fista, ista, rmsprop"):
        sparse_inference.sparse_encode(patches, dictionary, method="lars")


def test_per_patch_codes_equal_the_batch_loop_without_early_exit(problem):
    patches, dictionary = problem
    patches = np.concatenate([patches, np.zeros_like(patches[:5])])  # blank patches: screened, code 0
    batch = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=40, tolerance=0.0).numpy()
    per_patch = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=40, tolerance=0.0,
                              per_patch=True).numpy()
    np.testing.assert_allclose(per_patch, batch, atol=1e-5)
    np.testing.assert_array_equal(per_patch[-5:], 0.0)


@pytest.mark.parametrize("n_atoms", [48, 64])  # 48 <= 2 x 24: through the Gram matrix; 64: through the atoms
@pytest.mark.parametrize("method,non_negative", [("fista", False), ("fista", True), ("ista", False)])
def test_per_patch_steps_are_the_batch_loop_steps_on_both_gradient_forms(n_atoms, method, non_negative):
    rng = np.random.default_rng(1)
    dictionary = rng.standard_normal((n_atoms, 24)).astype(np.float32)
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    patches = (rng.standard_normal((30, n_atoms)) * (rng.random((30, n_atoms)) < 0.1)) @ dictionary
    patches = (patches + 0.05 * rng.standard_normal((30, 24))).astype(np.float32)
    settings = dict(sparsity_weight=GAMMA, method=method, non_negative=non_negative, max_steps=25, tolerance=0.0)
    per_patch = sparse_encode(patches, dictionary, per_patch=True, **settings).numpy()
    np.testing.assert_allclose(per_patch, sparse_encode(patches, dictionary, **settings).numpy(), atol=1e-5)
    if method == "fista" and not non_negative:
        reference = numpy_fista(patches, dictionary, GAMMA, 25, lipschitz_constant(dictionary).numpy())
        np.testing.assert_allclose(per_patch, reference, atol=1e-4)


@pytest.mark.parametrize("non_negative", [False, True])
def test_per_patch_codes_reach_the_optimum_of_a_long_exact_solve(problem, non_negative):
    patches, dictionary = problem
    exact = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=3000, tolerance=1e-7,
                          non_negative=non_negative)
    codes = sparse_encode(patches, dictionary, sparsity_weight=GAMMA, max_steps=3000, tolerance=1e-5,
                          non_negative=non_negative, per_patch=True)
    objective = lambda codes: lasso_objective(patches, codes, dictionary, sparsity_weight=GAMMA).numpy()  # noqa: E731
    np.testing.assert_allclose(objective(codes), objective(exact), rtol=1e-4)
    assert not non_negative or codes.numpy().min() >= 0


def test_per_patch_inside_xla_falls_back_to_the_batch_loop(problem):
    patches, dictionary = problem
    encode = lambda s, a, per_patch: sparse_inference.sparse_encode(  # noqa: E731
        s, a, sparsity_weight=GAMMA, max_steps=50, tolerance=0.0, per_patch=per_patch)
    compiled = tf.function(encode, jit_compile=True)(patches, dictionary, True).numpy()
    np.testing.assert_allclose(compiled, tf.function(encode)(patches, dictionary, False).numpy(), atol=1e-4)


def test_zero_code_patches_are_those_within_the_penalty(problem):
    patches, dictionary = problem
    correlations = patches @ dictionary.T
    peak = np.abs(correlations).max(1)
    gamma = float(np.median(peak))
    screened = zero_code_patches(correlations, gamma).numpy()
    np.testing.assert_array_equal(screened, peak <= gamma)
    codes = sparse_encode(patches, dictionary, sparsity_weight=gamma, max_steps=3000, tolerance=1e-7).numpy()
    assert np.all(codes[screened] == 0) and np.all(np.abs(codes[~screened]).max(1) > 0)
