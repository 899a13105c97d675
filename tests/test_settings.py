"""Settings come from the environment of SPEC §4 and keep secrets out of logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import Settings
from common.checkpoint import CheckpointLimits
from common.settings import DEFAULT_CACHE_DIR, DEFAULT_MODEL_DIR, redact_url

SPEC_VARS = [
    "REDIS_URL", "FKS_INSTANCE_ID", "ENABLE_CHECKPOINT_NOTIFY", "STAT_PAIR_RL_MODEL",
    "STAT_PAIR_RL_DIR", "STAT_PAIR_RL_JIT", "FKS_API_KEY", "FKS_NOTIFY_SECRET",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPEC_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_spec() -> None:
    """With no environment, the SPEC §4 defaults apply."""
    s = Settings()
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.instance_id == "default"
    assert s.enable_checkpoint_notify is True
    assert s.jit is False
    assert s.model_path is None and s.model_dir is None
    assert s.api_key is None and s.secret is None
    assert s.model_roots() == [DEFAULT_MODEL_DIR, DEFAULT_CACHE_DIR]


def test_every_spec_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each SPEC §4 variable lands in its field."""
    env = {
        "REDIS_URL": "redis://:pw@10.0.0.1:6380/2",
        "FKS_INSTANCE_ID": "prod.eu-1",
        "ENABLE_CHECKPOINT_NOTIFY": "false",
        "STAT_PAIR_RL_MODEL": str(tmp_path / "a" / "model_x.pt"),
        "STAT_PAIR_RL_DIR": str(tmp_path / "b"),
        "STAT_PAIR_RL_JIT": "true",
        "FKS_API_KEY": "key-123",
        "FKS_NOTIFY_SECRET": "sec-456",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.redis_url == env["REDIS_URL"]
    assert s.instance_id == "prod.eu-1"
    assert s.enable_checkpoint_notify is False
    assert s.jit is True
    assert s.api_key is not None and s.api_key.get_secret_value() == "key-123"
    assert s.secret == "sec-456"
    assert s.model_roots() == [tmp_path / "a", tmp_path / "b", DEFAULT_MODEL_DIR, DEFAULT_CACHE_DIR]


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API key and the notify secret are masked when settings are printed."""
    monkeypatch.setenv("FKS_API_KEY", "key-123")
    monkeypatch.setenv("FKS_NOTIFY_SECRET", "sec-456")
    text = repr(Settings()) + str(Settings())
    assert "key-123" not in text and "sec-456" not in text


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """STAT_PAIR_RL_MODEL= (empty) means no explicit path."""
    monkeypatch.setenv("STAT_PAIR_RL_MODEL", "")
    assert Settings().model_path is None


def test_the_activation_budget_is_64_mib_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """FKS_MAX_ACTIVATION_BYTES bounds what one request may make a model hold: 64 MiB by
    default, read from the environment, a positive number, and a node's load limit too."""
    monkeypatch.delenv("FKS_MAX_ACTIVATION_BYTES", raising=False)
    assert Settings().max_activation_bytes == 64 << 20
    monkeypatch.setenv("FKS_MAX_ACTIVATION_BYTES", "1048576")
    assert CheckpointLimits.from_settings(Settings()).max_activation_bytes == 1 << 20
    monkeypatch.setenv("FKS_MAX_ACTIVATION_BYTES", "0")
    with pytest.raises(ValueError, match="FKS_MAX_ACTIVATION_BYTES"):
        Settings()


def test_the_row_limit_is_a_load_limit_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """FKS_MAX_BATCH_ROWS (4,096) is how far a load measures a cost that grows faster than
    rows, so it travels in the node's load limits."""
    monkeypatch.delenv("FKS_MAX_BATCH_ROWS", raising=False)
    assert CheckpointLimits.from_settings(Settings()).max_batch_rows == 4096
    monkeypatch.setenv("FKS_MAX_BATCH_ROWS", "512")
    assert CheckpointLimits.from_settings(Settings()).max_batch_rows == 512


def test_bad_instance_id_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FKS_INSTANCE_ID is validated like every instance id."""
    monkeypatch.setenv("FKS_INSTANCE_ID", "no spaces allowed")
    with pytest.raises(ValueError, match="instance_id"):
        Settings()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:hunter2@host:6380/1", "redis://:***@host:6380/1"),
        ("rediss://user:hunter2@host/0", "rediss://user:***@host/0"),
    ],
)
def test_redis_passwords_are_redacted(url: str, shown: str) -> None:
    """URLs in logs never show the password."""
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0?password=hunter2", "redis://127.0.0.1:6379/0?password=***"),
        ("redis://h/0?db=1&PASSWORD=hunter2&x=1", "redis://h/0?db=1&PASSWORD=***&x=1"),
        ("redis://h/0?pass=a;pwd=b", "redis://h/0?pass=***;pwd=***"),
        ("redis://h/0?sentinel_password=a&ssl_password=b", "redis://h/0?sentinel_password=***&ssl_password=***"),
        ("redis://h/0?secret=a&token=b&access_key=c", "redis://h/0?secret=***&token=***&access_key=***"),
        ("redis://h/0?api%5Fkey=a&apikey=b&auth=c", "redis://h/0?api%5Fkey=***&apikey=***&auth=***"),
        ("redis://h/0?ssl_keyfile=/k.pem&db=2", "redis://h/0?ssl_keyfile=/k.pem&db=2"),
        ("redis://:pw@h/0?password=pw", "redis://:***@h/0?password=***"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
        ("redis://user:@h/0", "redis://user:***@h/0"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis+sentinel://user:pw@h1:26379,h2:26379/mymaster",
         "redis+sentinel://user:***@h1:26379,h2:26379/mymaster"),
        ("redis+sentinel://:pw@h1:26379,h2:26379/mymaster/0?sentinel_password=s",
         "redis+sentinel://:***@h1:26379,h2:26379/mymaster/0?sentinel_password=***"),
        ("redis+cluster://u:pw@h1:7000,h2:7001", "redis+cluster://u:***@h1:7000,h2:7001"),
        ("rediss://default:p@ss/w?rd#x@cache.example.com:6380/0",
         "rediss://default:***@cache.example.com:6380/0"),
        ("unix:///run/redis.sock?db=0&password=pw", "unix:///run/redis.sock?db=0&password=***"),
        ("unix://u:pw@/run/redis.sock", "unix://u:***@/run/redis.sock"),
        ("s3://bucket/k.pt?X-Amz-Credential=AKIA/1&X-Amz-Signature=ab#f",
         "s3://bucket/k.pt?X-Amz-Credential=***&X-Amz-Signature=***#f"),
        ("https://host/m.pt?sig=abc&email=a@b.example", "https://host/m.pt?sig=***&email=a@b.example"),
        ("/srv/models/model_1.pt", "/srv/models/model_1.pt"),
        ("", ""),
    ],
)  # fmt: skip
def test_every_url_form_is_redacted(url: str, shown: str) -> None:
    """Userinfo passwords (any scheme, several hosts, raw / ? # @ in them) and secret query
    parameters are masked; everything else is kept as written."""
    assert redact_url(url) == shown


@pytest.mark.parametrize("value", ["5e-324", "1e-9", "0.0009", "-1", "nan", "inf", "101", "abc"])
def test_a_switch_interval_that_is_not_one_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """FKS_SWITCH_INTERVAL_MS: 0 (leave Python's) or 0.001…100 ms; a denormal once made the
    node start and then answer 503 (sys.setswitchinterval refused 0.0)."""
    monkeypatch.setenv("FKS_SWITCH_INTERVAL_MS", value)
    with pytest.raises(ValueError, match="FKS_SWITCH_INTERVAL_MS|switch_interval_ms"):
        Settings()


def test_the_switch_interval_is_left_to_python_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FKS_SWITCH_INTERVAL_MS", raising=False)
    assert Settings().switch_interval_ms == 0
    monkeypatch.setenv("FKS_SWITCH_INTERVAL_MS", "0.5")
    assert Settings().switch_interval_ms == 0.5
