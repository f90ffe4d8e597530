"""End-to-end runs of the Beam pipeline (in-process runners): DATA/ content, statistics, determinism, errors.

Beam pipelines take seconds to start, so each DATA/ is made once per module and shared.
"""
import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from ufl.config import ConfigError, PreprocessConfig
from ufl.errors import RejectionError
from ufl.pipeline import fit_statistics, load_images, load_metadata, load_stats, preprocess, read_patches
from ufl.pipeline.normalize import apply_normalization
from ufl.pipeline.patches import ExtractOptions, extract_patches, is_eval
from ufl.pipeline.sources import open_source
from preprocess_testlib import write_image_files

FAST = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def run(out, pipeline_args=FAST, **overrides):
    options = dict(source="builtin:natural", out=str(out), patch_size=8, patches_per_image=300,
                   eval_fraction=0.2, num_shards=3, normalize="contrast,zca", zca_epsilon=1e-4)
    options.update(overrides)
    config = PreprocessConfig(**options)
    return config, preprocess(config, pipeline_args)


def read_all(data_dir, split="train", **kwargs):
    batches = list(read_patches(str(data_dir), split, batch_size=100_000, **kwargs))
    return {key: np.concatenate([b[key].numpy() for b in batches]) for key in batches[0]}


def raw_train_patches(config):
    """The raw train patches of a config, cut in memory with the same functions (the numpy reference)."""
    source = open_source(config.source, color=config.color)
    options = ExtractOptions((config.patch_size,) * 2, config.extract, config.patches_per_image, config.stride,
                             config.min_std, config.seed)
    blocks = []
    for unit in source.units():
        for batch in source.read(unit):
            keep = ~is_eval(batch.keys, config.eval_fraction)
            keys = [u for u, k in zip(batch.keys, keep) if k]
            if keys:
                blocks.append(extract_patches(batch.images[keep], keys, options).patches)
    return np.concatenate(blocks)


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    out = tmp_path_factory.mktemp("natural") / "data"
    config, metadata = run(out)
    return out, config, metadata


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "data"
    config, metadata = run(out, source="builtin:digits", extract="full", patch_size=None, normalize="scale,mean,zca",
                           zca_epsilon=0.05, eval_fraction=0.25, num_shards=2)
    return out, config, metadata


def test_metadata_describes_the_data(natural):
    out, config, metadata = natural
    assert load_metadata(str(out)) == metadata
    assert metadata["patch_size"] == [8, 8] and metadata["channels"] == 1 and not metadata["has_labels"]
    assert metadata["normalization"]["steps"] == ["contrast", "zca"]
    assert metadata["counts"]["images_read"] == 10 and metadata["counts"]["images_rejected"] == 0
    train, held_out = metadata["counts"]["patches"]["train"], metadata["counts"]["patches"]["eval"]
    assert train + held_out == 3000 and train > 0 and held_out > 0  # whole photos go to one split
    assert metadata["extract"] == "random" and metadata["image_shape"] is None  # photos differ in size
    assert sorted(f for f in os.listdir(out) if f.startswith("train")) == [
        f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    assert not [f for f in os.listdir(out.parent) if f.startswith(".")]  # no temporary sibling left


def test_reader_returns_every_patch_once_with_its_source(natural):
    out, _, metadata = natural
    for split in ("train", "eval"):
        data = read_all(out, split, with_positions=True)
        assert data["patch"].shape == (metadata["counts"]["patches"][split], 64)
        sources = {s.decode() for s in data["source"]}
        assert all(s.startswith("builtin:natural/") for s in sources)
        assert data["position"].min() >= 0
    train_sources = {s.decode() for s in read_all(out, "train", with_positions=True)["source"]}
    eval_sources = {s.decode() for s in read_all(out, "eval", with_positions=True)["source"]}
    assert not train_sources & eval_sources


def test_beam_statistics_equal_numpy_and_contrast_zca_whitens(natural):
    out, config, _ = natural
    raw = raw_train_patches(config)
    reference = fit_statistics(raw, config.normalize, zca_epsilon=config.zca_epsilon)
    stats = load_stats(str(out))
    assert sorted(stats) == sorted(reference) == ["whitening", "zca_mean"]
    for key in reference:
        # 1e-6 relative; values that are 0 in exact arithmetic (the mean after ``mean``) within 1e-12.
        np.testing.assert_allclose(stats[key], reference[key], rtol=1e-6, atol=1e-12)
    # DATA/ holds exactly the normalized raw patches (as a multiset: compare sorted rows).
    written = read_all(out)["patch"]
    expected = apply_normalization(raw.astype(np.float64), config.normalize, stats).astype(np.float32)
    order = lambda a: a[np.lexsort(np.round(a, 3).T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(written), order(expected), atol=2e-4)
    # Whitened covariance: identity on every direction the contrast step left (it removes the patch mean).
    covariance = np.cov(written, rowvar=False, bias=True)
    eigenvalues = np.linalg.eigvalsh(covariance)
    assert eigenvalues[0] < 1e-3  # the removed DC direction
    assert np.all(np.abs(eigenvalues[1:] - 1) < 0.01)


def test_graph_normalization_equals_numpy_on_raw_patches(natural):
    out, config, _ = natural
    raw = raw_train_patches(config)[:500]
    stats = {k: v.astype(np.float32) for k, v in load_stats(str(out)).items()}
    expected = apply_normalization(raw, config.normalize, stats)

    @tf.function
    def normalize(patches):
        return apply_normalization(patches, config.normalize, stats, xp=tf.experimental.numpy)

    # float32 in both; nearly flat patches amplify rounding by up to 1/sqrt(contrast_epsilon) ~ 30.
    np.testing.assert_allclose(normalize(tf.constant(raw)).numpy(), expected, rtol=1e-3, atol=1e-3)


def test_same_seed_gives_byte_identical_files_on_another_runner(natural, tmp_path):
    out, _, _ = natural
    again = tmp_path / "again"
    run(again, pipeline_args=["--direct_running_mode=multi_threading", "--direct_num_workers=2"])
    files = sorted(f for f in os.listdir(out) if f.endswith((".gz", ".npz", ".jsonl")))
    assert files == sorted(f for f in os.listdir(again) if f.endswith((".gz", ".npz", ".jsonl")))
    for name in files:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    reseeded = tmp_path / "reseeded"
    run(reseeded, seed=1, normalize="none")
    first_shard = "train-00000-of-00003.tfrecord.gz"
    assert (reseeded / first_shard).read_bytes() != (out / first_shard).read_bytes()


def test_chained_statistics_and_labels_of_full_images(digits):
    out, config, metadata = digits
    assert metadata["has_labels"] and metadata["num_classes"] == 10
    assert metadata["patch_size"] == [8, 8] and metadata["image_shape"] == [8, 8, 1]
    images, labels = load_images("builtin:digits")
    uris = [f"builtin:digits#{i:08d}" for i in range(len(images))]
    train = ~is_eval(uris, config.eval_fraction)
    raw = images[train].reshape(int(train.sum()), -1)
    reference = fit_statistics(raw, config.normalize, zca_epsilon=config.zca_epsilon)
    stats = load_stats(str(out))
    assert sorted(stats) == sorted(reference)
    for key in reference:
        # 1e-6 relative; values that are 0 in exact arithmetic (the mean after ``mean``) within 1e-12.
        np.testing.assert_allclose(stats[key], reference[key], rtol=1e-6, atol=1e-12)
    data = read_all(out, with_labels=True, with_positions=True)
    index = np.array([int(s.decode().split("#")[1]) for s in data["source"]])
    assert sorted(index) == list(np.flatnonzero(train))
    np.testing.assert_array_equal(data["label"], labels[index])
    expected = apply_normalization(images[index].reshape(len(index), -1).astype(np.float64), config.normalize, stats)
    np.testing.assert_allclose(data["patch"], expected, atol=1e-4)


def test_bad_image_files_are_rejected_and_recorded(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    write_image_files(folder)
    from PIL import Image
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "tiny.png")
    config, metadata = run(tmp_path / "data", source=f"images:{folder}/*", extract="grid", stride=4,
                           eval_fraction=0.0, normalize="mean")
    assert metadata["counts"]["images_read"] == 10 and metadata["counts"]["images_rejected"] == 4
    assert metadata["counts"]["patches"] == {"train": 6 * 4 * 6, "eval": 0}
    lines = [json.loads(line) for line in (tmp_path / "data" / "rejected.jsonl").read_text().splitlines()]
    assert [os.path.basename(line["source"]) for line in lines] == ["empty.png", "notes.png", "tiny.png",
                                                                    "truncated.png"]
    assert "smaller than the 8x8 patch; use --patch-size <= 4" in lines[2]["reason"]
    assert not [f for f in os.listdir(tmp_path / "data") if f.startswith("eval")]


def test_too_many_rejections_fail_without_a_complete_data_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(b"")
    from PIL import Image
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "ok.png")
    with pytest.raises(RejectionError, match=r"3 of 4 inputs of images:.* were rejected, more than "
                                          r"--max-reject-fraction 0.5 .*empty file \(0 bytes\)"):
        run(tmp_path / "data", source=f"images:{folder}/*", eval_fraction=0.0, normalize="none")
    assert not (tmp_path / "data").exists()
    with pytest.raises(RejectionError, match=r"gave no training patches \(0 of 1 inputs rejected\)"):
        run(tmp_path / "data", source=f"images:{folder}/ok.png", eval_fraction=0.0, normalize="none", min_std=0.1)


def test_existing_data_dir_is_kept_unless_overwrite(digits, tmp_path):
    out = digits[0]
    with pytest.raises(ConfigError, match="already holds a complete ufl DATA/ directory; pass --overwrite"):
        run(out, source="builtin:digits", extract="full", patch_size=None)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is a non-empty folder that is not a ufl DATA/ directory"):
        run(tmp_path, source="builtin:digits", extract="full", patch_size=None, overwrite=True)


def test_a_failing_run_leaves_no_data_dir(tmp_path, monkeypatch):
    from ufl.pipeline import transforms

    def broken(self, element, stats=None):
        raise RuntimeError("disk full")
        yield

    monkeypatch.setattr(transforms.WriteShardFn, "process", broken)
    with pytest.raises(Exception, match="disk full"):
        run(tmp_path / "data", source="builtin:digits", extract="full", patch_size=None, normalize="none")
    assert os.listdir(tmp_path) == []


def test_matlab_patches_and_a_tfds_dataset_through_the_pipeline(tmp_path):
    from scipy.io import savemat
    import tensorflow_datasets as tfds

    patches = np.random.default_rng(3).random((40, 6, 6))
    savemat(tmp_path / "patches.mat", {"patches": np.stack([p.reshape(-1, order="F") for p in patches], axis=1)})
    _, metadata = run(tmp_path / "mat", source=f"mat:{tmp_path}/patches.mat", extract="full", patch_size=None,
                      normalize="none", eval_fraction=0.0, num_shards=1)
    assert metadata["patch_size"] == [6, 6] and metadata["counts"]["patches"]["train"] == 40
    data = read_all(tmp_path / "mat", with_positions=True)
    index = [int(s.decode().rsplit("#", 1)[1]) for s in data["source"]]
    np.testing.assert_allclose(data["patch"], patches[index].reshape(40, -1), rtol=1e-6)

    # tensorflow-datasets prepares datasets through importlib_resources (not among its own requirements).
    pytest.importorskip("importlib_resources")
    images = np.random.default_rng(4).integers(0, 256, size=(30, 8, 8, 1), dtype=np.uint8)
    tfds.dataset_builders.store_as_tfds_dataset(
        name="ufl_pipeline_digits", version="1.0.0", data_dir=str(tmp_path / "tfds"),
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                             "label": tfds.features.ClassLabel(num_classes=4)}),
        split_datasets={"train": tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(30) % 4})})
    _, metadata = run(tmp_path / "tfds-data", source="tfds:ufl_pipeline_digits:train", extract="center", patch_size=4,
                      normalize="scale", eval_fraction=0.0, num_shards=1, tfds_data_dir=str(tmp_path / "tfds"))
    assert metadata["has_labels"] and metadata["num_classes"] == 4 and metadata["image_shape"] == [8, 8, 1]
    data = read_all(tmp_path / "tfds-data", with_labels=True)
    assert data["patch"].shape == (30, 16) and data["patch"].min() == 0.0 and data["patch"].max() == 1.0
    assert sorted(np.bincount(data["label"])) == [7, 7, 8, 8]


def test_progress_reports_the_shards_being_written(tmp_path):
    import time

    from ufl.pipeline.preprocessing import Progress

    stream = io.StringIO()  # not a terminal: plain lines
    with Progress(str(tmp_path), 2, stream, interval=0.05, poll=0.02):
        time.sleep(0.2)
        (tmp_path / "train-00000-of-00002.tfrecord.gz").write_bytes(b"x")
        time.sleep(0.2)
        (tmp_path / "eval-00000-of-00002.tfrecord.gz").write_bytes(b"x")
        time.sleep(0.2)
    lines = stream.getvalue().splitlines()
    assert "reading inputs, computing statistics" in lines[0]
    assert lines[-1].startswith("ufl preprocess: shard files (train + eval): 2/4 shard")
    assert any(line.startswith("ufl preprocess: shard files (train + eval): 1/4 shard") for line in lines)


@pytest.mark.slow
def test_default_runner_with_two_worker_processes_writes_the_same_bytes(digits, tmp_path):
    out, config, _ = digits
    again = tmp_path / "default-runner"
    preprocess(dataclasses.replace(config, out=str(again)))  # no Beam options: 2 worker processes
    names = sorted(f for f in os.listdir(out) if f.endswith((".gz", ".npz", ".jsonl")))
    assert names == sorted(f for f in os.listdir(again) if f.endswith((".gz", ".npz", ".jsonl")))
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
