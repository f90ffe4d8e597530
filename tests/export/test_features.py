"""ufl features: in-process, served (gRPC) and Beam RunInference features are the same numbers."""
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from ufl.config import ConfigError
from ufl.export.features import SavedModelHandler, compute_features, features_pipeline


def direct_features(path, images):
    loaded = tf.saved_model.load(path)
    return loaded.signatures["encode_images"](images=tf.constant(images))["features"].numpy()


def test_in_process_features_keep_order_across_batches(toy_export, digits):
    images = digits[0][:70]
    features = compute_features(images, model_dir=toy_export["path"], batch_size=16, progress=False)
    np.testing.assert_allclose(features, direct_features(toy_export["path"], images), atol=1e-5)
    assert features.shape == (70, 4 * 2 * 12)


def test_cli_model_dir_writes_features_and_labels(toy_export, digits, tmp_path, capsys):
    from ufl.cli import main

    out = str(tmp_path / "digits.npy")
    assert main(["features", "--model-dir", os.path.dirname(toy_export["path"]), "--source", "builtin:digits",
                 "--out", out, "--no-progress"]) == 0
    features, labels = np.load(out), np.load(str(tmp_path / "digits.labels.npy"))
    assert features.shape == (1797, 96) and np.array_equal(labels, digits[1])
    np.testing.assert_allclose(features[:20], direct_features(toy_export["path"], digits[0][:20]), atol=1e-5)
    assert "1797 x 96" in capsys.readouterr().out


def test_cli_server_features_equal_in_process(toy_export, digits, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from ufl.cli import main
    from ufl.export.model_manager import ModelManager
    from ufl.export.server import ModelServer

    with open(os.path.join(toy_export["models"], "models.config")) as handle:
        config = text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig())
    np.save(tmp_path / "images.npy", digits[0][:300])
    out = str(tmp_path / "served.npy")
    with ModelServer(ModelManager(config, poll_wait_seconds=0), port=0, rest_api_port=None) as server:
        assert main(["features", "--server", f"127.0.0.1:{server.port}", "--model", "toy", "--source",
                     f"npy:{tmp_path / 'images.npy'}", "--out", out, "--batch-size", "128", "--no-progress"]) == 0
    np.testing.assert_allclose(np.load(out), direct_features(toy_export["path"], digits[0][:300]), atol=1e-5)


@pytest.mark.slow
def test_beam_run_inference_features_equal_in_process(toy_export, digits, tmp_path):
    np.save(tmp_path / "images.npy", digits[0][:150])
    prefix = str(tmp_path / "out" / "features")
    features_pipeline(f"npy:{tmp_path / 'images.npy'}", toy_export["path"], prefix, num_shards=2)
    files = sorted(glob.glob(prefix + "-*.tfrecord.gz"))
    assert len(files) == 2
    spec = {"source": tf.io.FixedLenFeature([], tf.string), "features": tf.io.FixedLenFeature([96], tf.float32)}
    rows = {}
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        example = tf.io.parse_single_example(record, spec)
        rows[int(example["source"].numpy().decode().rsplit("#", 1)[1])] = example["features"].numpy()
    assert sorted(rows) == list(range(150))
    np.testing.assert_allclose(np.stack([rows[i] for i in range(150)]),
                               direct_features(toy_export["path"], digits[0][:150]), atol=1e-5)


def test_model_handler_batches(toy_export, digits):
    handler = SavedModelHandler(toy_export["path"], max_batch_size=8)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1, "max_batch_size": 8}
    results = list(handler.run_inference(list(digits[0][:3]), handler.load_model()))
    np.testing.assert_allclose(np.stack([r.inference for r in results]),
                               direct_features(toy_export["path"], digits[0][:3]), atol=1e-5)


def test_bad_feature_requests(toy_export, digits):
    with pytest.raises(ConfigError, match="model_dir and server are both given or both missing"):
        compute_features(digits[0][:2])
    with pytest.raises(ConfigError, match="model None is invalid; --server needs --model NAME"):
        compute_features(digits[0][:2], server="127.0.0.1:1")
    with pytest.raises(ConfigError, match="batch_size 0 is invalid"):
        compute_features(digits[0][:2], model_dir=toy_export["path"], batch_size=0)


def test_the_serving_graph_imports_no_trainer():
    """Data flows CLI -> export -> trainers -> pipeline: the exported graph's pooling lives in pipeline/."""
    import subprocess
    import sys

    code = ("import sys, ufl.export.serving_module, ufl.export.features; "
            "print(sorted(m for m in sys.modules if m.startswith('ufl.trainers')))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "[]"
