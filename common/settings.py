"""Configuration read from the environment (SPEC §4), in one pydantic-settings model."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_plus

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.keys import RedisKeys, validate_instance_id, validate_node_id
from common.redis_io.url import parse_redis_url
from common.remote import BLOB_PREFIX, BLOB_SCHEME, canonical_url, is_url

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MAX_ACTIVATION_BYTES",
    "DEFAULT_MAX_BATCH_ROWS",
    "DEFAULT_MODEL_DIR",
    "INSTANCE_PLACEHOLDER",
    "Settings",
    "keys_for",
    "redact_url",
]

# The caps on what one request may make a node hold (common/limits.py applies them).
# 64 MiB: 4,096 rows of the default actor hold ~9 MiB; a windowed dqn of window 256 and
# lstm_hidden 1024 holds just over 1 MiB a row (its LSTM's output alone), so 62 rows fit.
DEFAULT_MAX_ACTIVATION_BYTES = 64 << 20
DEFAULT_MAX_BATCH_ROWS = 4096
DEFAULT_MODEL_DIR = Path("cache/models/rl/stat_pair")
DEFAULT_CACHE_DIR = Path("cache/models/remote")
# In a model root, the instance it serves (SPEC §13: STAT_PAIR_RL_DIR=/srv/models/{instance})
INSTANCE_PLACEHOLDER = "{instance}"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every knob of the publisher and the server. Field names are also accepted as keywords."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,  # a refused REDIS_URL may hold a password
    )

    redis_url: str = Field("redis://localhost:6379/0", validation_alias=_env("REDIS_URL"))
    sharded_pubsub: bool = Field(False, validation_alias=_env("FKS_SHARDED_PUBSUB"))
    instance_id: str = Field("default", validation_alias=_env("FKS_INSTANCE_ID"))
    # SPEC §13: several instances on one node (comma-separated; the first is /sac's)
    instance_ids: str = Field("", validation_alias=_env("FKS_INSTANCE_IDS"))
    # ... read on one connection (SPEC §13), or one each: a flood past Redis' pub/sub output
    # buffer on one channel then closes only its instance's connection
    subscriptions: Literal["shared", "per-instance"] = Field(
        "shared", validation_alias=_env("FKS_SUBSCRIPTIONS")
    )
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
    # Beyond the SPEC (documented in docs/reference/environment.md):
    node_id: str | None = Field(None, validation_alias=_env("FKS_NODE_ID"))
    state_dim: int | None = Field(28, validation_alias=_env("FKS_STATE_DIM"))
    max_batch_rows: int = Field(
        DEFAULT_MAX_BATCH_ROWS, ge=1, validation_alias=_env("FKS_MAX_BATCH_ROWS")
    )
    heartbeat_seconds: float = Field(2.0, gt=0, validation_alias=_env("FKS_HEARTBEAT_SECONDS"))
    torch_threads: int = Field(1, ge=0, validation_alias=_env("FKS_TORCH_THREADS"))
    # How long a background thread may hold the GIL while the event loop waits for it
    # (sys.setswitchinterval; 0 leaves Python's 5 ms, which gave the lowest storm p99 of 0.5,
    # 1, 2 and 5 ms in one run: bench/storm.py measures 0.5 beside it).
    switch_interval_ms: float = Field(
        0.0, ge=0, le=100, validation_alias=_env("FKS_SWITCH_INTERVAL_MS")
    )

    @field_validator("switch_interval_ms")
    @classmethod
    def _a_real_interval(cls, value: float) -> float:
        if 0 < value < 0.001:  # below 1 µs, or a float that is 0 once in seconds
            raise ValueError("must be 0 (leave Python's 5 ms) or at least 0.001 ms")
        return value

    gc_freeze: bool = Field(True, validation_alias=_env("FKS_GC_FREEZE"))
    # Bounds on what a node believes (hostile input, issue 12):
    max_checkpoint_bytes: int = Field(
        1 << 30, ge=1, validation_alias=_env("FKS_MAX_CHECKPOINT_BYTES")
    )
    max_parameters: int = Field(100_000_000, ge=1, validation_alias=_env("FKS_MAX_PARAMETERS"))
    # ... and on what a request costs (issue 24): input rows and activations of one pass
    max_activation_bytes: int = Field(
        DEFAULT_MAX_ACTIVATION_BYTES, ge=1, validation_alias=_env("FKS_MAX_ACTIVATION_BYTES")
    )
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
    # Checkpoints that travel (SPEC §9):
    model_urls: str = Field("", validation_alias=_env("FKS_MODEL_URLS"))
    model_url: str | None = Field(None, validation_alias=_env("STAT_PAIR_RL_URL"))
    cache_dir: Path = Field(DEFAULT_CACHE_DIR, validation_alias=_env("FKS_CACHE_DIR"))
    cache_keep: int = Field(4, ge=1, validation_alias=_env("FKS_CACHE_KEEP"))
    fetch_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=_env("FKS_FETCH_TIMEOUT_SECONDS")
    )
    fetch_retries: int = Field(3, ge=0, validation_alias=_env("FKS_FETCH_RETRIES"))
    remote_poll_seconds: float = Field(5.0, gt=0, validation_alias=_env("FKS_REMOTE_POLL_SECONDS"))
    blob_keep: int = Field(8, ge=1, validation_alias=_env("FKS_BLOB_KEEP"))
    blob_max_bytes: int = Field(64 << 20, ge=1, validation_alias=_env("FKS_BLOB_MAX_BYTES"))
    upload_to: str | None = Field(None, validation_alias=_env("FKS_UPLOAD_TO"))

    @field_validator("instance_id")
    @classmethod
    def _valid_instance(cls, value: str) -> str:
        return validate_instance_id(value)

    @field_validator("instance_ids")
    @classmethod
    def _valid_instances(cls, value: str) -> str:
        _instance_list(value)
        return value

    @model_validator(mode="after")
    def _roots_per_instance(self) -> Settings:
        """A node of several instances keeps each one's files apart: a root it is given must
        name ``{instance}``, or one instance's fallback would serve another's checkpoints."""
        if len(self.instances) > 1:
            for name, root in (
                ("STAT_PAIR_RL_DIR", self.model_dir),
                ("STAT_PAIR_RL_MODEL", self.model_path),
                ("STAT_PAIR_RL_URL", self.model_url),
            ):
                if root is not None and INSTANCE_PLACEHOLDER not in str(root):
                    raise ValueError(
                        f"{name} must contain {INSTANCE_PLACEHOLDER} when a node serves several "
                        f"instances ({', '.join(self.instances)}): e.g. /srv/models/{{instance}}"
                    )
            self._roots_apart()
        return self

    def _roots_apart(self) -> None:
        """No model root of one instance is, holds or lies in another's (symlinks and ``..``
        resolved): a message for one instance never reaches another's files (tier 1's root is
        the file's directory, so ``{instance}`` belongs in the directory of
        ``STAT_PAIR_RL_MODEL``; ``FKS_DEFAULT_DIR`` needs it too once set)."""
        seen: list[tuple[str, str, Path]] = []
        for instance_id in self.instances:
            own: list[tuple[str, str, Path]] = []
            for name, root in self.for_instance(instance_id).named_roots():
                real = Path(os.path.realpath(root))
                for other_id, other_name, other in seen:
                    if real.is_relative_to(other) or other.is_relative_to(real):
                        raise ValueError(
                            f"the model roots of instances {other_id} and {instance_id} "
                            f"overlap ({other_name} {other} and {name} {real}): each instance's "
                            f"must be its own, e.g. /srv/models/{{instance}}"
                        )
                own.append((instance_id, name, real))
            seen += own

    @field_validator("node_id")
    @classmethod
    def _valid_node_id(cls, value: str | None) -> str | None:
        return None if value is None else validate_node_id(value)

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: str) -> str:
        parse_redis_url(value)  # a ValueError naming what is wrong, at start
        return value

    @field_validator("model_urls")
    @classmethod
    def _valid_prefixes(cls, value: str) -> str:
        _prefixes(value)
        return value

    @field_validator("model_url")
    @classmethod
    def _valid_tier_url(cls, value: str | None) -> str | None:
        if value is not None:
            _prefixes(value, blobs=False)
        return value

    @property
    def instances(self) -> list[str]:
        """The instances this node serves, ``/sac``'s first: ``FKS_INSTANCE_IDS``, else
        ``FKS_INSTANCE_ID`` alone."""
        return _instance_list(self.instance_ids) or [self.instance_id]

    def for_instance(self, instance_id: str) -> Settings:
        """These settings for one of :attr:`instances`: its id, and ``{instance}`` in its model
        roots replaced by it. On a node of several instances, the default tier-3 directory is
        ``cache/models/rl/<instance>`` and the download cache ``<FKS_CACHE_DIR>/<instance>``,
        so no instance ever reads or prunes another's files. The result names that one
        instance only (``instance_ids`` empty): taking it again changes nothing."""
        if instance_id not in self.instances:
            raise ValueError(f"{instance_id!r} is not one of {self.instances}")

        def place(path: Path | None) -> Path | None:
            return None if path is None else Path(place_url(str(path)))

        def place_url(url: str) -> str:
            return url.replace(INSTANCE_PLACEHOLDER, instance_id)

        update: dict[str, object] = {
            "instance_id": instance_id,
            "instance_ids": "",
            "model_path": place(self.model_path),
            "model_dir": place(self.model_dir),
            "default_model_dir": place(self.default_model_dir),
            "model_url": None if self.model_url is None else place_url(self.model_url),
            "model_urls": place_url(self.model_urls),
            "cache_dir": place(self.cache_dir),
        }
        if len(self.instances) > 1:
            if self.default_model_dir == DEFAULT_MODEL_DIR:
                update["default_model_dir"] = DEFAULT_MODEL_DIR.parent / instance_id
            if INSTANCE_PLACEHOLDER not in str(self.cache_dir):
                update["cache_dir"] = self.cache_dir / instance_id
        return self.model_copy(update=update)

    @property
    def keys(self) -> RedisKeys:
        return keys_for(self.instance_id, self.redis_url)

    @property
    def secret(self) -> str | None:
        return self.notify_secret.get_secret_value() if self.notify_secret else None

    def model_roots(self) -> list[Path]:
        """The directories a served checkpoint must lie in: those of tier 1, 2 and 3."""
        return [root for _, root in self.named_roots()]

    def named_roots(self) -> list[tuple[str, Path]]:
        """:meth:`model_roots`, each with the setting it comes from."""
        roots: list[tuple[str, Path]] = []
        if self.model_path is not None:
            roots.append(("STAT_PAIR_RL_MODEL's directory", self.model_path.expanduser().parent))
        if self.model_dir is not None:
            roots.append(("STAT_PAIR_RL_DIR", self.model_dir.expanduser()))
        roots.append(("FKS_DEFAULT_DIR", self.default_model_dir.expanduser()))
        # fetched checkpoints are confined too
        roots.append(("FKS_CACHE_DIR", self.cache_dir.expanduser()))
        return roots

    def url_prefixes(self) -> list[str]:
        """The URL prefixes a remote ``model_path`` must lie under (canonical form):
        ``FKS_MODEL_URLS`` and the remote tier ``STAT_PAIR_RL_URL``."""
        return _prefixes(self.model_urls) + _prefixes(self.model_url or "", blobs=False)


def _instance_list(value: str) -> list[str]:
    """The instance ids of ``FKS_INSTANCE_IDS`` (commas, spaces allowed), each valid and
    named once; a ``ValueError`` naming what is wrong."""
    if not value.strip():
        return []
    ids = [part.strip() for part in value.split(",")]
    for instance_id in ids:
        validate_instance_id(instance_id)
        if instance_id in (".", ".."):  # it names a model root's place: not a directory's
            raise ValueError(f"invalid instance_id {instance_id!r}: it would name a directory")
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ValueError(
            f"instance {', '.join(twice)} is named more than once (FKS_INSTANCE_IDS or --instance)"
        )
    return ids


def keys_for(instance_id: str, redis_url: str) -> RedisKeys:
    """The keys of ``instance_id`` as laid out for ``redis_url`` (hash-tagged in a cluster)."""
    return RedisKeys(instance_id, hash_tag=parse_redis_url(redis_url).kind == "cluster")


def _prefixes(value: str, *, blobs: bool = True) -> list[str]:
    """Canonical URL prefixes of a comma-separated list (``redis-blob:`` admits blobs, where
    ``blobs``); ValueError for one that is not."""
    out = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if blobs and item.lower() == BLOB_PREFIX:
            out.append(BLOB_PREFIX)
            continue
        if not is_url(item) or item.lower().startswith(("file:", BLOB_SCHEME + ":")):
            raise ValueError(f"{item!r} is not a URL prefix such as s3://bucket/models/")
        out.append(canonical_url(item))
    return out


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HOSTS = re.compile(r"^[\w.~%:,\[\]-]*$")  # host[:port][,host[:port]...], IPv6 in brackets
_SECRET_PARTS = ("pass", "pwd", "secret", "token", "credential", "signature")
_SECRET_ENDS = ("key", "sig", "auth")
MASK = "***"


def redact_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``, for logs; the rest is left as it was.

    Masks the password of the userinfo (``user:pw@``, any scheme, one host or a comma list
    as in ``redis+sentinel://user:pw@h1:26379,h2:26379/mymaster``) and the value of every
    query parameter whose name, case-insensitive, contains ``pass``, ``pwd``, ``secret``,
    ``token``, ``credential`` or ``signature``, or ends in ``key``, ``sig`` or ``auth``
    (``password``, ``sentinel_password``, ``access_key``, ``X-Amz-Signature``, ...). The
    userinfo ends at the last ``@`` followed by a host list, so a password holding a raw
    ``/``, ``?``, ``#`` or ``@`` is masked whole (a URL with an ``@`` in a query value may
    lose more than its secrets). A user name alone is not a secret.
    """
    scheme = _SCHEME.match(url)
    if scheme is None or not url.startswith("//", scheme.end()):
        return _redact_query(url)
    start = scheme.end() + 2
    userinfo_end = _userinfo_end(url, start)
    if userinfo_end is None:
        return _redact_query(url)
    user, colon, _ = url[start:userinfo_end].partition(":")
    shown = user + (":" + MASK if colon else "")
    return url[:start] + shown + _redact_query(url[userinfo_end:])


def _userinfo_end(url: str, start: int) -> int | None:
    """Index of the ``@`` closing the userinfo, or None: the last ``@`` followed by hosts."""
    at = len(url)
    while (at := url.rfind("@", start, at)) != -1:
        hosts = re.split(r"[/?#]", url[at + 1 :], maxsplit=1)[0]
        userinfo = url[start:at]
        # A user name alone cannot hold a path or a query: that "@" is in a query value.
        if _HOSTS.match(hosts) and (":" in userinfo or not re.search(r"[/?#]", userinfo)):
            return at
    return None


def _redact_query(text: str) -> str:
    """``text`` with the values of secret-looking query parameters masked."""
    head, question, rest = text.partition("?")
    if not question:
        return text
    query, hash_, fragment = rest.partition("#")
    pairs = []
    for pair in re.split(r"([&;])", query):
        name, equals, _ = pair.partition("=")
        pairs.append(name + "=" + MASK if equals and _is_secret(name) else pair)
    return head + "?" + "".join(pairs) + hash_ + fragment


def _is_secret(name: str) -> bool:
    lowered = unquote_plus(name).strip().lower()
    return any(part in lowered for part in _SECRET_PARTS) or lowered.endswith(_SECRET_ENDS)
