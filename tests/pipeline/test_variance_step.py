"""The ``variance`` normalization step: patches rescaled to a target pixel variance, in Beam and in the graph."""
import argparse

import numpy as np
import pytest
import tensorflow as tf

from ufl.commands import preprocess as preprocess_command
from ufl.config import ConfigError, PreprocessConfig
from ufl.pipeline import load_metadata, load_stats, preprocess, read_patches
from ufl.pipeline.analyzers import Moments, step_statistics
from ufl.pipeline.normalize import apply_normalization, fit_statistics, invert_normalization
from ufl.pipeline.patches import ExtractOptions, extract_patches, is_eval
from ufl.pipeline.sources import open_source

STEPS = ("zca", "variance")
TARGET = 3e-4  # the sparse-coding-demo preset's pixel variance


def mean_pixel_variance(patches):
    return float(np.var(patches, axis=0).mean())


def test_variance_step_reaches_the_target_and_is_undone_by_its_inverse():
    raw = np.random.default_rng(0).uniform(size=(2000, 16))
    stats = fit_statistics(raw, STEPS, zca_epsilon=0.01, target_variance=TARGET)
    normalized = apply_normalization(raw, STEPS, stats)
    assert mean_pixel_variance(normalized) == pytest.approx(TARGET, rel=1e-9)
    whitened = apply_normalization(raw, ("zca",), stats)
    assert mean_pixel_variance(whitened) > 100 * TARGET  # the step did rescale
    np.testing.assert_allclose(invert_normalization(normalized, raw, STEPS, stats), raw, atol=1e-8)


def test_beam_statistics_of_the_variance_step_equal_numpy():
    data = np.random.default_rng(1).normal(2.0, 0.3, size=(700, 12))
    ours = step_statistics("variance", Moments.of(data, True), zca_epsilon=0.1, target_variance=0.5)
    reference = fit_statistics(data, ["variance"], zca_epsilon=0.1, target_variance=0.5)
    assert sorted(ours) == sorted(reference) == ["variance_gain"]
    np.testing.assert_allclose(ours["variance_gain"], reference["variance_gain"], rtol=1e-9)


def test_target_variance_must_be_positive():
    with pytest.raises(ConfigError, match=r"target_variance 0\.0 is invalid; use --target-variance > 0"):
        PreprocessConfig(source="builtin:natural", out="data", normalize="zca,variance", target_variance=0.0)


def test_cli_passes_target_variance_to_the_config():
    parser = argparse.ArgumentParser()
    preprocess_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["preprocess", "--source", "builtin:natural", "--out", "data",
                              "--normalize", "zca,variance", "--target-variance", "0.0003"])
    config = preprocess_command.build_config(args)
    assert config.normalize == STEPS and config.target_variance == 0.0003


def test_preprocess_writes_patches_at_the_target_variance_and_the_graph_agrees(tmp_path):
    config = PreprocessConfig(source="builtin:natural", out=str(tmp_path / "data"), patch_size=8,
                              patches_per_image=200, eval_fraction=0.2, num_shards=2, normalize="zca,variance",
                              target_variance=TARGET)
    metadata = preprocess(config, ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    assert metadata == load_metadata(config.out)
    assert metadata["normalization"]["steps"] == list(STEPS)
    assert metadata["normalization"]["target_variance"] == TARGET
    stats = load_stats(config.out)
    assert sorted(stats) == ["variance_gain", "whitening", "zca_mean"]
    batches = list(read_patches(config.out, "train", batch_size=100_000))
    written = np.concatenate([batch["patch"].numpy() for batch in batches])
    assert mean_pixel_variance(written) == pytest.approx(TARGET, rel=1e-3)  # statistics from these patches

    # the exported graph's normalization (same module, TF ops) maps raw patches to what DATA/ holds
    source = open_source(config.source)
    options = ExtractOptions((8, 8), "random", 200, None, 0.0, 0)
    raw = np.concatenate([extract_patches(batch.images, batch.keys, options).patches
                          for unit in source.units() for batch in source.read(unit)
                          if not is_eval(batch.keys, config.eval_fraction).any()])
    graph_stats = {key: value.astype(np.float32) for key, value in stats.items()}
    in_graph = tf.function(lambda patches: apply_normalization(patches, STEPS, graph_stats,
                                                               xp=tf.experimental.numpy))
    expected = apply_normalization(raw.astype(np.float64), STEPS, stats)
    np.testing.assert_allclose(in_graph(tf.constant(raw)).numpy(), expected, atol=2e-5)
    order = lambda array: array[np.lexsort(np.round(array, 4).T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(written), order(expected.astype(np.float32)), atol=2e-5)
