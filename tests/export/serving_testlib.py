"""Small SavedModels with ufl's signatures for the serving tests (no training or ``ufl export`` needed).

``save_coder`` writes a tf.Module whose ``serving_default`` runs a few ISTA steps in a ``tf.while_loop``
(as sparse coding's inference does), ``reconstruct`` decodes those codes, and ``encode_images`` codes
the 4x4 tiles of 8x8 images; ``scale`` changes the dictionary so two versions answer differently.
"""
import os
import shutil
import socket
import time

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from ufl.export import signatures

PATCH_DIM, N_CODES, IMAGE_SIDE = 16, 8, 8


class Coder(tf.Module):
    def __init__(self, scale: float):
        super().__init__()
        atoms = np.random.default_rng(0).normal(size=(N_CODES, PATCH_DIM))
        atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
        self.dictionary = tf.Variable((atoms * scale).astype(np.float32), name="dictionary")

    def _codes(self, patches):
        gram = tf.matmul(self.dictionary, self.dictionary, transpose_b=True)
        step = 1.0 / (tf.reduce_max(tf.linalg.eigvalsh(gram)) + 1e-6)
        target = tf.matmul(patches, self.dictionary, transpose_b=True)

        def body(i, codes):
            moved = codes - step * (tf.matmul(codes, gram) - target)
            return i + 1, tf.sign(moved) * tf.nn.relu(tf.abs(moved) - step * 0.05)

        return tf.while_loop(lambda i, _: i < 10, body, (tf.constant(0), tf.zeros_like(target)))[1]

    @tf.function(input_signature=[tf.TensorSpec([None, PATCH_DIM], tf.float32)])
    def serve(self, patches):
        return {signatures.CODES_OUTPUT: self._codes(patches)}

    @tf.function(input_signature=[tf.TensorSpec([None, PATCH_DIM], tf.float32)])
    def reconstruct(self, patches):
        return {signatures.RECONSTRUCTION_OUTPUT: tf.matmul(self._codes(patches), self.dictionary)}

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE, 1], tf.float32)])
    def encode_images(self, images):
        tiles = tf.image.extract_patches(images, [1, 4, 4, 1], [1, 4, 4, 1], [1, 1, 1, 1], "VALID")
        codes = self._codes(tf.reshape(tiles, [-1, PATCH_DIM]))
        return {signatures.FEATURES_OUTPUT: tf.reshape(codes, [tf.shape(images)[0], 4 * N_CODES])}


def save_coder(path: str, scale: float = 1.0, warmup_inputs=None) -> str:
    """Saves a Coder SavedModel at ``path`` (via a temporary sibling, as ``ufl export`` does).

    ``warmup_inputs``: optional list of ``{input_key: array}`` written as serving_default warmup requests.
    """
    module = Coder(scale)
    tmp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    tf.saved_model.save(module, tmp, signatures={
        signatures.SERVING_DEFAULT: module.serve, signatures.RECONSTRUCT: module.reconstruct,
        signatures.ENCODE_IMAGES: module.encode_images})
    if warmup_inputs:
        write_warmup(tmp, warmup_inputs)
    os.replace(tmp, path)
    return path


def write_warmup(version_dir: str, warmup_inputs) -> None:
    os.makedirs(os.path.join(version_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_dir, "assets.extra", signatures.WARMUP_FILE)) as writer:
        for inputs in warmup_inputs:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signatures.SERVING_DEFAULT
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def install_version(template: str, base_path: str, version: int) -> str:
    """Copies a saved version into MODELS/NAME/VERSION atomically (copy to a hidden sibling, rename)."""
    os.makedirs(base_path, exist_ok=True)
    tmp = os.path.join(base_path, f".tmp-{version}")
    shutil.copytree(template, tmp)
    os.replace(tmp, os.path.join(base_path, str(version)))
    return os.path.join(base_path, str(version))


def in_process(template: str, signature_name: str, **inputs) -> np.ndarray:
    """The only output of ``signature_name`` of the SavedModel at ``template``, computed in this process."""
    function = tf.saved_model.load(template).signatures[signature_name]
    outputs = function(**{key: tf.constant(value) for key, value in inputs.items()})
    return next(iter(outputs.values())).numpy()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float = 30.0, interval: float = 0.1):
    """Polls ``condition()`` until it returns a truthy value (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def patches(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=(count, PATCH_DIM)).astype(np.float32)


_templates = {}


def template(tmp_path_factory, scale: float = 1.0) -> str:
    """A saved Coder with this ``scale``, written once per test session."""
    if scale not in _templates:
        _templates[scale] = save_coder(str(tmp_path_factory.mktemp(f"coder-{scale:g}") / "1"), scale)
    return _templates[scale]


def start_server(base_path: str, name: str = "coder", *, rest: bool = False, **kwargs):
    """An in-process ModelServer on free loopback ports serving ``base_path`` as ``name``."""
    from ufl.export.model_manager import ModelManager, single_model_config
    from ufl.export.server import ModelServer

    manager_options = {key: kwargs.pop(key) for key in ("poll_wait_seconds", "enable_warmup") if key in kwargs}
    manager = ModelManager(single_model_config(name, base_path), load=False, **manager_options)
    return ModelServer(manager, port=0, rest_api_port=0 if rest else None, **kwargs).start()


class Echo(tf.Module):
    """A string signature: ``text`` (N,) string -> ``length`` (N,) int32 and ``echo_bytes`` (N,) string."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, text):
        return {"length": tf.strings.length(text), "echo_bytes": text}


def save_echo(path: str) -> str:
    module = Echo()
    tf.saved_model.save(module, path, signatures={signatures.SERVING_DEFAULT: module.serve})
    return path
