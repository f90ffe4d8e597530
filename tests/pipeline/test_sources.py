"""Every source scheme read without Beam: pixel ranges, colors, labels, rejections and errors."""
import os

import numpy as np
import pytest
from PIL import Image

from ufl.config import ConfigError
from ufl.pipeline import load_images
from ufl.pipeline.sources import ImageBatch, Rejection, open_source
from preprocess_testlib import write_image_files


def read_all(spec, **kwargs):
    source = open_source(spec, **kwargs)
    source.check()
    items = [item for unit in source.units() for item in source.read(unit)]
    return ([i for i in items if isinstance(i, ImageBatch)], [i for i in items if isinstance(i, Rejection)])


@pytest.mark.parametrize("spec, shape, labelled", [
    ("builtin:digits", (1797, 8, 8, 1), True),
    ("builtin:faces", (100, 25, 25, 1), False),
    ("builtin:mnist10k", (10000, 28, 28, 1), True),
])
def test_builtin_arrays(spec, shape, labelled):
    images, labels = load_images(spec)
    assert images.shape == shape and images.dtype == np.float32
    assert images.min() >= 0 and images.max() == pytest.approx(1.0)
    assert (labels is not None) == labelled
    if labelled:
        assert set(np.unique(labels)) == set(range(10))


def test_builtin_natural_photos_gray_and_rgb():
    batches, rejected = read_all("builtin:natural", color="rgb")
    assert not rejected and len(batches) == 10
    assert all(b.images.shape[-1] == 3 and b.images.shape[1] >= 300 for b in batches)
    gray, _ = load_images("builtin:natural")
    assert gray.shape[0] == 10 and gray.shape[-1] == 1  # center-cropped to a common size


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    folder = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 9, 10), dtype=np.uint8)
    labels = np.arange(6) % 3
    np.save(folder / "images.npy", images)
    np.savez(folder / "data.npz", x_train=images, y_train=labels)
    floats = rng.random((4, 9, 10, 3)).astype(np.float32)
    floats[2, 1, 1, 0] = np.nan
    floats[3, 0, 5, 2] = -np.inf
    np.savez(folder / "floats.npz", images=floats)
    return folder, images, labels, floats


def test_npy_uint8_is_scaled_to_unit_range(arrays):
    folder, images, _, _ = arrays
    loaded, labels = load_images(f"npy:{folder}/images.npy")
    np.testing.assert_allclose(loaded[..., 0], images / 255.0, rtol=1e-6)
    assert labels is None


def test_npz_key_and_labels_from_the_matching_key(arrays):
    folder, images, labels, _ = arrays
    loaded, loaded_labels = load_images(f"npz:{folder}/data.npz:x_train")
    assert loaded.shape == (6, 9, 10, 1)
    np.testing.assert_array_equal(loaded_labels, labels)


def test_nan_images_are_rejected_and_the_rest_kept(arrays):
    folder, _, _, floats = arrays
    batches, rejected = read_all(f"npz:{folder}/floats.npz", color="rgb")
    assert [r.source for r in rejected] == [f"npz:{folder}/floats.npz#0000000{i}" for i in (2, 3)]
    assert all(r.reason == "image contains NaN or Inf pixel values" for r in rejected)
    np.testing.assert_array_equal(batches[0].images, floats[[0, 1]])


def test_mat_one_patch_per_column_in_matlab_order(tmp_path):
    from scipy.io import savemat

    patches = np.random.default_rng(1).random((5, 4, 4))  # 5 patches of 4x4
    columns = np.stack([p.reshape(-1, order="F") for p in patches], axis=1)  # MATLAB's patch(:)
    savemat(tmp_path / "patches.mat", {"patches": columns})
    loaded, _ = load_images(f"mat:{tmp_path}/patches.mat:patches")
    np.testing.assert_allclose(loaded[..., 0], patches, rtol=1e-6)
    images = np.random.default_rng(2).random((12, 14, 3))  # IMAGES.mat layout: H x W x N
    savemat(tmp_path / "IMAGES.mat", {"IMAGES": images})
    loaded, _ = load_images(f"mat:{tmp_path}/IMAGES.mat")
    np.testing.assert_allclose(loaded[..., 0], np.moveaxis(images, -1, 0), rtol=1e-6)


def test_tfds_dataset_built_locally(tmp_path):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    # tensorflow-datasets prepares datasets through importlib_resources (not among its own requirements).
    pytest.importorskip("importlib_resources")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, size=12)
    tfds.dataset_builders.store_as_tfds_dataset(
        name="ufl_tiny_images", version="1.0.0", data_dir=str(tmp_path), disable_shuffling=True,
        features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                             "label": tfds.features.ClassLabel(num_classes=3)}),
        split_datasets={"train": tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})})
    loaded, loaded_labels = load_images("tfds:ufl_tiny_images:train", tfds_data_dir=str(tmp_path))
    np.testing.assert_allclose(loaded * 255.0, images, atol=1e-4)
    np.testing.assert_array_equal(loaded_labels, labels)
    with pytest.raises(ConfigError, match="tfds split 'test' is not in ufl_tiny_images"):
        load_images("tfds:ufl_tiny_images:test", tfds_data_dir=str(tmp_path))


def test_image_files_of_every_kind_and_broken_ones_rejected(tmp_path):
    gray = write_image_files(tmp_path)
    batches, rejected = read_all(f"images:{tmp_path}/*", color="gray")
    by_name = {os.path.basename(b.uris[0]): b.images[0] for b in batches}
    assert sorted(by_name) == ["gray16.png", "gray8.png", "palette.gif", "rgb.bmp", "rgb.jpg", "rgba.png"]
    np.testing.assert_allclose(by_name["gray8.png"][..., 0], gray / 255.0, rtol=1e-6)
    np.testing.assert_allclose(by_name["gray16.png"][..., 0], gray / 255.0, rtol=1e-6)
    assert all(image.shape == (20, 30, 1) and 0 <= image.min() and image.max() <= 1 for image in by_name.values())
    reasons = {os.path.basename(r.source): r.reason for r in rejected}
    assert sorted(reasons) == ["empty.png", "notes.png", "truncated.png"]
    assert reasons["empty.png"] == "cannot decode image: empty file (0 bytes)"
    rgb_batches, _ = read_all(f"images:{tmp_path}/rgba.png", color="rgb")
    assert rgb_batches[0].images.shape == (1, 20, 30, 3)  # alpha dropped


@pytest.mark.parametrize("spec, message", [
    ("images:/nonexistent/ufl/*.png", "matches no files"),
    ("npy:/nonexistent/ufl.npy", "file '/nonexistent/ufl.npy' of source npy:/nonexistent/ufl.npy does not exist"),
    ("zip:/data.zip", "source scheme 'zip' of 'zip:/data.zip' is invalid"),
    ("tfds:ufl_no_such_dataset_xyz", "tfds dataset 'ufl_no_such_dataset_xyz' is unavailable"),
])
def test_unreadable_sources_fail_with_the_input_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_images(spec)


def test_npz_missing_key_lists_the_keys(arrays):
    folder = arrays[0]
    with pytest.raises(ConfigError, match=r"npz key 'pixels' is not in .*data.npz \(keys: x_train, y_train\)"):
        load_images(f"npz:{folder}/data.npz:pixels")


def test_array_of_the_wrong_layout_fails_before_any_work(tmp_path):
    np.save(tmp_path / "channels_first.npy", np.zeros((2, 9, 8, 7), np.float32))
    with pytest.raises(ConfigError, match=r"array of shape \(2, 9, 8, 7\) in npy:.*channels_first.npy is not "
                                          r"N x H x W or N x H x W x C \(C = 1, 3 or 4\)"):
        open_source(f"npy:{tmp_path}/channels_first.npy").check()


def test_tfds_dataset_offline_fails_in_one_line_without_downloading(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from ufl.errors import DataError
    from ufl.pipeline import datasets

    probed = []
    monkeypatch.setattr(datasets, "is_online", lambda host, **kwargs: probed.append(host) and False)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda *args, **kwargs: pytest.fail("a download was attempted offline"))
    with pytest.raises(DataError, match=r"tfds dataset 'mnist' is not prepared in .* and its download host "
                                        r"storage.googleapis.com cannot be reached \(offline\); .*--tfds-data-dir"):
        load_images("tfds:mnist", tfds_data_dir=str(tmp_path))
    assert probed == ["storage.googleapis.com"]


def test_npz_in_keras_layout_keeps_its_split(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (7, 5, 6), dtype=np.uint8), "y_train": np.arange(7) % 3,
              "x_test": rng.integers(0, 256, (3, 5, 6), dtype=np.uint8), "y_test": np.array([2, 1, 0])}
    np.savez(tmp_path / "keras.npz", **arrays)
    source = open_source(f"npz:{tmp_path}/keras.npz")
    source.check()
    assert source.split_names == ("train", "test") and source.has_labels
    test_images, test_labels = load_images(f"npz:{tmp_path}/keras.npz", split="test")
    np.testing.assert_allclose(test_images[..., 0], arrays["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(test_labels, [2, 1, 0])
    batches, _ = read_all(f"npz:{tmp_path}/keras.npz")
    assert [(b.split, b.uris[0]) for b in batches] == [("train", f"npz:{tmp_path}/keras.npz/train#00000000"),
                                                       ("test", f"npz:{tmp_path}/keras.npz/test#00000000")]


def _keys(spec):
    source = open_source(spec)
    source.check()
    return [key for unit in source.units() for batch in source.read(unit) if isinstance(batch, ImageBatch)
            for key in batch.keys]


def test_image_keys_do_not_depend_on_how_the_path_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "data" / "photos" / "sub").mkdir(parents=True)
    np.savez(tmp_path / "data" / "x.npz", images=np.zeros((3, 8, 8), np.uint8))
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "data" / "photos" / name)
    monkeypatch.chdir(tmp_path)
    spellings = ["npz:data/x.npz", "npz:./data/x.npz", f"npz:{tmp_path}/data/x.npz", "npz:data/../data/x.npz"]
    assert {tuple(_keys(spec)) for spec in spellings} == {("npz:x.npz#00000000", "npz:x.npz#00000001",
                                                          "npz:x.npz#00000002")}
    globs = ["images:data/photos/**.png", f"images:{tmp_path}/data/photos/**.png",
             "images:./data/photos/**.png"]
    assert {tuple(sorted(_keys(spec))) for spec in globs} == {("a.png", "sub/b.png")}
    monkeypatch.chdir(tmp_path / "data")
    assert sorted(_keys("images:photos/**.png")) == ["a.png", "sub/b.png"]


def test_the_split_and_patches_of_a_file_are_the_same_from_any_working_directory(tmp_path, monkeypatch):
    from ufl.cli import main
    from ufl.pipeline import read_patches

    rng = np.random.default_rng(0)
    (tmp_path / "work").mkdir()
    np.save(tmp_path / "images.npy", rng.integers(0, 256, size=(60, 12, 12), dtype=np.uint8))
    written = []
    for cwd, spec in ((tmp_path, "npy:images.npy"), (tmp_path / "work", f"npy:{tmp_path}/images.npy")):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"data{len(written)}"
        assert main(["preprocess", "--source", spec, "--out", str(out), "--patch-size", "4",
                     "--patches-per-image", "3", "--eval-fraction", "0.3", "--normalize", "none",
                     "--direct_running_mode=in_memory"]) == 0
        written.append({split: np.concatenate([b["patch"].numpy() for b in read_patches(str(out), split)])
                        for split in ("train", "eval")})
    assert 0 < len(written[0]["eval"]) < len(written[0]["train"])
    for split in ("train", "eval"):
        np.testing.assert_array_equal(written[0][split], written[1][split])
