"""The normalization math: every chain of steps is undone by its inverse (used by the ``reconstruct`` signature)."""
import numpy as np
import pytest

from ufl.pipeline.normalize import apply_normalization, fit_statistics, invert_normalization


@pytest.mark.parametrize("steps", [("scale",), ("contrast",), ("mean",), ("zca",), ("contrast", "zca"),
                                   ("scale", "mean", "zca")])
def test_invert_normalization_returns_the_raw_patches(steps):
    raw = np.random.default_rng(0).uniform(size=(500, 16))
    stats = fit_statistics(raw, steps, zca_epsilon=0.01)
    normalized = apply_normalization(raw, steps, stats)
    assert not np.allclose(normalized, raw)
    np.testing.assert_allclose(invert_normalization(normalized, raw, steps, stats), raw, atol=1e-8)
