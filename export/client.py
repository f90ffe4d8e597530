"""gRPC client of the TF-Serving API, built on the official ``tensorflow_serving.apis`` stubs.

Talks to ``ufl serve`` or to a real ``tensorflow_model_server`` alike::

    codes = predict("127.0.0.1:8500", "patches16", patches)             # (N, P*P*C) -> (N, K)
    features = predict("127.0.0.1:8500", "patches16", images, signature_name="encode_images",
                       input_key="images")

Requests carry their tensors as raw bytes in ``TensorProto.tensor_content``; answers are read in either
form (``ufl.export.tensor_codec``). ``ufl serve`` answers this client in ``tensor_content`` too, because
the request carries the ``ufl-tensor-content`` gRPC metadata (other servers ignore it and answer in the typed
fields, which are read as well).
"""
from __future__ import annotations

import threading
import time
from typing import Dict, Optional

import grpc
import numpy as np
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from ufl.export import signatures
from ufl.export.tensor_codec import TENSOR_CONTENT_METADATA, fill_tensor_proto, ndarray_from_tensor_proto

#: gRPC's default 4 MiB limit is too small for a batch of images; TF-Serving clients raise it the same way.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
CHANNEL_OPTIONS = (("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES))

_channels: Dict[str, grpc.Channel] = {}
_channels_lock = threading.Lock()


def _channel(target: str) -> grpc.Channel:
    """One long-lived channel per target: a channel's connection setup costs more than a Predict."""
    with _channels_lock:
        channel = _channels.get(target)
        if channel is None:
            channel = _channels[target] = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        return channel


def close_channels() -> None:
    """Closes the cached channels (they are reopened on the next call)."""
    with _channels_lock:
        for channel in _channels.values():
            channel.close()
        _channels.clear()


def predict(target: str, model_name: str, inputs: np.ndarray, *,
            signature_name: str = signatures.SERVING_DEFAULT, input_key: str = signatures.PATCHES_INPUT,
            output_key: Optional[str] = None, version: Optional[int] = None,
            timeout: float = 30.0) -> np.ndarray:
    """Calls ``PredictionService/Predict`` and returns one output tensor.

    Args:
      target: ``host:port`` of the gRPC API (``ufl serve --port``, default 8500).
      model_name: served model name (``--model_name`` or the ``name`` in the model config file).
      inputs: the input batch, e.g. raw patches in [0, 1] of shape ``(batch, P*P*C)`` float32.
      signature_name: ``serving_default`` (codes), ``reconstruct`` or ``encode_images``.
      input_key: the signature's input name (``patches``, or ``images`` for ``encode_images``).
      output_key: the output to return; default: the ufl default for the signature (``codes``,
        ``reconstruction``, ``features``) or the only output of the response.
      version: a specific model version; default: the newest one served.
      timeout: seconds before the call fails with DEADLINE_EXCEEDED.

    Returns:
      The output as a numpy array, e.g. codes ``(batch, n_codes)`` float32.

    Raises:
      grpc.RpcError: the server refused the request; ``.code()`` and ``.details()`` say why
        (NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for a wrong input, ...).
      KeyError: the response has no output ``output_key``.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    if output_key is not None:
        request.output_filter.append(output_key)
    fill_tensor_proto(request.inputs[input_key], inputs)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(_channel(target))
    response = stub.Predict(request, timeout=timeout, metadata=(TENSOR_CONTENT_METADATA,))
    key = output_key or signatures.SIGNATURE_KEYS.get(signature_name, (None, None))[1]
    if key not in response.outputs:
        if output_key is None and len(response.outputs) == 1:
            key = next(iter(response.outputs))
        else:
            raise KeyError(f"model {model_name!r} signature {signature_name!r} returned outputs "
                           f"{sorted(response.outputs)}, not {key!r}; pass output_key=")
    return ndarray_from_tensor_proto(response.outputs[key])


def wait_until_available(target: str, model_name: str, timeout: float = 60.0) -> int:
    """Waits until the server at ``target`` serves a version of ``model_name``; returns that version.

    Polls ``ModelService/GetModelStatus`` (as TF-Serving deployments' readiness checks do).

    Raises:
      TimeoutError: no version became AVAILABLE within ``timeout`` seconds; the message gives the last
        status or error seen.
    """
    stub = model_service_pb2_grpc.ModelServiceStub(_channel(target))
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    deadline = time.monotonic() + timeout
    last_seen = "no answer"
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            response = stub.GetModelStatus(request, timeout=max(0.1, min(remaining, 5.0)),
                                           wait_for_ready=True)
            versions = [status.version for status in response.model_version_status
                        if status.state == available]
            if versions:
                return max(versions)
            last_seen = "; ".join(
                f"version {status.version} {get_model_status_pb2.ModelVersionStatus.State.Name(status.state)}"
                for status in response.model_version_status) or "no versions"
        except grpc.RpcError as error:
            # The last poll may run out of the caller's time; keep the server's own answer seen before it.
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED or last_seen == "no answer":
                last_seen = f"{error.code().name}: {error.details()}"
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    raise TimeoutError(f"model {model_name!r} is not available at {target} after {timeout:g} s "
                       f"(last seen: {last_seen}); is 'ufl serve' running with this model?")
