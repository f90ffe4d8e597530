"""ufl evaluate linear-probe: encoder features vs raw pixels with the same logistic regression and split."""
import json
import os

import numpy as np
import pytest

from ufl.config import ConfigError
from ufl.export.evaluate import linear_probe, stratified_split, stratified_subset

from tests.export.conftest import make_run


def test_probe_of_learned_encoder_beats_raw_pixels_and_cli_paths_agree(digits_encoder, capsys):
    from ufl.cli import main

    assert main(["evaluate", "linear-probe", "--model-dir", digits_encoder["path"], "--data", "builtin:digits",
                 "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["feature_accuracy"] > exported["raw_accuracy"] + 0.01
    assert exported["feature_dim"] == 4 * 2 * 32 and exported["raw_dim"] == 64
    assert exported["n_test"] == 450 and exported["kind"] == "export_toy"

    assert main(["evaluate", "linear-probe", "--run", digits_encoder["run"], "--data", "builtin:digits",
                 "--grid-stride", "1"]) == 0
    table = capsys.readouterr().out
    assert "encoder features" in table and "raw pixels" in table
    features_row = next(line for line in table.splitlines() if line.startswith("encoder features"))
    assert float(features_row.split()[2]) == pytest.approx(exported["feature_accuracy"], abs=1e-4)


def test_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [40, 20, 20, 20])
    train, test = stratified_split(labels, test_size=0.25, seed=0)
    assert np.bincount(labels[test]).tolist() == [10, 5, 5, 5]
    assert np.array_equal(test, stratified_split(labels, test_size=0.25, seed=0)[1])
    assert not np.array_equal(test, stratified_split(labels, test_size=0.25, seed=1)[1])
    subset = stratified_subset(labels, 50, seed=0)
    assert len(subset) == 50 and np.bincount(labels[subset]).tolist() == [20, 10, 10, 10]


def test_uninformative_features_lose_to_raw_pixels(digits):
    images, labels = digits
    rng = np.random.default_rng(0)
    result = linear_probe(images, labels, lambda x: rng.normal(size=(len(x), 16)))
    assert result["raw_accuracy"] > 0.9 and result["feature_accuracy"] < 0.3


def test_bad_probe_input(digits, digits_encoder, tmp_path, capsys):
    from ufl.cli import main

    images, labels = digits
    with pytest.raises(ConfigError, match="labels None is invalid; the linear probe needs a labelled source"):
        linear_probe(images, None, lambda x: x)
    with pytest.raises(ConfigError, match="test_size 1.5 is invalid"):
        linear_probe(images, labels, lambda x: x, test_size=1.5)
    with pytest.raises(ConfigError, match="C 0 is invalid"):
        linear_probe(images, labels, lambda x: x, C=0)
    np.save(tmp_path / "unlabelled.npy", images[:40])
    assert main(["evaluate", "linear-probe", "--model-dir", digits_encoder["path"], "--data",
                 f"npy:{tmp_path / 'unlabelled.npy'}"]) == 2
    assert "labels None is invalid" in capsys.readouterr().err
    assert main(["evaluate", "linear-probe", "--run", str(tmp_path / "missing"), "--data", "builtin:digits"]) == 2
    assert "no such directory" in capsys.readouterr().err
    os.makedirs(tmp_path / "DATA")
    assert main(["evaluate", "linear-probe", "--run", digits_encoder["run"], "--data", str(tmp_path / "DATA")]) == 2
    assert "has no metadata.json" in capsys.readouterr().err
    whole_images = images[:50, :6, :6].reshape(50, -1)
    _, whole_run = make_run(str(tmp_path / "whole"), {"kind": "export_toy", "n_codes": 4}, whole_images,
                            patch_size=6, steps=(), extra_metadata={"extract": "full"})
    assert main(["evaluate", "linear-probe", "--run", whole_run, "--data", "builtin:digits"]) == 2
    assert "has 8x8 images; the model encodes whole 6x6 images" in capsys.readouterr().err


def test_a_given_split_trains_on_its_train_images_and_scores_its_test_images(digits):
    images, labels = digits
    # Features that give away the label on the first 1,000 images and are noise on the rest: trained on the
    # first 1,000 and scored on the rest, the probe must do no better than chance.
    rng = np.random.default_rng(0)
    leak = np.eye(10)[labels] * (np.arange(len(labels)) < 1000)[:, None] + rng.normal(size=(len(labels), 10)) * 0.01
    split = (np.arange(1000), np.arange(1000, len(labels)))
    result = linear_probe(images, labels, lambda x: leak, split=split)
    assert (result["n_train"], result["n_test"]) == (1000, len(labels) - 1000)
    assert result["feature_accuracy"] < 0.3 and result["raw_accuracy"] > 0.9
    assert linear_probe(images, labels, lambda x: leak)["feature_accuracy"] > 0.5  # stratified: it leaks



def test_source_split_keeps_the_sources_own_test_images(shared_datasets):
    from ufl.export.evaluate import source_split

    images, labels, (train, test) = source_split("builtin:mnist", max_images=200)
    assert (len(train), len(test)) == (200, 10000) and images.shape == (10200, 28, 28, 1)
    assert np.bincount(labels[train]).min() >= 15  # a stratified subset of the training digits
    from ufl.pipeline import load_images

    test_images, test_labels = load_images("builtin:mnist", split="test")
    np.testing.assert_array_equal(images[test], test_images)
    np.testing.assert_array_equal(labels[test], test_labels)


def test_source_split_refuses_a_source_without_its_own_split():
    from ufl.export.evaluate import source_split

    with pytest.raises(ConfigError, match="has no split 'train' of its own"):
        source_split("builtin:digits")


def test_the_probe_keeps_features_in_float32(digits, monkeypatch):
    # Pooled features of a full dataset are gigabytes: a float64 copy doubles them.
    import ufl.export.evaluate as evaluate

    seen = []
    real_fit = evaluate.fit_probe
    monkeypatch.setattr(evaluate, "fit_probe", lambda features, *a, **k: seen.append(features.dtype) or
                        real_fit(features, *a, **k))
    images, labels = digits
    result = evaluate.linear_probe(images, labels, lambda x: x.reshape(len(x), -1).astype(np.float64))
    assert seen == [np.float32, np.float32] and result["raw_accuracy"] > 0.9


def test_rows_of_a_source_split_are_views_and_other_rows_copies():
    from ufl.export.evaluate import rows

    features = np.arange(40.0).reshape(10, 4)
    train, test = np.arange(0, 7), np.arange(7, 10)
    assert np.shares_memory(rows(features, train), features) and np.shares_memory(rows(features, test), features)
    np.testing.assert_array_equal(rows(features, test), features[test])
    shuffled = np.array([3, 1, 2])
    assert not np.shares_memory(rows(features, shuffled), features)
    np.testing.assert_array_equal(rows(features, shuffled), features[shuffled])
    assert rows(features, np.array([], np.int64)).shape == (0, 4)
