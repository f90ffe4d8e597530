"""One loaded SavedModel version as ``ufl serve`` runs it: a TensorFlow session, a callable per signature,
request checks against the SignatureDefs, and warmup; and ``ServingError``, a failure as a client sees it.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from ufl.export import signatures
from ufl.export.tensor_codec import ndarray_from_tensor_proto

_TF_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
#: TF-Serving reads at most this many warmup records per version.
MAX_WARMUP_RECORDS = 1000


class ServingError(Exception):
    """A request failed. ``code`` is the ``grpc.StatusCode`` name the client receives, as from TF-Serving."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _shape_text(dims: Sequence[int]) -> str:
    return "[" + ", ".join("?" if size < 0 else str(size) for size in dims) + "]"


def session_config(*, intra_op_threads: int = 0, inter_op_threads: int = 0) -> tf.compat.v1.ConfigProto:
    """The TensorFlow session options of a served version (0 threads = TensorFlow's default, one per core).

    ``session_inter_op_thread_pool`` is what lets a request run on its gRPC thread (see ``_RUN_OPTIONS``);
    the pool itself only runs the ops a graph schedules in parallel.
    """
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra_op_threads,
                                      inter_op_parallelism_threads=inter_op_threads)
    config.session_inter_op_thread_pool.add(num_threads=inter_op_threads)
    return config


# Runs each request's graph on the calling (gRPC worker) thread instead of handing it to the inter-op pool
# and waiting (TensorFlow's "caller thread" pool, -1): one thread switch less per request.
_RUN_OPTIONS = tf.compat.v1.RunOptions(inter_op_thread_pool=-1)


class ServableVersion:
    """One loaded SavedModel version: a TensorFlow session and a callable per signature, as TF-Serving.

    A version is loaded into its own graph and session (as ``tensorflow_model_server`` does) rather than
    through ``tf.saved_model.load``: a session callable takes numpy arrays and returns numpy arrays with no
    eager tensors or Python structure conversion per call, which is most of a small request's cost.
    """

    def __init__(self, name: str, version: int, path: str, *,
                 config: Optional[tf.compat.v1.ConfigProto] = None):
        self.name, self.version, self.path = name, version, path
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=config or session_config())
        logger, level = tf.get_logger(), tf.get_logger().level
        logger.setLevel(logging.ERROR)  # the v1 loader's deprecation notice: sessions are used on purpose here
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(self._session, ["serve"], path)
        finally:
            logger.setLevel(level)
        self.signature_defs = dict(meta_graph.signature_def)
        # "__saved_model_init_op" and the like are not servable signatures.
        self._callables = {key: self._make_callable(value) for key, value in self.signature_defs.items()
                           if not key.startswith("__")}
        # Per signature: input name -> (TensorFlow dtype, dims or None for unknown rank), read once.
        self._input_specs = {
            key: {name: (tf.as_dtype(info.dtype),
                         None if info.tensor_shape.unknown_rank else [dim.size for dim in info.tensor_shape.dim])
                  for name, info in self.signature_defs[key].inputs.items()}
            for key in self._callables}

    def _make_callable(self, signature_def) -> Tuple[List[str], List[str], Callable]:
        """(input keys, output keys, session callable taking the inputs in that order).

        The callable is made from CallableOptions (as tf_keras's v1 backend does): a call goes straight to
        TensorFlow's C++ ``RunCallable``, where ``Session.make_callable(accept_options=True)`` goes through
        ``Session.run``'s Python feed and fetch handling, 0.13-0.17 ms more per batch-1 request.
        """
        input_keys, output_keys = sorted(signature_def.inputs), sorted(signature_def.outputs)
        options = config_pb2.CallableOptions(feed=[signature_def.inputs[key].name for key in input_keys],
                                             fetch=[signature_def.outputs[key].name for key in output_keys])
        options.run_options.CopyFrom(_RUN_OPTIONS)
        return input_keys, output_keys, self._session._make_callable_from_options(options)

    @property
    def signature_names(self) -> List[str]:
        """The servable signatures' names."""
        return sorted(self._callables)

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """All SignatureDefs (what GetModelMetadata returns under ``signature_def``)."""
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in self.signature_defs.items():
            result.signature_def[key].CopyFrom(signature_def)
        return result

    def _where(self, signature_name: str) -> str:
        return f"signature {signature_name!r} of model {self.name!r} version {self.version}"

    def input_dtypes(self, signature_name: str) -> Dict[str, np.dtype]:
        """Input name -> numpy dtype of a signature (REST uses it to build arrays from JSON)."""
        signature_name = self.check_signature(signature_name)
        return {key: np.dtype(tf.as_dtype(info.dtype).as_numpy_dtype)
                for key, info in self.signature_defs[signature_name].inputs.items()}

    def check_signature(self, signature_name: str) -> str:
        signature_name = signature_name or signatures.SERVING_DEFAULT
        if signature_name not in self._callables:
            raise ServingError("INVALID_ARGUMENT", (
                f"Serving signature key {signature_name!r} not found in model {self.name!r} version "
                f"{self.version}; expected one of: {', '.join(self.signature_names)}"))
        return signature_name

    def validate(self, inputs: Dict[str, np.ndarray], signature_name: str,
                 output_filter: Sequence[str] = ()) -> Tuple[str, List[str]]:
        """Checks a request against the SignatureDef; returns (signature name, output names to return).

        Raises:
          ServingError: INVALID_ARGUMENT naming the expected signature, inputs, dtypes, shapes or outputs.
        """
        signature_name = self.check_signature(signature_name)
        signature_def = self.signature_defs[signature_name]
        specs = self._input_specs[signature_name]
        if inputs.keys() != specs.keys():
            expected = sorted(specs)
            extra, missing = sorted(set(inputs) - set(expected)), sorted(set(expected) - set(inputs))
            raise ServingError("INVALID_ARGUMENT", (
                f"Request inputs do not match the inputs of {self._where(signature_name)}: expected "
                f"{expected}, got {sorted(inputs)} (unexpected: {extra}, missing: {missing})"))
        for key, array in inputs.items():
            dtype, dims = specs[key]
            if array.dtype != dtype.as_numpy_dtype and not (dtype == tf.string and array.dtype == object):
                raise ServingError("INVALID_ARGUMENT", (
                    f"input {key!r} of {self._where(signature_name)} expects dtype {dtype.name}, "
                    f"got {tf.as_dtype(array.dtype).name if array.dtype != object else 'string'}"))
            if dims is not None and (len(dims) != array.ndim or any(size >= 0 and size != got
                                                                    for size, got in zip(dims, array.shape))):
                raise ServingError("INVALID_ARGUMENT", (
                    f"input {key!r} of {self._where(signature_name)} expects shape "
                    f"{_shape_text(dims)}, got {list(array.shape)}"))
        outputs = sorted(signature_def.outputs)
        for key in output_filter:
            if key not in signature_def.outputs:
                raise ServingError("INVALID_ARGUMENT", (
                    f"output_filter {key!r} is not an output of {self._where(signature_name)}; "
                    f"expected one of {outputs}"))
        return signature_name, list(output_filter) or outputs

    def run(self, signature_name: str, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Runs a validated request through the signature's session callable; numpy arrays in and out."""
        input_keys, output_keys, run = self._callables[signature_name]
        try:
            results = run(*[inputs[key] for key in input_keys])
        except tf.errors.OpError as error:
            raise ServingError(_TF_CODE_NAMES.get(error.error_code, "INTERNAL"),
                               f"{self._where(signature_name)} failed: {error.message}") from error
        return dict(zip(output_keys, results))

    def predict(self, inputs: Dict[str, np.ndarray], signature_name: str = "",
                output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
        signature_name, outputs = self.validate(inputs, signature_name, output_filter)
        results = self.run(signature_name, inputs)
        return {key: results[key] for key in outputs}

    def warmup(self) -> int:
        """Replays ``assets.extra/tf_serving_warmup_requests`` (PredictionLog TFRecords); returns the count."""
        path = os.path.join(self.path, "assets.extra", signatures.WARMUP_FILE)
        if not tf.io.gfile.exists(path):
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS).as_numpy_iterator():
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            request = entry.predict_log.request
            inputs = {key: ndarray_from_tensor_proto(value) for key, value in request.inputs.items()}
            self.predict(inputs, request.model_spec.signature_name, list(request.output_filter))
            count += 1
        return count
