"""builtin:mnist and builtin:fashion-mnist: where they are found, their formats, their checks, the download."""
import gzip
import hashlib
import json
import os
import sys
import types

import numpy as np
import pytest

from ufl.cli import main
from ufl.errors import DataError
from ufl.pipeline import datasets, load_images

TRAIN, TEST = 12, 5


def made_dataset(seed=0):
    """A tiny dataset in the full datasets' layout: uint8 images (n, 28, 28) and labels per part."""
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (TRAIN, 28, 28), dtype=np.uint8),
            "y_train": (np.arange(TRAIN) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (TEST, 28, 28), dtype=np.uint8),
            "y_test": (np.arange(TEST) % 10).astype(np.uint8)}


def write_npz(path, arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path, **arrays)


def write_idx_folder(folder, arrays):
    os.makedirs(folder, exist_ok=True)
    for key, idx in datasets.PARTS:
        with gzip.open(os.path.join(folder, idx + ".gz"), "wb") as handle:
            handle.write(datasets.idx_bytes(arrays[key]))


@pytest.fixture
def made(monkeypatch, tmp_path):
    """The made dataset registered as the published mnist and fashion-mnist (its own checksums), with an empty
    home (no Keras cache), no UFL_DATASETS, no Debian folder and no network."""
    arrays = made_dataset()
    sha = {idx: hashlib.sha256(datasets.idx_bytes(arrays[key])).hexdigest() for key, idx in datasets.PARTS}
    for name in ("mnist", "fashion-mnist"):
        info = datasets.DATASETS[name]
        monkeypatch.setitem(datasets.DATASETS, name, datasets.DatasetInfo(
            info.name, info.keras_module, info.keras_path, sha, (str(tmp_path / "debian" / name),)))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("UFL_DATASETS", raising=False)
    monkeypatch.setattr(datasets, "is_online", lambda *args, **kwargs: False)
    return arrays


def assert_same(found, arrays):
    for key, _ in datasets.PARTS:
        np.testing.assert_array_equal(getattr(found, key), arrays[key])


def test_found_in_order_env_folder_then_keras_cache_then_system(made, tmp_path, monkeypatch):
    system = tmp_path / "debian" / "fashion-mnist"
    write_idx_folder(str(system), made)
    assert datasets.load("fashion-mnist").path == str(system)
    keras = os.path.join(str(tmp_path / "home"), ".keras", "datasets", "fashion-mnist")
    write_idx_folder(keras, made)
    assert datasets.load("fashion-mnist").path == keras
    write_idx_folder(str(tmp_path / "mine" / "fashion-mnist"), made)
    monkeypatch.setenv("UFL_DATASETS", str(tmp_path / "mine"))
    found = datasets.load("fashion-mnist")
    assert found.path == str(tmp_path / "mine" / "fashion-mnist")
    assert_same(found, made)


def test_keras_npz_and_idx_files_read_the_same(made, tmp_path, monkeypatch):
    write_npz(str(tmp_path / "a" / "mnist.npz"), made)
    write_idx_folder(str(tmp_path / "b" / "mnist"), made)
    for folder in ("a", "b"):
        monkeypatch.setenv("UFL_DATASETS", str(tmp_path / folder))
        assert_same(datasets.load("mnist"), made)


def test_builtin_source_keeps_the_official_split(made, tmp_path, monkeypatch):
    write_npz(str(tmp_path / "mnist.npz"), made)
    monkeypatch.setenv("UFL_DATASETS", str(tmp_path))
    images, labels = load_images("builtin:mnist")
    assert images.shape == (TRAIN + TEST, 28, 28, 1) and labels.dtype == np.int64
    test_images, test_labels = load_images("builtin:mnist", split="test")
    np.testing.assert_allclose(test_images[..., 0], made["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(test_labels, made["y_test"])
    with pytest.raises(Exception, match="source builtin:digits has no split 'test' of its own"):
        load_images("builtin:digits", split="test")


def test_download_fills_keras_cache_through_tf_keras(made, monkeypatch):
    """Online and found nowhere: tf_keras.datasets' loader is called and its cached file is used."""
    calls = []

    def load_data():  # as tf_keras does: download into ~/.keras/datasets/mnist.npz
        calls.append(True)
        write_npz(os.path.join(datasets.keras_cache(), "mnist.npz"), made)

    monkeypatch.setattr(datasets, "is_online", lambda *args, **kwargs: True)
    monkeypatch.setitem(sys.modules, "tf_keras.datasets.mnist", types.SimpleNamespace(load_data=load_data))
    assert_same(datasets.load("mnist"), made)
    assert calls == [True]
    assert_same(datasets.load("mnist"), made)  # found in the cache: no second download
    assert calls == [True]


def test_offline_without_a_copy_fails_in_one_line_before_any_work(made, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["preprocess", "--source", "builtin:fashion-mnist", "--extract", "full", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "builtin:fashion-mnist needs the fashion-mnist dataset" in error
    assert "$UFL_DATASETS (unset)" in error and ".keras/datasets/fashion-mnist" in error
    assert "offline" in error and "set UFL_DATASETS" in error
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".data")]


def corrupt_magic(folder):
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as handle:
        raw = bytearray(handle.read())
    raw[3] = 2
    with gzip.open(path, "wb") as handle:
        handle.write(bytes(raw))
    return path, "IDX magic number 0x00000802; expected 0x00000803"


def truncate_gzip(folder):
    path = os.path.join(folder, "t10k-images-idx3-ubyte.gz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    return path, "cannot be decompressed"


def truncate_content(folder):
    path = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
    with gzip.open(path, "wb") as handle:
        handle.write(datasets.idx_bytes(np.zeros(TEST, np.uint8))[:-2])
    return path, f"holds {8 + TEST - 2} bytes once decompressed; its header ({TEST}) expects {8 + TEST}"


def change_pixel(folder):
    path = os.path.join(folder, "train-images-idx3-ubyte.gz")
    with gzip.open(path, "rb") as handle:
        raw = bytearray(handle.read())
    raw[100] ^= 1
    with gzip.open(path, "wb") as handle:
        handle.write(bytes(raw))
    return path, "expected the published"


@pytest.mark.parametrize("damage", [corrupt_magic, truncate_gzip, truncate_content, change_pixel])
def test_bad_idx_file_is_named_and_nothing_is_written(made, tmp_path, monkeypatch, capsys, damage):
    write_idx_folder(str(tmp_path / "sets" / "mnist"), made)
    monkeypatch.setenv("UFL_DATASETS", str(tmp_path / "sets"))
    path, expected = damage(str(tmp_path / "sets" / "mnist"))
    with pytest.raises(DataError, match="expected|truncated"):
        datasets.load("mnist")
    out = tmp_path / "data"
    assert main(["preprocess", "--source", "builtin:mnist", "--extract", "full", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{path}: " in error and expected in error
    assert not out.exists()


def test_truncated_or_incomplete_npz_is_named(made, tmp_path, monkeypatch):
    monkeypatch.setenv("UFL_DATASETS", str(tmp_path))
    path = str(tmp_path / "mnist.npz")
    write_npz(path, made)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(DataError, match=f"{path}: cannot be read as an npz archive .*truncated or corrupt"):
        datasets.load("mnist")
    write_npz(path, {key: value for key, value in made.items() if key != "y_test"})
    with pytest.raises(DataError, match=f"{path}: arrays y_test are missing; expected Keras' layout"):
        datasets.load("mnist")
    write_npz(path, dict(made, x_test=made["x_test"][:-1]))
    with pytest.raises(DataError, match=f"{path}: array x_test has sha256 .* expected the published"):
        datasets.load("mnist")


def test_eval_split_source_puts_the_test_images_in_eval(made, tmp_path, monkeypatch):
    import tensorflow as tf

    write_idx_folder(str(tmp_path / "sets" / "fashion-mnist"), made)
    monkeypatch.setenv("UFL_DATASETS", str(tmp_path / "sets"))
    out = tmp_path / "data"
    assert main(["preprocess", "--source", "builtin:fashion-mnist", "--extract", "full", "--normalize", "none",
                 "--eval-split", "source", "--num-shards", "1", "--out", str(out),
                 "--direct_running_mode=in_memory", "--direct_num_workers=1"]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["counts"]["patches"] == {"train": TRAIN, "eval": TEST}
    assert metadata["eval_split"] == "source" and metadata["source_splits"] == ["train", "test"]
    spec = {"patch": tf.io.FixedLenFeature([784], tf.float32), "source_split": tf.io.FixedLenFeature([], tf.string),
            "source": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    records = [tf.io.parse_single_example(r, spec) for r in
               tf.data.TFRecordDataset(str(out / "eval-00000-of-00001.tfrecord.gz"), compression_type="GZIP")]
    assert {r["source_split"].numpy() for r in records} == {b"test"}
    assert sorted(r["source"].numpy().decode() for r in records) == [
        f"builtin:fashion-mnist/test#{i:08d}" for i in range(TEST)]
    eval_patches = np.stack([r["patch"].numpy() for r in records])
    np.testing.assert_allclose(np.sort(eval_patches.sum(axis=1)),
                               np.sort(made["x_test"].reshape(TEST, -1).sum(axis=1) / 255.0), rtol=1e-5)


def test_eval_split_source_needs_a_source_with_a_split(tmp_path, capsys):
    assert main(["preprocess", "--source", "builtin:digits", "--extract", "full", "--eval-split", "source",
                 "--out", str(tmp_path / "data")]) == 2
    assert "source builtin:digits has no train/test split of its own" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("name, first_test_labels", [("mnist", [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]),
                                                      ("fashion-mnist", [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])])
def test_the_full_datasets_pass_their_published_checksums(shared_datasets, name, first_test_labels):
    found = datasets.load(name, download=False)
    assert found.x_train.shape == (60000, 28, 28) and found.x_test.shape == (10000, 28, 28)
    assert found.y_test[:10].tolist() == first_test_labels
    assert np.bincount(found.y_train).tolist() == (
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949] if name == "mnist" else [6000] * 10)


def test_beam_worker_modules_load_without_tensorflow():
    """Beam workers import the readers and writers; TensorFlow would cost each of them seconds."""
    import subprocess

    code = ("import sys; import ufl.pipeline.preprocessing, ufl.pipeline.transforms, ufl.pipeline.datasets, "
            "ufl.pipeline.array_sources; print(sorted(m for m in ('tensorflow', 'tf_keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_full_mnist_preprocessed_with_its_own_test_set(shared_datasets, tmp_path):
    out = tmp_path / "mnist"
    assert main(["preprocess", "--source", "builtin:mnist", "--extract", "full", "--normalize", "none",
                 "--eval-split", "source", "--num-shards", "2", "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["counts"]["patches"] == {"train": 60000, "eval": 10000}
    assert metadata["num_classes"] == 10 and metadata["counts"]["shards_written"] == 4
