"""Configuration read from the environment (SPEC §4), in one pydantic-settings model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.keys import RedisKeys, validate_instance_id

__all__ = ["DEFAULT_MODEL_DIR", "Settings", "redact_url"]

DEFAULT_MODEL_DIR = Path("cache/models/rl/stat_pair")


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every knob of the publisher and the server. Field names are also accepted as keywords."""

    model_config = SettingsConfigDict(
        case_sensitive=False, env_ignore_empty=True, extra="ignore", populate_by_name=True
    )

    redis_url: str = Field("redis://localhost:6379/0", validation_alias=_env("REDIS_URL"))
    instance_id: str = Field("default", validation_alias=_env("FKS_INSTANCE_ID"))
    enable_checkpoint_notify: bool = Field(True, validation_alias=_env("ENABLE_CHECKPOINT_NOTIFY"))
    model_path: Path | None = Field(None, validation_alias=_env("STAT_PAIR_RL_MODEL"))
    model_dir: Path | None = Field(None, validation_alias=_env("STAT_PAIR_RL_DIR"))
    default_model_dir: Path = Field(DEFAULT_MODEL_DIR, validation_alias=_env("FKS_DEFAULT_DIR"))
    jit: bool = Field(False, validation_alias=_env("STAT_PAIR_RL_JIT"))
    compile_backend: Literal["numpy", "torchscript"] = Field(
        "numpy", validation_alias=_env("FKS_COMPILE_BACKEND")
    )
    api_key: SecretStr | None = Field(None, validation_alias=_env("FKS_API_KEY"))
    notify_secret: SecretStr | None = Field(None, validation_alias=_env("FKS_NOTIFY_SECRET"))
    # Beyond the SPEC (documented in the README):
    node_id: str | None = Field(None, validation_alias=_env("FKS_NODE_ID"))
    state_dim: int | None = Field(28, validation_alias=_env("FKS_STATE_DIM"))
    max_batch_rows: int = Field(4096, ge=1, validation_alias=_env("FKS_MAX_BATCH_ROWS"))
    heartbeat_seconds: float = Field(2.0, gt=0, validation_alias=_env("FKS_HEARTBEAT_SECONDS"))
    torch_threads: int = Field(1, ge=0, validation_alias=_env("FKS_TORCH_THREADS"))
    # Bounds on what a node believes (hostile input, issue 12):
    max_checkpoint_bytes: int = Field(
        1 << 30, ge=1, validation_alias=_env("FKS_MAX_CHECKPOINT_BYTES")
    )
    max_parameters: int = Field(100_000_000, ge=1, validation_alias=_env("FKS_MAX_PARAMETERS"))
    load_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=_env("FKS_LOAD_TIMEOUT_SECONDS")
    )
    missing_retry_seconds: float = Field(
        10.0, ge=0, validation_alias=_env("FKS_MISSING_RETRY_SECONDS")
    )
    fallback_poll_seconds: float = Field(
        1.0, gt=0, validation_alias=_env("FKS_FALLBACK_POLL_SECONDS")
    )
    force_max_age_seconds: float = Field(
        300.0, gt=0, validation_alias=_env("FKS_FORCE_MAX_AGE_SECONDS")
    )
    public_docs: bool = Field(False, validation_alias=_env("FKS_PUBLIC_DOCS"))
    body_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=_env("FKS_BODY_TIMEOUT_SECONDS")
    )
    max_large_bodies: int = Field(4, ge=1, validation_alias=_env("FKS_MAX_LARGE_BODIES"))

    @field_validator("instance_id")
    @classmethod
    def _valid_instance(cls, value: str) -> str:
        return validate_instance_id(value)

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.instance_id)

    @property
    def secret(self) -> str | None:
        return self.notify_secret.get_secret_value() if self.notify_secret else None

    def model_roots(self) -> list[Path]:
        """The directories a served checkpoint must lie in: those of tier 1, 2 and 3."""
        roots: list[Path] = []
        if self.model_path is not None:
            roots.append(self.model_path.expanduser().parent)
        if self.model_dir is not None:
            roots.append(self.model_dir.expanduser())
        roots.append(self.default_model_dir.expanduser())
        return roots


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
