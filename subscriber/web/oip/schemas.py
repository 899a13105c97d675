"""The JSON of the Open Inference Protocol's answers under ``/v2``, for the OpenAPI document.

The routes build their JSON directly (an inference answer may be JSON followed by binary
tensors); these models say what it holds, as the protocol's ``inference_rest.md`` does, and
which refusals each route may answer, as ``{"error": …}``, and what an inference request
holds (``INFER_BODY``: the routes read the body themselves).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from subscriber.web.deps import BODY_LIMITS

__all__ = [
    "BODY_REFUSALS",
    "INFER_BODY",
    "REFUSALS",
    "IndexEntry",
    "InferAnswer",
    "LiveAnswer",
    "ModelMetadataAnswer",
    "ModelReadyAnswer",
    "OipErrorAnswer",
    "ReadyAnswer",
    "ServerMetadataAnswer",
    "TensorMetadata",
]


class OipErrorAnswer(BaseModel):
    error: str = Field(description="Why the request was refused")


class LiveAnswer(BaseModel):
    live: bool


class ReadyAnswer(BaseModel):
    ready: bool


class ModelReadyAnswer(BaseModel):
    name: str
    ready: bool


class ServerMetadataAnswer(BaseModel):
    name: str = Field(examples=["fks-checkpoint-notify"])
    version: str
    extensions: list[str] = Field(examples=[["binary_tensor_data", "model_repository"]])


class TensorMetadata(BaseModel):
    name: str = Field(examples=["state"])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1: any number of rows", examples=[[-1, 28]])


class ModelMetadataAnswer(BaseModel):
    name: str = Field(description="The instance id", examples=["default"])
    versions: list[str] = Field(description="The served version, then the one kept for rollback")
    platform: str = Field(examples=["fks_sac_actor"])
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = Field(
        None, description="binary_data_size: the tensor follows the JSON as raw bytes"
    )
    data: list[Any] | None = Field(None, description="Row-major, flattened (a JSON tensor)")


class InferAnswer(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's id, echoed when it gave one")
    outputs: list[OutputTensor]


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str = Field(examples=["READY"], description="READY or UNAVAILABLE")
    reason: str


def _refusal(description: str) -> dict[str, Any]:
    return {"model": OipErrorAnswer, "description": description}


REFUSALS: dict[int | str, dict[str, Any]] = {
    401: _refusal("FKS_API_KEY set, key missing or wrong"),
    404: _refusal("No such model, or no such version of it"),
    503: _refusal("No model is served yet"),
}
# the body guard's answers (their descriptions, Retry-After), in the protocol's error shape
BODY_REFUSALS: dict[int | str, dict[str, Any]] = {
    **REFUSALS,
    **{code: {**answer, "model": OipErrorAnswer} for code, answer in BODY_LIMITS.items()},
    400: _refusal("A bad tensor: name, datatype, shape, data, or a value that is not finite"),
    413: _refusal("Over FKS_MAX_BATCH_ROWS, FKS_MAX_ACTIVATION_BYTES, or a body over 8 MiB"),
}


_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "examples": ["state"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "examples": ["FP32"]},
        "parameters": {"type": "object", "description": "binary_data_size: sent as bytes"},
        "data": {"type": "array", "description": "Row-major, flat or nested"},
    },
}
# The request body (the routes read it themselves: it may be JSON followed by binary tensors)
INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {
                        "type": "object",
                        "description": "binary_data_output (bool), deterministic (bool)",
                    },
                    "inputs": {"type": "array", "items": _TENSOR},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "parameters": {"type": "object"},
                            },
                        },
                    },
                },
            },
        }
    },
}
