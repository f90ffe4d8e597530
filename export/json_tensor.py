"""Tensors in the JSON of TF-Serving's REST ``:predict`` (as its ``json_tensor``): request bodies to numpy
arrays, outputs to JSON values.

- Row format: ``{"instances": [...]}`` holds one entry per example: the value of the only input, or an
  object naming every input; answered ``{"predictions": [...]}``. Columnar: ``{"inputs": ...}`` holds the
  value of the only input or an object of inputs; answered ``{"outputs": ...}``.
- Binary strings travel as ``{"b64": "<base64>"}``: accepted for string inputs, and written for string
  outputs whose name ends in ``_bytes``.
- float32 outputs are written as the shortest decimal that reads back as the same float32 (``0.2``, not
  the float64 expansion ``0.20000000298023224``).
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, Tuple

import numpy as np

from ufl.export.servable import ServingError

_B64 = "b64"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and _B64 in value


def _decode_strings(value: Any, key: str) -> Any:
    """Nested lists of str / {"b64": ...} -> the same nesting of bytes."""
    if isinstance(value, list):
        return [_decode_strings(item, key) for item in value]
    if _is_b64(value):
        try:
            return base64.b64decode(value[_B64], validate=True)
        except (binascii.Error, TypeError) as error:
            raise ServingError("INVALID_ARGUMENT", f"input {key!r} has a 'b64' value that is not base64: {error}")
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ServingError("INVALID_ARGUMENT", f"input {key!r} is a string tensor; send strings or "
                                           f"{{\"b64\": ...}} objects, got {type(value).__name__}")


def _to_array(value: Any, key: str, dtype: np.dtype) -> np.ndarray:
    try:
        if dtype == object:
            decoded = _decode_strings(value, key)
            array = np.empty(np.shape(decoded), dtype=object)
            array[...] = decoded
            return array
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise ServingError("INVALID_ARGUMENT", f"input {key!r} cannot be read as a {dtype.name} tensor "
                                               f"(ragged list or wrong type?): {error}")


def parse_predict_body(body: Dict[str, Any], input_dtypes: Dict[str, np.dtype]) -> Tuple[Dict[str, np.ndarray], bool]:
    """Reads the inputs of a ``:predict`` body; returns (inputs, row_format).

    Args:
      body: the decoded JSON object.
      input_dtypes: input name -> numpy dtype of the signature (``object`` for strings).

    Raises:
      ServingError: INVALID_ARGUMENT naming what is wrong with the body.
    """
    if ("instances" in body) == ("inputs" in body):
        raise ServingError("INVALID_ARGUMENT", "JSON request must have exactly one of 'instances' (row format) "
                                               "or 'inputs' (columnar format)")
    names = sorted(input_dtypes)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise ServingError("INVALID_ARGUMENT", "'instances' must be a list with one entry per example")
        if instances and all(isinstance(row, dict) and not _is_b64(row) for row in instances):
            keys = set(instances[0])
            if any(set(row) != keys for row in instances):
                raise ServingError("INVALID_ARGUMENT", "every instance must name the same inputs; expected "
                                                       f"{names}")
            return {key: _to_array([row[key] for row in instances], key, input_dtypes.get(key, np.float32))
                    for key in keys}, True
        if len(names) != 1:
            raise ServingError("INVALID_ARGUMENT", f"the signature has inputs {names}; send each instance as "
                                                   "an object naming them")
        return {names[0]: _to_array(instances, names[0], input_dtypes[names[0]])}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return {key: _to_array(value, key, input_dtypes.get(key, np.float32)) for key, value in inputs.items()}, False
    if len(names) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature has inputs {names}; send 'inputs' as an object "
                                               "naming them")
    return {names[0]: _to_array(inputs, names[0], input_dtypes[names[0]])}, False


def shortest_float32(values: np.ndarray) -> np.ndarray:
    """float64 copies of float32 ``values`` rounded to the fewest significant digits (1 to 9) that read
    back as the same float32, so that their Python/JSON text is that short decimal."""
    exact = np.asarray(values, np.float32).ravel()
    result = exact.astype(np.float64)
    todo = np.flatnonzero(np.isfinite(result) & (result != 0))
    exponent = np.floor(np.log10(np.abs(result[todo])))
    # Rounding by a power of ten is exact up to 1e22; the few values beyond use numpy's shortest text.
    far = np.abs(exponent) > 12
    result[todo[far]] = [float(str(value)) for value in exact[todo[far]]]
    todo, exponent = todo[~far], exponent[~far]
    with np.errstate(over="ignore"):
        for digits in range(1, 10):
            if not len(todo):
                break
            places = digits - 1 - exponent
            scale = 10.0 ** np.abs(places)
            candidate = np.where(places >= 0, np.round(result[todo] * scale) / scale,
                                 np.round(result[todo] / scale) * scale)
            fits = candidate.astype(np.float32) == exact[todo]
            result[todo[fits]] = candidate[fits]
            todo, exponent = todo[~fits], exponent[~fits]
    return result.reshape(np.shape(values))


def to_json_value(value: np.ndarray, name: str) -> Any:
    """An output array as nested JSON lists (float32 shortest, strings as text or ``{"b64": ...}``)."""
    value = np.asarray(value)
    if value.dtype == np.float32:
        return shortest_float32(value).tolist()
    if value.dtype.kind in "SO":
        as_b64 = name.endswith("_bytes")

        def encode(item):
            item = item if isinstance(item, bytes) else str(item).encode("utf-8")
            return {_B64: base64.b64encode(item).decode("ascii")} if as_b64 else item.decode("utf-8", "replace")

        return np.frompyfunc(encode, 1, 1)(value).tolist() if value.ndim else encode(value.item())
    return value.tolist()


def format_predict_response(outputs: Dict[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
    """``{"predictions": ...}`` (rows) or ``{"outputs": ...}`` (columns); one output is not wrapped in a dict."""
    columns = {key: to_json_value(value, key) for key, value in outputs.items()}
    if not row_format:
        if len(columns) == 1:
            return {"outputs": next(iter(columns.values()))}
        return {"outputs": columns}
    if len(columns) == 1:
        return {"predictions": next(iter(columns.values()))}
    sizes = {value.shape[0] if np.ndim(value) else -1 for value in outputs.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ServingError("INVALID_ARGUMENT", "outputs have different batch sizes and cannot be returned as "
                                               "rows; use the columnar format ('inputs')")
    return {"predictions": [{key: column[row] for key, column in columns.items()} for row in range(sizes.pop())]}
