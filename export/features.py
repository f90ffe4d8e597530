"""Features of an image source from an exported ufl model: in process, from a TF-Serving server, or in Beam.

Three ways to the same numbers (the ``encode_images`` signature of MODELS/NAME/VERSION):
  - ``compute_features(images, model_dir=...)``: load the SavedModel here and call it in batches;
  - ``compute_features(images, server="host:8500", model_name=...)``: gRPC Predict against ``ufl serve`` or
    ``tensorflow_model_server`` (``ufl.export.client``);
  - ``ComputeFeatures(model_dir)``: a Beam PTransform, ``RunInference`` with ``SavedModelHandler`` (a
    ``ModelHandler`` for TF SavedModel signatures), for sources too large for one machine.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from ufl.export import signatures as sig
from ufl.export.signatures import SIGNATURE_KEYS
from ufl.pipeline.runner import make_pipeline


def _progress(total: int, enabled: bool):
    from ufl.progress import progress

    return progress(total, desc="features", unit="img", enabled=enabled)


class _LoadedSignature:
    """A SavedModel signature as ``numpy (N, ...) -> numpy (N, F)``; keeps the loaded object alive (its
    variables are owned by it, not by the signature function)."""

    def __init__(self, model_dir: str, signature: str):
        from ufl.export.load import load_signature

        self.loaded, self.function = load_signature(model_dir, signature)
        (self.input_key,) = self.function.structured_input_signature[1].keys()
        self.output_key = SIGNATURE_KEYS.get(signature, (None, None))[1] or next(iter(self.function.structured_outputs))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        outputs = self.function(**{self.input_key: tf.constant(np.asarray(batch, np.float32))})
        return outputs[self.output_key].numpy()


def compute_features(images: np.ndarray, *, model_dir: Optional[str] = None, server: Optional[str] = None,
                     model_name: Optional[str] = None, signature: str = sig.ENCODE_IMAGES,
                     version: Optional[int] = None, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    """Features of ``images`` by an exported model, in process (``model_dir``) or from a server.

    Args:
      images: float32 ``(N, H, W, C)`` raw images in [0, 1] (or ``(N, P*P*C)`` patches for the patch
        signatures).
      model_dir: MODELS/NAME or MODELS/NAME/VERSION, to run the SavedModel in this process.
      server: ``host:port`` of a TF-Serving gRPC API (``ufl serve`` or ``tensorflow_model_server``).
      model_name: the served model's name (with ``server``).
      signature: signature to call; its input and output keys follow ``export/signatures.py``.
      version: served version (default: the server's newest).
      batch_size: images per call or request (> 0).
      progress: show a progress bar on terminals.
    Returns:
      float32 ``(N, F)`` features, in the order of ``images``.
    """
    from ufl.config import ConfigError

    if (model_dir is None) == (server is None):
        raise ConfigError("model_dir and server are both given or both missing; give --model-dir DIR for "
                          "in-process features or --server HOST:PORT --model NAME for a served model")
    if server is not None and not model_name:
        raise ConfigError(f"model {model_name!r} is invalid; --server needs --model NAME (the served name)")
    if batch_size <= 0:
        raise ConfigError(f"batch_size {batch_size} is invalid; use a positive integer such as 256")
    if model_dir is not None:
        call = _LoadedSignature(model_dir, signature)
    else:
        from ufl.export.client import predict

        input_key, output_key = SIGNATURE_KEYS.get(signature, (sig.IMAGES_INPUT, None))

        def call(batch):
            return predict(server, model_name, np.asarray(batch, np.float32), signature_name=signature,
                           input_key=input_key, output_key=output_key, version=version)
    parts = []
    with _progress(len(images), progress) as bar:
        for start in range(0, len(images), batch_size):
            parts.append(np.asarray(call(images[start:start + batch_size]), np.float32))
            bar.update(len(parts[-1]))
    if not parts:
        raise ConfigError("images is empty; the source gave no images to compute features of")
    return np.concatenate(parts)


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """Beam ``ModelHandler`` for one signature of a TF SavedModel (an exported ufl model).

    Beam's own ``TFModelHandlerNumpy`` loads models with ``tf.keras.models.load_model`` (Keras 3 in
    TF 2.21 cannot load plain SavedModels) and needs tensorflow_hub; this handler loads with
    ``tf.saved_model.load`` and calls the named signature on each batch that ``RunInference`` forms.

    Args:
      model_dir: MODELS/NAME (newest version) or MODELS/NAME/VERSION.
      signature: the signature to call (default ``encode_images``).
      min_batch_size, max_batch_size: bounds of the batches RunInference forms.
    """

    def __init__(self, model_dir: str, signature: str = sig.ENCODE_IMAGES, *, min_batch_size: int = 1,
                 max_batch_size: int = 256):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model_dir, self.signature = model_dir, signature

    def load_model(self) -> _LoadedSignature:
        return _LoadedSignature(self.model_dir, self.signature)

    def run_inference(self, batch: Sequence[np.ndarray], model: _LoadedSignature,
                      inference_args: Optional[Dict[str, Any]] = None) -> Iterable[PredictionResult]:
        outputs = model(np.stack(batch))
        return [PredictionResult(example, output) for example, output in zip(batch, outputs)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(np.asarray(example).nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return "ufl_features"


class ComputeFeatures(beam.PTransform):
    """``(key, image (H, W, C) float32 in [0, 1])`` -> ``(key, features (F,) float32)`` by RunInference."""

    def __init__(self, model_dir: str, signature: str = sig.ENCODE_IMAGES, *, max_batch_size: int = 256):
        super().__init__()
        self.handler = KeyedModelHandler(SavedModelHandler(model_dir, signature, max_batch_size=max_batch_size))

    def expand(self, keyed_images):
        return (keyed_images
                | "RunInference" >> RunInference(self.handler)
                | "KeepFeatures" >> beam.MapTuple(lambda key, result: (key, np.asarray(result.inference))))


def read_source_images(unit, source):
    """``((uri, label or -1), image)`` of every image of one read unit of a ufl source (Beam worker side)."""
    for batch in source.read(unit):
        if hasattr(batch, "images"):  # an ImageBatch; Rejections are counted by 'ufl preprocess', not here
            labels = batch.labels if batch.labels is not None else [-1] * len(batch.uris)
            for uri, image, label in zip(batch.uris, batch.images, labels):
                yield (uri, int(label)), np.asarray(image, np.float32)


def encode_feature_example(uri: str, label: int, features: np.ndarray) -> bytes:
    import tensorflow as tf

    feature = {"source": tf.train.Feature(bytes_list=tf.train.BytesList(value=[uri.encode()])),
               "features": tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(features)))}
    if label >= 0:
        feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def features_pipeline(source_spec: str, model_dir: str, out_prefix: str, *, color: str = "gray",
                      num_shards: int = 0, pipeline_options=None) -> None:
    """Beam job: every image of ``source_spec`` -> its features, written as GZIP TFRecords of
    tf.train.Example (``source`` bytes, ``features`` float list, ``label`` int64 when the source has labels)
    to ``OUT_PREFIX-SSSSS-of-NNNNN.tfrecord.gz``.

    The source is read unit by unit on the workers (``ufl.pipeline.sources``), so it scales with the runner.
    """
    from ufl.pipeline.sources import open_source

    source = open_source(source_spec, color=color)
    source.check()
    with make_pipeline(pipeline_options or PipelineOptions([])) as pipeline:
        _ = (pipeline
             | "ListReadUnits" >> beam.Create(source.units())
             | "ReadImages" >> beam.FlatMap(read_source_images, source)
             | "ComputeFeatures" >> ComputeFeatures(model_dir)
             | "ToExamples" >> beam.MapTuple(lambda key, features: encode_feature_example(*key, features))
             | "WriteTFRecords" >> beam.io.WriteToTFRecord(
                 out_prefix, file_name_suffix=".tfrecord.gz", num_shards=num_shards,
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP))


def save_features(path: str, features: np.ndarray, labels: Optional[np.ndarray]) -> Optional[str]:
    """Writes FEATURES.npy, and FEATURES.labels.npy when there are labels; returns the labels path."""
    path = path if path.endswith(".npy") else path + ".npy"  # as np.save names it
    labels_path = None if labels is None else path[:-4] + ".labels.npy"
    if labels_path is not None:
        _save_npy(labels_path, labels)
    _save_npy(path, features)  # last: a complete FEATURES.npy comes with its labels
    return labels_path


def _save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` through a temporary sibling, so an interrupted or failed write leaves no partial file."""
    from ufl.config.base import atomic_open

    with atomic_open(path, "wb") as handle:
        np.save(handle, array)
