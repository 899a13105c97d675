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
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BINARY_HEADER",
    "DATATYPES",
    "MAX_DIMS",
    "MAX_INFLATION",
    "InferRequest",
    "OipError",
    "Output",
    "RequestedOutput",
    "Tensor",
    "decoded",
    "brief",
    "brief_names",
    "encode_answer",
    "json_object",
    "parse_request",
]

BINARY_HEADER = "Inference-Header-Content-Length"
MAX_DIMS = 32  # numpy's own limit is 64; a policy takes 1 to 3
# A compressed body inflates to at most this many times its size (JSON of floats compresses
# 3-10x, binary tensors barely), or to LARGE_INFLATED, whichever is more
MAX_INFLATION = 20
LARGE_INFLATED = 64 * 1024

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


def decoded(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` as sent with ``Content-Encoding: encoding`` (``gzip``, ``deflate``, or none),
    decompressed to at most ``limit`` bytes and :data:`MAX_INFLATION` times its own size:
    413 past either (a small bomb never inflates in memory, and a few KiB on the wire never
    become megabytes of JSON to parse), 400 for bytes that do not decompress, trailing bytes
    after the data (gzip members may follow each other, RFC 1952) or an encoding not
    supported."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in ("gzip", "deflate"):
        raise bad(f"Content-Encoding {brief(encoding)} is not supported (gzip, deflate)")
    bound = min(limit, max(LARGE_INFLATED, MAX_INFLATION * len(body)))
    out = bytearray()
    rest = body
    while True:
        inflater = zlib.decompressobj(31 if name == "gzip" else 15)
        try:
            out += inflater.decompress(rest, bound - len(out) + 1)
        except zlib.error as exc:
            raise bad(f"the body is not {name} data: {exc}") from None
        if inflater.unconsumed_tail or len(out) > bound:
            raise OipError(413, f"the {name} body inflates past {bound} bytes")
        if not inflater.eof:
            raise bad(f"the {name} body is cut short")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if name != "gzip":
            raise bad(f"{len(rest)} bytes follow the {name} data")


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
        tensor, used = _input(spec, f"inputs[{i}]", data[offset:], len(body))
        inputs.append(tensor)
        offset += used
    if offset != len(data):
        raise bad(f"{len(data) - offset} bytes of binary data follow the inputs' (none expected)")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise bad(f"an input is given twice: {brief_names(names)}")
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
    # ASCII digits only (str.isdigit() takes "²"), and no more of them than a size can have
    if not (value.isascii() and value.isdigit() and len(value) <= 20) or int(value) > size:
        raise bad(f"{BINARY_HEADER} must be a byte count within the body's {size}: {brief(value)}")
    return int(value)


def _shape(shape: object, where: str, limit: int) -> tuple[list[int], int]:
    """``shape`` and its element count, checked before anything is multiplied out: at most
    :data:`MAX_DIMS` dimensions, each a non-negative integer, and at most ``limit`` elements
    in all (a client-sized product of huge integers would hold the event loop)."""
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"{where}: shape must be a list of non-negative integers, got {brief(shape)}")
    if len(shape) > MAX_DIMS:
        raise bad(f"{where}: shape has {len(shape)} dimensions (at most {MAX_DIMS})")
    too_many = bad(f"{where}: shape {brief(shape)} has more elements than the body holds")
    if any(dim > limit for dim in shape):  # even beside a 0: numpy refuses such a dimension
        raise too_many
    if 0 in shape:
        return shape, 0
    count = 1
    for dim in shape:
        if (count := count * dim) > limit:
            raise too_many
    return shape, count


def brief_names(names: list[str]) -> str:
    """At most the first five names, each cut short: for an error message."""
    shown = ", ".join(brief(n) for n in names[:5])
    return f"[{shown}{', ...' if len(names) > 5 else ''}] ({len(names)})"


def brief(value: object) -> str:
    """``repr(value)`` cut to 100 characters: an error never echoes a whole hostile body."""
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _object(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad(f"{where} must be a JSON object")
    return value


def _input(spec: object, where: str, data: memoryview, limit: int) -> tuple[Tensor, int]:
    """One input and the count of binary bytes it took from ``data``; ``limit``: the most
    elements it may have (the body's size: any element takes at least a byte)."""
    if not isinstance(spec, dict):
        raise bad(f"{where} must be a JSON object")
    name, datatype = spec.get("name"), spec.get("datatype")
    if not isinstance(name, str):
        raise bad(f"{where}.name must be a string")
    where = f"input {brief(name)}"
    if datatype not in DATATYPES:
        raise bad(f"{where}: datatype {brief(datatype)} is not one of {', '.join(DATATYPES)}")
    dtype = DATATYPES[datatype]
    shape, count = _shape(spec.get("shape"), where, limit)
    parameters = _object(spec.get("parameters"), f"{where}: parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise bad(f"{where}: binary_data_size must be a byte count, got {brief(size)}")
        if "data" in spec:
            raise bad(f"{where} has both data and binary_data_size")
        if size != count * dtype.itemsize:
            raise bad(
                f"{where}: binary_data_size {size} is not the {count * dtype.itemsize} bytes "
                f"of shape {brief(shape)} in {datatype}"
            )
        if size > len(data):
            raise bad(f"{where}: {size} bytes of binary data announced, {len(data)} sent")
        array = np.frombuffer(data[:size], dtype=dtype).reshape(shape)
        return Tensor(name, datatype, array), size
    array = _json_data(spec.get("data"), where, shape, count, datatype)
    return Tensor(name, datatype, array), 0


def _json_data(
    data: object, where: str, shape: list[int], count: int, datatype: str
) -> npt.NDArray[Any]:
    dtype = DATATYPES[datatype]
    if not isinstance(data, list):
        raise bad(f"{where}: data must be a list (or the tensor sent as binary data)")
    try:
        values = np.asarray(data)
    except (ValueError, RecursionError):  # ragged nesting, or deeper than numpy goes
        raise bad(f"{where}: data is not a regular array of numbers") from None
    if values.size and values.dtype.kind not in _JSON_KINDS.get(dtype.kind, ""):
        raise bad(f"{where}: data must hold {_kind_name(dtype)} for datatype {datatype}")
    if values.size != count:
        raise bad(f"{where}: {values.size} values for shape {brief(shape)}")
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
    names = [out.name for out in requested]
    if len(set(names)) != len(names):  # an answer holds each output once
        raise bad(f"an output is requested twice: {brief_names(names)}")
    return tuple(requested)
