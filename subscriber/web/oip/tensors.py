"""The tensors of an Open Inference Protocol request and answer, as JSON or binary (SPEC §14).

A request is the protocol's JSON (``inputs``: ``name``, ``shape``, ``datatype``, ``data``
flat or nested in row-major order), optionally followed by raw tensor bytes: Triton's binary
tensor data extension, which ``tritonclient`` uses by default. Then the header
``Inference-Header-Content-Length`` gives the length of the JSON part, and each binary input
gives its size in ``parameters.binary_data_size`` instead of ``data``; the bytes follow in the
order of the inputs, little-endian, without padding. An answer is built the same way: an output
is binary when its request asked (``parameters.binary_data``) or, failing that, when the
request's ``parameters.binary_data_output`` is true; otherwise it is JSON ``data``, flattened.

Pure functions of bytes and arrays, no HTTP and no model: each refusal is an :class:`OipError`
that carries the status and the message the route answers (``{"error": message}``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BINARY_HEADER",
    "DATATYPES",
    "InferRequest",
    "OipError",
    "Output",
    "RequestedOutput",
    "Tensor",
    "encode_answer",
    "json_object",
    "parse_request",
]

BINARY_HEADER = "Inference-Header-Content-Length"

# The protocol's numeric datatypes (BYTES, strings, is not one a policy takes or gives)
DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(kind).newbyteorder("<")
    for name, kind in (
        ("BOOL", "bool"), ("UINT8", "uint8"), ("UINT16", "uint16"), ("UINT32", "uint32"),
        ("UINT64", "uint64"), ("INT8", "int8"), ("INT16", "int16"), ("INT32", "int32"),
        ("INT64", "int64"), ("FP16", "float16"), ("FP32", "float32"), ("FP64", "float64"),
    )
}  # fmt: skip
# what numpy makes of JSON values that a tensor of each kind accepts: a float tensor takes
# integers too (JSON writes 1.0 as 1), an integer one no floats, a BOOL one only true/false
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}


class OipError(Exception):
    """A request the protocol's routes refuse: ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Tensor:
    """One input of a request, decoded: ``array`` has ``shape`` and the dtype of ``datatype``."""

    name: str
    datatype: str
    array: npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the request names; ``binary``: its ``binary_data`` (None: not given)."""

    name: str
    binary: bool | None


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: tuple[Tensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output of the model
    binary_output: bool  # the request's binary_data_output: the default of each output


@dataclass(frozen=True, slots=True)
class Output:
    """One output of an answer: ``array`` in ``datatype``, as binary data or JSON ``data``."""

    name: str
    datatype: str
    array: npt.NDArray[Any]
    binary: bool


def bad(message: str) -> OipError:
    return OipError(400, message)


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The inference request in ``body``; ``header_length``: the value of the
    ``Inference-Header-Content-Length`` header, if any (then the binary data follows)."""
    split = len(body) if header_length is None else _header_length(header_length, len(body))
    head = json_object(body[:split], "the inference request")
    request_id = head.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad("id must be a string")
    parameters = _object(head.get("parameters"), "parameters")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise bad("parameters.binary_data_output must be true or false")
    raw_inputs = head.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad("inputs must be a non-empty list")
    data = memoryview(body)[split:]
    inputs: list[Tensor] = []
    offset = 0
    for i, spec in enumerate(raw_inputs):
        tensor, used = _input(spec, f"inputs[{i}]", data[offset:])
        inputs.append(tensor)
        offset += used
    if offset != len(data):
        raise bad(f"{len(data) - offset} bytes of binary data follow the inputs' (none expected)")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise bad(f"an input is given twice: {names}")
    return InferRequest(
        id=request_id,
        parameters=parameters,
        inputs=tuple(inputs),
        outputs=_requested(head.get("outputs")),
        binary_output=binary_output,
    )


def encode_answer(
    model_name: str, model_version: str, request_id: str | None, outputs: list[Output]
) -> tuple[bytes, dict[str, str]]:
    """The answer's body and its headers: JSON, or JSON then each binary output's bytes."""
    chunks: list[bytes] = []
    listed: list[dict[str, Any]] = []
    for out in outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.array.shape),
        }
        if out.binary:
            raw = np.ascontiguousarray(out.array, dtype=DATATYPES[out.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = out.array.ravel().tolist()
        listed.append(entry)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:  # echoed when given (Triton leaves an empty one out too)
        answer["id"] = request_id
    answer["outputs"] = listed
    # allow_nan=False: a non-finite value is refused before it gets here, never sent as NaN
    head = json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return head, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head))}
    return head + b"".join(chunks), headers


def json_object(text: bytes, what: str) -> dict[str, Any]:
    """``text`` as a JSON object; 400 for anything else (nesting too deep for the parser
    included: it raises RecursionError, which is no ValueError)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise bad(f"{what} is not JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise bad(f"{what} must be a JSON object")
    return value


def _header_length(value: str, size: int) -> int:
    if not value.isdigit() or int(value) > size:
        raise bad(f"{BINARY_HEADER} must be a byte count within the body's {size}: {value!r}")
    return int(value)


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{where} must be a JSON object")
    return value


def _input(spec: object, where: str, data: memoryview) -> tuple[Tensor, int]:
    """One input and the count of binary bytes it took from ``data``."""
    if not isinstance(spec, dict):
        raise bad(f"{where} must be a JSON object")
    name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
    if not isinstance(name, str):
        raise bad(f"{where}.name must be a string")
    where = f"input {name!r}"
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if datatype not in DATATYPES:
        raise bad(f"{where}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    dtype = DATATYPES[datatype]
    count = math.prod(shape)
    parameters = _object(spec.get("parameters"), f"{where}: parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise bad(f"{where}: binary_data_size must be a byte count, got {size!r}")
        if "data" in spec:
            raise bad(f"{where} has both data and binary_data_size")
        if size != count * dtype.itemsize:
            raise bad(
                f"{where}: binary_data_size {size} is not the {count * dtype.itemsize} bytes "
                f"of shape {shape} in {datatype}"
            )
        if size > len(data):
            raise bad(f"{where}: {size} bytes of binary data announced, {len(data)} sent")
        array = np.frombuffer(data[:size], dtype=dtype).reshape(shape)
        return Tensor(name, datatype, array), size
    return Tensor(name, datatype, _json_data(spec.get("data"), where, shape, datatype)), 0


def _json_data(data: object, where: str, shape: list[int], datatype: str) -> npt.NDArray[Any]:
    dtype = DATATYPES[datatype]
    if not isinstance(data, list):
        raise bad(f"{where}: data must be a list (or the tensor sent as binary data)")
    try:
        values = np.asarray(data)
    except (ValueError, RecursionError):  # ragged nesting, or deeper than numpy goes
        raise bad(f"{where}: data is not a regular array of numbers") from None
    if values.size and values.dtype.kind not in _JSON_KINDS.get(dtype.kind, ""):
        raise bad(f"{where}: data must hold {_kind_name(dtype)} for datatype {datatype}")
    if values.size != math.prod(shape):
        raise bad(f"{where}: {values.size} values for shape {shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # out of range: refused by the caller
        return values.astype(dtype).reshape(shape)


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {"b": "true/false", "f": "numbers"}.get(dtype.kind, "integers")


def _requested(value: object) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad("outputs must be a list")
    requested: list[RequestedOutput] = []
    for i, spec in enumerate(value):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad(f"outputs[{i}] must be an object with a name")
        binary = _object(spec.get("parameters"), f"outputs[{i}].parameters").get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise bad(f"outputs[{i}].parameters.binary_data must be true or false")
        requested.append(RequestedOutput(spec["name"], binary))
    return tuple(requested)
