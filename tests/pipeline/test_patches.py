"""Patch extraction modes, min_std, size checks and the stable train/eval split."""
import numpy as np
import pytest

from ufl.pipeline.patches import ExtractOptions, extract_patches, is_eval, size_problem


def images(n=3, height=20, width=24, channels=2, seed=0):
    return np.random.default_rng(seed).random((n, height, width, channels), dtype=np.float32)


def test_random_patches_are_the_pixels_at_their_positions_and_seeded_per_uri():
    batch, uris = images(), ["a", "b", "c"]
    options = ExtractOptions((5, 7), "random", patches_per_image=6, seed=3)
    block = extract_patches(batch, uris, options)
    assert block.patches.shape == (18, 5 * 7 * 2)
    for patch, index, (row, col) in zip(block.patches, block.image_index, block.positions):
        np.testing.assert_array_equal(patch, batch[index, row:row + 5, col:col + 7].reshape(-1))
    # The same image gives the same patches whatever batch it arrives in; another seed moves them.
    alone = extract_patches(batch[1:2], ["b"], options)
    np.testing.assert_array_equal(alone.patches, block.patches[6:12])
    reseeded = extract_patches(batch[1:2], ["b"], ExtractOptions((5, 7), "random", patches_per_image=6, seed=4))
    assert not np.array_equal(reseeded.positions, alone.positions)


def test_grid_center_and_full_positions():
    batch = images(n=1, height=10, width=13, channels=1)
    grid = extract_patches(batch, ["a"], ExtractOptions((4, 4), "grid", stride=3))
    assert grid.positions.tolist() == [[r, c] for r in (0, 3, 6) for c in (0, 3, 6, 9)]
    center = extract_patches(batch, ["a"], ExtractOptions((4, 4), "center"))
    assert center.positions.tolist() == [[3, 4]]
    full = extract_patches(batch, ["a"], ExtractOptions((10, 13), "full"))
    np.testing.assert_array_equal(full.patches[0], batch[0].reshape(-1))


def test_min_std_drops_flat_patches():
    batch = np.zeros((1, 8, 16, 1), np.float32)
    batch[0, :, 8:, 0] = np.random.default_rng(0).random((8, 8))  # right half textured, left half flat
    block = extract_patches(batch, ["a"], ExtractOptions((8, 8), "grid", stride=8, min_std=0.05))
    assert block.positions.tolist() == [[0, 8]]
    assert block.dropped == 1


@pytest.mark.parametrize("shape, options, expected", [
    ((5, 30, 1), ExtractOptions((8, 8)), "image 5x30 is smaller than the 8x8 patch; use --patch-size <= 5"),
    ((8, 9, 1), ExtractOptions((8, 8), "full"), "image 8x9 differs from the 8x8 sample size"),
])
def test_size_problems_name_the_sizes_and_the_fix(shape, options, expected):
    assert size_problem(shape, options).startswith(expected)
    assert size_problem((40, 40, 1), ExtractOptions((8, 8))) is None


def test_eval_split_is_stable_and_close_to_the_fraction():
    uris = [f"npz:x.npz#{i:08d}" for i in range(4000)]
    held_out = is_eval(uris, 0.25)
    assert abs(held_out.mean() - 0.25) < 0.03
    np.testing.assert_array_equal(held_out, is_eval(uris, 0.25))
    assert not is_eval(uris, 0.0).any()
    assert (held_out <= is_eval(uris, 0.5)).all()  # a larger fraction only adds images
