"""Reading an ONNX model file's protobuf structure without onnx or onnxruntime.

The coordinator checks ``infer.model`` uploads with :func:`read_onnx` before anything runs.
It walks the `Protocol Buffers wire format
<https://protobuf.dev/programming-guides/encoding>`_ over the field numbers of
`onnx.proto <https://github.com/onnx/onnx/blob/main/onnx/onnx.proto>`_, so the check is
cheap, imports neither package, and executes nothing from the file. Refused with
``ValidationFailed`` (field ``inputs.model``): files over ``MAX_MODEL_BYTES``, bytes that do
not parse as ONNX, tensors stored as external data (they would name files on the node),
operators outside the ONNX, ONNX-ML and ONNX Runtime domains, and graphs without exactly one
float or double input shaped ``(batch, d1, ...)`` with fixed ``d1 ...``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from quackmesh.core.errors import ValidationFailed

__all__ = [
    "ELEM_DTYPES",
    "MAX_MODEL_BYTES",
    "MODEL_FIELD",
    "OnnxInfo",
    "OnnxOutput",
    "read_onnx",
]

MAX_MODEL_BYTES = 200 * 1024 * 1024
"""Largest ONNX file accepted (ONNX protobufs stop at 2 GiB; uploads at 256 MiB)."""
MODEL_FIELD = "inputs.model"
"""The field that refusals name: the ``model`` input of ``infer.model``."""
ELEM_DTYPES = {1: np.float32, 11: np.float64}  # ONNX TensorProto.DataType -> input dtype
_ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
_MAX_DEPTH = 64  # nested subgraphs (If/Loop bodies) followed at most this deep


@dataclass(frozen=True)
class OnnxOutput:
    """A graph output: ``elem`` is the ONNX element type (0: not a tensor, e.g. ZipMap)."""

    name: str
    elem: int
    shape: tuple[int | None, ...] | None  # None: rank unknown; None dims are symbolic


@dataclass(frozen=True)
class OnnxInfo:
    """What :func:`read_onnx` learnt from the protobuf: the one input, outputs, size."""

    input_name: str
    input_elem: int
    input_shape: tuple[int | None, ...]
    outputs: tuple[OnnxOutput, ...]
    n_params: int

    @property
    def n_features(self) -> int:
        return math.prod(d or 0 for d in self.input_shape[1:])

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or ``None`` when the batch dimension is symbolic."""
        return self.input_shape[0]


# Message kind -> {field number: child message kind} in onnx.proto. Only what matters is
# followed: where tensors and subgraphs can sit.

_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}


class _NotProtobuf(ValueError):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _NotProtobuf("truncated varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """``(field number, value)``: an int for varints, bytes for length-delimited fields."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        value: int | memoryview = 0
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value = buf[i : i + size]
            i += size
        elif wire == 5:
            i += 4
        else:
            raise _NotProtobuf(f"wire type {wire}")
        if i > len(buf):
            raise _NotProtobuf("truncated field")
        yield key >> 3, value


def _text(value: int | memoryview) -> str:
    if isinstance(value, int):
        raise _NotProtobuf("expected a string")
    return bytes(value).decode("utf-8", errors="replace")


def _scan(buf: memoryview, kind: str, found: dict[str, set[str]], depth: int = 0) -> None:
    """Collect external tensors, operator domains and local-function domains."""
    if depth > _MAX_DEPTH:
        raise _NotProtobuf("subgraphs nested too deep")
    children = _CHILDREN[kind]
    for field, value in _fields(buf):
        if kind == "tensor" and (field == 13 or (field == 14 and value == 1)):
            found["external"].add("external")  # external_data, or data_location=EXTERNAL
        elif kind == "node" and field == 7:
            found["domains"].add(_text(value))
        elif kind == "function" and field == 10:
            found["functions"].add(_text(value))
        elif field in children and isinstance(value, memoryview):
            _scan(value, children[field], found, depth + 1)


def _value_info(buf: memoryview) -> OnnxOutput:
    """A ValueInfoProto: name, tensor element type (0 if not a tensor) and shape."""
    name, elem, shape = "", 0, None
    for field, value in _fields(buf):
        if field == 1:
            name = _text(value)
        elif field == 2 and isinstance(value, memoryview):  # TypeProto
            for tf, tv in _fields(value):
                if tf == 1 and isinstance(tv, memoryview):  # tensor_type
                    for f, v in _fields(tv):
                        if f == 1 and isinstance(v, int):
                            elem = v
                        elif f == 2 and isinstance(v, memoryview):
                            shape = tuple(_dim(d) for n, d in _fields(v) if n == 1)
    return OnnxOutput(name=name, elem=elem, shape=shape)


def _dim(buf: int | memoryview) -> int | None:
    if isinstance(buf, int):
        raise _NotProtobuf("expected a dimension")
    for field, value in _fields(buf):
        if field == 1 and isinstance(value, int) and 0 < value < 2**62:
            return value
    return None  # dim_param (symbolic), or no size


def _initializer(buf: memoryview) -> tuple[str, int]:
    """An initializer's name and element count (dims are packed or repeated varints)."""
    name, dims = "", []
    for field, value in _fields(buf):
        if field == 8:
            name = _text(value)
        elif field == 1 and isinstance(value, int):
            dims.append(value)
        elif field == 1 and isinstance(value, memoryview):  # packed
            i = 0
            while i < len(value):
                dim, i = _varint(value, i)
                dims.append(dim)
    return name, math.prod(min(d, 2**40) for d in dims)


def read_onnx(blob: bytes) -> OnnxInfo:
    """Parse an ONNX ModelProto's structure; ``ValidationFailed`` (``inputs.model``) when it
    is not ONNX or breaks a rule in the module docs. Nothing is executed."""
    if len(blob) > MAX_MODEL_BYTES:
        raise ValidationFailed(
            f"model file has {len(blob)} bytes, more than the limit of {MAX_MODEL_BYTES}",
            field=MODEL_FIELD,
            max_bytes=MAX_MODEL_BYTES,
        )
    found: dict[str, set[str]] = {"external": set(), "domains": set(), "functions": set()}
    try:
        top = dict(_fields(memoryview(blob)))
        graph = top.get(7)
        if not isinstance(graph, memoryview) or not isinstance(top.get(1), int):
            raise _NotProtobuf("no ir_version or graph")
        _scan(memoryview(blob), "model", found)
        inits = [_initializer(v) for f, v in _fields(graph) if f == 5 and not isinstance(v, int)]
        init_names = {name for name, _ in inits}
        inputs = [_value_info(v) for f, v in _fields(graph) if f == 11 and not isinstance(v, int)]
        outputs = [_value_info(v) for f, v in _fields(graph) if f == 12 and not isinstance(v, int)]
    except (_NotProtobuf, IndexError, RecursionError) as exc:
        raise ValidationFailed(
            f"model file does not parse as ONNX: {exc}", field=MODEL_FIELD
        ) from exc
    if found["external"]:
        raise ValidationFailed(
            "model stores tensors as external data, which is refused: save it as one file",
            field=MODEL_FIELD,
        )
    unknown = sorted(found["domains"] - _ALLOWED_DOMAINS - found["functions"])
    if unknown:
        raise ValidationFailed(
            f"model uses operators from domain {unknown[0]!r}; only the ONNX, ONNX-ML and "
            "ONNX Runtime operator sets run here (no custom ops)",
            field=MODEL_FIELD,
            domains=unknown,
        )
    data_inputs = [i for i in inputs if i.name not in init_names]
    if len(data_inputs) != 1:
        raise ValidationFailed(
            f"model has {len(data_inputs)} inputs; infer.model runs models with exactly one",
            field=MODEL_FIELD,
        )
    (x,) = data_inputs
    if x.elem not in ELEM_DTYPES:
        raise ValidationFailed(
            f"model input {x.name!r} must be a float or double tensor (ONNX type {x.elem})",
            field=MODEL_FIELD,
        )
    if x.shape is None or len(x.shape) < 2 or any(d is None for d in x.shape[1:]):
        raise ValidationFailed(
            f"model input {x.name!r} must have shape (batch, n_features, ...) with fixed sizes "
            f"after the batch dimension, got {_show(x.shape)}",
            field=MODEL_FIELD,
        )
    if not outputs:
        raise ValidationFailed("model has no outputs", field=MODEL_FIELD)
    return OnnxInfo(
        input_name=x.name,
        input_elem=x.elem,
        input_shape=x.shape,
        outputs=tuple(outputs),
        n_params=sum(n for _, n in inits),
    )


def _show(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "no shape"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
