"""Request and response models of the ``/sac`` routes (SPEC §5), with OpenAPI examples."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "BenchmarkRequest",
    "BenchmarkResponse",
    "DiscreteBatchResponse",
    "DiscretePredictResponse",
    "ErrorResponse",
    "HealthResponse",
    "HistoryResponse",
    "ModelInfo",
    "PredictRequest",
    "PredictResponse",
    "ReadyResponse",
]

STATE_EXAMPLE = [0.0] * 28
MODEL_EXAMPLE: dict[str, Any] = {
    "model_path": "/srv/models/model_42.pt",
    "model_mtime_utc": "2026-11-22T21:00:00.123456Z",
    "version": 42,
    "generation": 7,
    "jit_compiled": False,
}


class PredictRequest(BaseModel):
    state: list[float] | list[list[float]] = Field(
        description="One state vector of the policy's state_dim (28). For a windowed `dqn` "
        "(`window` > 1, see /sac/model/info `input_shape`): `window` rows of state_dim, "
        "oldest first.",
        examples=[STATE_EXAMPLE],
    )
    deterministic: bool = Field(
        True,
        description="tanh(mean) if true, else a sampled action; a discrete policy always "
        "answers the argmax of its Q-values",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"action": 0.42, **MODEL_EXAMPLE, "latency_ms": 0.03}]}
    )
    action: float | list[float] = Field(description="A float for 1 action dimension, else a list")
    model_path: str
    model_mtime_utc: str
    version: int
    generation: int
    latency_ms: float = Field(description="Inference time inside the handler")
    jit_compiled: bool


class DiscretePredictResponse(BaseModel):
    """The answer of a discrete policy (architecture ``dqn``, or a user's discrete module)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"action": 2, "q_values": [0.1, -0.3, 0.7], **MODEL_EXAMPLE, "latency_ms": 0.03}
            ]
        }
    )
    action: int = Field(description="The index of the chosen action: the argmax of q_values")
    q_values: list[float] = Field(description="One Q-value per action")
    model_path: str
    model_mtime_utc: str
    version: int
    generation: int
    latency_ms: float = Field(description="Inference time inside the handler")
    jit_compiled: bool


class BatchRequest(BaseModel):
    states: list[list[float]] | list[list[list[float]]] = Field(
        description="Rows of state vectors, all of the policy's state_dim; for a windowed "
        "`dqn`, a list of windows (each `window` rows of state_dim)",
        examples=[[STATE_EXAMPLE, STATE_EXAMPLE]],
    )
    deterministic: bool = True


class BatchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"actions": [0.42, -0.1], "batch_size": 2, **MODEL_EXAMPLE, "latency_ms": 0.05}
            ]
        }
    )
    actions: list[float] | list[list[float]]
    batch_size: int
    model_path: str
    model_mtime_utc: str
    version: int
    generation: int
    latency_ms: float
    jit_compiled: bool


class DiscreteBatchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "actions": [2, 0],
                    "q_values": [[0.1, -0.3, 0.7], [0.9, 0.2, 0.1]],
                    "batch_size": 2,
                    **MODEL_EXAMPLE,
                    "latency_ms": 0.05,
                }
            ]
        }
    )
    actions: list[int] = Field(description="Per row, the index of the chosen action")
    q_values: list[list[float]]
    batch_size: int
    model_path: str
    model_mtime_utc: str
    version: int
    generation: int
    latency_ms: float
    jit_compiled: bool


class BenchmarkRequest(BaseModel):
    batch_size: int = Field(1, ge=1, examples=[1])
    warmup: int = Field(50, ge=0, examples=[50])
    iterations: int = Field(500, ge=1, examples=[500])


class BenchmarkResponse(BaseModel):
    batch_size: int
    iterations: int = Field(description="Iterations timed: fewer than asked when capped")
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    jit_compiled: bool
    capped: bool = Field(False, description="True when the 5 s wall-clock cap stopped the run")


class ModelInfo(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "path": "/srv/models/model_42.pt",
                    "mtime_utc": "2026-11-22T21:00:00.123456Z",
                    "version": 42,
                    "generation": 7,
                    "model_name": "sac_stat_pair",
                    "training_step": 42000,
                    "state_dim": 28,
                    "action_dim": 1,
                    "architecture": "sac_actor",
                    "input_shape": [28],
                    "output_shape": [1],
                    "discrete": False,
                    "activation_bytes_per_row": 2176,
                    "max_batch_rows": 4096,
                    "jit_compiled": False,
                    "loaded_at": "2026-11-22T21:00:00.130000Z",
                    "source": "channel",
                    "sha256": "9f2b…",
                }
            ]
        }
    )
    path: str
    mtime_utc: str
    version: int
    generation: int
    model_name: str
    training_step: int
    state_dim: int
    action_dim: int = Field(description="Action dimensions; for a discrete policy, its actions")
    architecture: str = Field("sac_actor", description="The registered architecture served")
    input_shape: list[int] = Field(
        description="One request row: [state_dim], or [window, state_dim] for a windowed dqn"
    )
    output_shape: list[int] = Field(description="One answer row: [action_dim] or [n_actions]")
    discrete: bool = Field(False, description="True: action is an index, with q_values")
    activation_bytes_per_row: int = Field(
        description="What one request row makes this model hold (input and activations), "
        "measured when it was verified; for a model whose cost grows faster than rows (rows "
        "that interact), what its largest batch holds a row"
    )
    max_batch_rows: int = Field(
        description="The most rows one request may send to this model: FKS_MAX_BATCH_ROWS, or "
        "fewer when FKS_MAX_ACTIVATION_BYTES allows fewer (more: 413)"
    )
    jit_compiled: bool
    loaded_at: str
    source: str = Field(description="disk, mtime, remote, channel, latest, reload or rollback")
    sha256: str
    origin: str | None = Field(
        None, description="the URL a remote checkpoint was fetched from (path: its cached copy)"
    )


class HistoryResponse(BaseModel):
    generations: list[dict[str, Any]] = Field(description="Models served, newest first (32)")
    events: list[dict[str, Any]] = Field(
        description="Swaps, stale skips, rejections and failed loads with reasons, newest first"
    )


class HealthResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "model_loaded": True, "redis_connected": True, "mode": "redis"}
            ]
        }
    )
    status: str
    model_loaded: bool
    redis_connected: bool
    mode: str = Field(description='"redis" while the listener is connected, else "mtime"')


class ReadyResponse(BaseModel):
    ready: bool
    version: int | None = None
    generation: int | None = None


class ErrorResponse(BaseModel):
    detail: str
