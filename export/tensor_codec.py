"""numpy arrays <-> ``tensorflow.TensorProto``, in both forms TF-Serving uses, without importing TensorFlow.

A TensorProto holds its values either as raw little-endian bytes in ``tensor_content`` or in the typed
repeated field of its dtype (``float_val``, ``int64_val``, ...). ``tensorflow_model_server`` answers in
the typed fields unless started with ``--enable_serialization_as_tensor_content``, and clients read
whichever is filled: :func:`fill_tensor_proto` writes either form, :func:`ndarray_from_tensor_proto` reads
both (value lists shorter than the shape are padded with their last value, as TensorFlow does).

The float fields are packed repeated fields, whose wire bytes are the array's own bytes: they are written
by merging those bytes into the proto, and read through a view message that declares them as bytes, so a
typed batch of 256x256 floats costs about what ``tensor_content`` does (a Python loop over the values
costs ~3 ms).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2, types_pb2

# Numeric dtypes whose tensor_content is the plain little-endian buffer of the numpy array.
_NUMPY_TO_DATATYPE = {
    np.dtype(np.float32): types_pb2.DT_FLOAT, np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.float16): types_pb2.DT_HALF, np.dtype(np.int8): types_pb2.DT_INT8,
    np.dtype(np.int16): types_pb2.DT_INT16, np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64, np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.uint16): types_pb2.DT_UINT16, np.dtype(np.uint32): types_pb2.DT_UINT32,
    np.dtype(np.uint64): types_pb2.DT_UINT64, np.dtype(np.bool_): types_pb2.DT_BOOL,
    np.dtype(np.complex64): types_pb2.DT_COMPLEX64, np.dtype(np.complex128): types_pb2.DT_COMPLEX128,
}
#: gRPC metadata with which ufl's own clients ask ``ufl serve`` for answers in ``tensor_content`` (faster to
#: encode and decode); servers that do not know it ignore it.
TENSOR_CONTENT_METADATA = ("ufl-tensor-content", "1")

_DATATYPE_TO_NUMPY = {value: key for key, value in _NUMPY_TO_DATATYPE.items()}

#: The typed TensorProto field of each dtype (as TensorFlow's Tensor::AsProtoField fills them).
_TYPED_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_COMPLEX64: "scomplex_val", types_pb2.DT_COMPLEX128: "dcomplex_val",
    types_pb2.DT_STRING: "string_val",
}
#: Packed fixed-width fields: field number -> element dtype of the wire bytes.
_PACKED_FIELDS = {"float_val": (5, np.dtype("<f4")), "double_val": (6, np.dtype("<f8")),
                  "scomplex_val": (9, np.dtype("<f4")), "dcomplex_val": (12, np.dtype("<f8"))}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _packed_view_class():
    """A message with TensorProto's packed float fields declared as ``repeated bytes``: parsing a
    TensorProto's bytes into it yields each packed run's raw bytes."""
    file = descriptor_pb2.FileDescriptorProto(name="ufl/tensor_packed_view.proto", package="ufl", syntax="proto3")
    message = file.message_type.add(name="TensorPackedView")
    for name, (number, _) in _PACKED_FIELDS.items():
        message.field.add(name=name, number=number, label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                          type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("ufl.TensorPackedView"))


_PackedView = _packed_view_class()


def _set_shape(proto: tensor_pb2.TensorProto, shape) -> None:
    dims = proto.tensor_shape.dim
    for size in shape:
        dims.add(size=size)


def _string_values(array: np.ndarray):
    return [value if isinstance(value, bytes) else str(value).encode("utf-8") for value in array.ravel()]


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray, *,
                      tensor_content: bool = True) -> tensor_pb2.TensorProto:
    """Writes ``array`` into ``proto`` (dtype, shape, values) and returns ``proto``.

    Args:
      proto: an empty TensorProto (e.g. ``response.outputs["codes"]``).
      array: any shape; numeric, bool or string (bytes / str / object) values.
      tensor_content: numeric values as raw bytes in ``tensor_content`` (True) or in the dtype's typed
        field such as ``float_val`` (False, what ``tensorflow_model_server`` answers by default). Strings
        always go to ``string_val``, as in TensorFlow.

    Raises:
      ValueError: the dtype has no TensorProto form here (e.g. datetime).
    """
    array = np.asarray(array)
    if array.dtype.kind in "SUO":
        proto.dtype = types_pb2.DT_STRING
        _set_shape(proto, array.shape)
        proto.string_val.extend(_string_values(array))
        return proto
    datatype = _NUMPY_TO_DATATYPE.get(array.dtype.newbyteorder("="))
    if datatype is None:
        raise ValueError(f"dtype {array.dtype} cannot be sent as a TensorProto; use a numeric, bool or "
                         "string array")
    array = array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)
    proto.dtype = datatype
    _set_shape(proto, array.shape)
    if tensor_content:
        proto.tensor_content = array.tobytes()
        return proto
    field = _TYPED_FIELD[datatype]
    if field in _PACKED_FIELDS:
        if array.size:
            number = _PACKED_FIELDS[field][0]
            proto.MergeFromString(_varint(number << 3 | 2) + _varint(array.nbytes) + array.tobytes())
    elif field == "half_val":
        proto.half_val.extend(array.view(np.uint16).ravel().tolist())
    else:
        getattr(proto, field).extend(array.ravel().tolist())
    return proto


def tensor_proto_from_ndarray(array: np.ndarray, *, tensor_content: bool = True) -> tensor_pb2.TensorProto:
    """A TensorProto holding ``array`` (see :func:`fill_tensor_proto`)."""
    return fill_tensor_proto(tensor_pb2.TensorProto(), array, tensor_content=tensor_content)


def _typed_values(proto: tensor_pb2.TensorProto, field: str, dtype: np.dtype) -> np.ndarray:
    """The flat values of a typed field (complex fields as interleaved real, imaginary parts)."""
    if field in _PACKED_FIELDS:
        view = _PackedView.FromString(proto.SerializeToString())
        raw = b"".join(getattr(view, field))
        element = _PACKED_FIELDS[field][1]
        if len(raw) == len(getattr(proto, field)) * element.itemsize:
            values = np.frombuffer(raw, element)
        else:  # values not written packed (legal, rare): read them one by one
            values = np.fromiter(getattr(proto, field), element)
        return values.view(dtype) if dtype.kind == "c" else values.astype(dtype, copy=False)
    if field == "half_val":
        return np.asarray(list(proto.half_val), np.uint16).view(np.float16)
    if field == "string_val":
        return np.asarray(list(proto.string_val), dtype=object)
    return np.asarray(list(getattr(proto, field)), dtype=dtype)


def ndarray_from_tensor_proto(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The numpy array held by a TensorProto in either form (no copy for ``tensor_content``).

    Raises:
      ValueError: the content does not match the dtype and shape, or the dtype is not supported.
    """
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    count = math.prod(shape)
    if proto.dtype == types_pb2.DT_STRING:
        dtype: Optional[np.dtype] = np.dtype(object)
    else:
        dtype = _DATATYPE_TO_NUMPY.get(proto.dtype)
        if dtype is None:
            raise ValueError(f"dtype {types_pb2.DataType.Name(proto.dtype)} is not supported; send a numeric, "
                             "bool or string tensor")
    content = proto.tensor_content
    if content and proto.dtype != types_pb2.DT_STRING:
        expected = count * dtype.itemsize
        if len(content) != expected:
            raise ValueError(f"tensor_content has {len(content)} bytes but dtype "
                             f"{dtype.name} and shape {list(shape)} need {expected}")
        return np.frombuffer(content, dtype=dtype.newbyteorder("<")).reshape(shape)
    values = _typed_values(proto, _TYPED_FIELD[proto.dtype], dtype)
    if len(values) == count:
        return values.reshape(shape)
    if len(values) > count:
        raise ValueError(f"{_TYPED_FIELD[proto.dtype]} has {len(values)} values but shape {list(shape)} holds {count}")
    # TensorFlow pads a short value list with its last value (zeros when empty).
    padded = np.full(count, values[-1] if len(values) else dtype.type(0) if dtype != object else b"", dtype=dtype)
    padded[:len(values)] = values
    return padded.reshape(shape)


def ndarrays_from_tensor_protos(protos) -> Dict[str, np.ndarray]:
    """``{key: array}`` of a ``map<string, TensorProto>`` such as ``PredictRequest.inputs``."""
    return {key: ndarray_from_tensor_proto(value) for key, value in protos.items()}
