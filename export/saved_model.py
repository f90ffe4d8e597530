"""``ufl export``: a trained RUN/ becomes a versioned TF-Serving SavedModel in MODELS/NAME/VERSION/.

Layout written (see docs/contracts.md):
  MODELS/NAME/VERSION/saved_model.pb, variables/     signatures serving_default, reconstruct, encode_images
  MODELS/NAME/VERSION/assets/ufl.json                 model kind, sizes, normalization, config digest, XLA
  MODELS/NAME/VERSION/assets.extra/tf_serving_warmup_requests   PredictionLogs of real patches
  MODELS/models.config            ModelServerConfig of every model in MODELS/ (absolute base paths)
  MODELS/models.container.config  the same with base_path /models/NAME (the tensorflow/serving image)
  MODELS/batching.config          BatchingParameters for --enable_batching

A version is written to a hidden temporary sibling (TF-Serving ignores non-integer names) and renamed when
complete, so a server polling MODELS/NAME never loads half a model; an existing version is never replaced.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import uuid
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from ufl.config import ConfigError, ExportConfig
from ufl.config.base import atomic_write_text
from ufl.export import signatures as sig
from ufl.export.serving_module import ServingModule
from ufl.export.versions import list_versions

CONTAINER_MODEL_ROOT = "/models"
CONTAINER_CONFIG_FILE = "models.container.config"

#: Defaults of MODELS/batching.config: batches of up to 256 patches, formed within 1 ms.
BATCHING_PARAMETERS = {
    "max_batch_size": 256,
    "batch_timeout_micros": 1000,
    "max_enqueued_batches": 100,
    "num_batch_threads": 2,
}


def next_version(model_dir: str, requested: Optional[int] = None) -> int:
    """``requested`` if free, else highest + 1; raises ConfigError when ``requested`` exists."""
    versions = list_versions(model_dir)
    if requested is None:
        return (versions[-1] + 1) if versions else 1
    if requested in versions:
        raise ConfigError(f"version {requested} is invalid; {os.path.join(model_dir, str(requested))} exists "
                          f"and versions are never overwritten; omit --version to write {versions[-1] + 1}")
    return requested


def config_digest(config: dict) -> str:
    """sha256 of the canonical JSON of RUN/config.json: identifies the training recipe of a version."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def warmup_patches(metadata: dict, count: int, seed: int = 0) -> tuple:
    """``(patches (count, P*P*C) raw [0, 1], images (n, H, W, C) or None, origin)`` for warmup requests.

    Real patches are cut from the source the model was trained on (DATA/ holds normalized patches, the
    served graph wants raw pixels); when that source cannot be read here, uniform noise of the right shape
    stands in and ``origin`` says so.
    """
    rows, cols = (int(s) for s in metadata["patch_size"])
    channels = int(metadata["channels"])
    rng = np.random.default_rng(seed)
    try:
        from ufl.pipeline import load_images

        images, _ = load_images(metadata["source"], color="gray" if channels == 1 else "rgb")
        images = np.asarray(images[rng.choice(len(images), size=min(len(images), count), replace=False)],
                            np.float32)
        if images.shape[1] < rows or images.shape[2] < cols or images.shape[3] != channels:
            raise ValueError(f"images {images.shape[1:]} do not hold {rows}x{cols}x{channels} patches")
        tops = rng.integers(0, images.shape[1] - rows + 1, size=count)
        lefts = rng.integers(0, images.shape[2] - cols + 1, size=count)
        picks = rng.integers(0, len(images), size=count)
        patches = np.stack([images[i, t:t + rows, l:l + cols, :].reshape(-1)
                            for i, t, l in zip(picks, tops, lefts)])
        return patches, images, f"source {metadata['source']}"
    except Exception as error:  # the source may be remote or gone; warmup must not block the export
        print(f"ufl export: warning: warmup requests use uniform noise: source {metadata.get('source')!r} "
              f"could not be read here ({error})", file=sys.stderr)
        return rng.random((count, rows * cols * channels), dtype=np.float32), None, "uniform noise"


def write_warmup_requests(path: str, name: str, patches: np.ndarray, images: Optional[np.ndarray],
                          n_requests: int) -> int:
    """Writes TF-Serving warmup PredictionLogs (batches of 1, 4, 16, ... real patches, and one of images).

    Returns the number of requests written.
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    def request(signature: str, key: str, array: np.ndarray) -> bytes:
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = name
        predict.model_spec.signature_name = signature
        predict.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(array, np.float32)))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict))
        return log.SerializeToString()

    records = []
    for index in range(n_requests):
        if index == n_requests - 1 and images is not None and n_requests > 1:
            records.append(request(sig.ENCODE_IMAGES, sig.IMAGES_INPUT, images[:2]))
        else:
            records.append(request(sig.SERVING_DEFAULT, sig.PATCHES_INPUT, patches[:min(4 ** index, len(patches))]))
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return len(records)


def model_server_config(model_base: str, *, container: bool = False) -> str:
    """ModelServerConfig text proto listing every model folder of MODELS/ (newest version served)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in sorted(tf.io.gfile.listdir(model_base)):
        name = name.rstrip("/")
        if not list_versions(os.path.join(model_base, name)):
            continue
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = (f"{CONTAINER_MODEL_ROOT}/{name}" if container
                           else os.path.abspath(os.path.join(model_base, name)))
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = 1
    return text_format.MessageToString(config)


def batching_config(parameters: Dict[str, int] = BATCHING_PARAMETERS) -> str:
    """BatchingParameters text proto (fields are google.protobuf wrappers: ``name { value: N }``)."""
    return "".join(f"{key} {{ value: {value} }}\n" for key, value in parameters.items())


def write_server_configs(model_base: str) -> None:
    """(Re)writes models.config, models.container.config and batching.config in MODELS/."""
    atomic_write_text(os.path.join(model_base, sig.MODEL_CONFIG_FILE), model_server_config(model_base))
    atomic_write_text(os.path.join(model_base, CONTAINER_CONFIG_FILE),
                      model_server_config(model_base, container=True))
    atomic_write_text(os.path.join(model_base, sig.BATCHING_CONFIG_FILE), batching_config())


def build_serving_module(trained, config: ExportConfig) -> ServingModule:
    """The ServingModule of a TrainedModel (``ufl.trainers.run_dir.load_trained_model``)."""
    try:
        return ServingModule(trained.model, trained.metadata, trained.stats, grid_stride=config.grid_stride,
                             pool_grid=config.pool_grid, xla=config.xla)
    except ValueError as error:
        raise ConfigError(f"run {config.run!r} is invalid; {error}") from error


def export_run(config: ExportConfig) -> str:
    """Exports RUN/ as MODELS/NAME/VERSION/ and rewrites MODELS/'s server configs.

    Returns:
      The path of the new version directory.
    Raises:
      ConfigError: RUN/ is incomplete (no config, metadata or checkpoint) or the version exists.
    """
    from ufl.trainers.run_dir import load_trained_model

    if not tf.io.gfile.isdir(config.run):
        raise ConfigError(f"run {config.run!r} is invalid; no such directory (train one with 'ufl train')")
    model_dir = os.path.join(config.model_base, config.name)
    version = next_version(model_dir, config.version)
    trained = load_trained_model(config.run)
    module = build_serving_module(trained, config)

    tmp_dir = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    final_dir = os.path.join(model_dir, str(version))
    tf.io.gfile.makedirs(model_dir)
    try:
        tf.saved_model.save(module, tmp_dir, signatures=module.signature_functions)
        n_warmup, origin = 0, None
        if config.warmup_requests:
            patches, images, origin = warmup_patches(trained.metadata, 4 ** (config.warmup_requests - 1))
            n_warmup = write_warmup_requests(os.path.join(tmp_dir, "assets.extra", sig.WARMUP_FILE),
                                             config.name, patches, images, config.warmup_requests)
        info = {
            "name": config.name,
            "version": version,
            "kind": trained.config["model"].get("kind"),
            "preset": trained.config.get("preset"),
            "model": trained.config["model"],
            "patch_size": [module.patch_size, module.patch_size],
            "channels": module.channels,
            "patch_dim": module.patch_dim,
            "normalization": trained.metadata.get("normalization", {"steps": []}),
            "source": trained.metadata.get("source"),
            "reconstruction_units": "raw pixels" if sig.RECONSTRUCT in module.signature_functions else None,
            "training_config_sha256": config_digest(trained.config),
            "checkpoint": os.path.abspath(trained.checkpoint),
            "run": os.path.abspath(config.run),
            "xla": config.xla,
            "warmup_requests": n_warmup,
            "warmup_data": origin,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **module.info,
        }
        tf.io.gfile.makedirs(os.path.join(tmp_dir, "assets"))
        with tf.io.gfile.GFile(os.path.join(tmp_dir, "assets", sig.UFL_ASSET), "w") as handle:
            handle.write(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        if tf.io.gfile.exists(final_dir):
            raise ConfigError(f"version {version} is invalid; {final_dir} appeared while exporting "
                              "(another export wrote it); run the export again for the next version")
        tf.io.gfile.rename(tmp_dir, final_dir, overwrite=False)
    finally:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
    write_server_configs(config.model_base)
    return final_dir
