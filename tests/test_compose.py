"""docker-compose.yml and the Dockerfile agree with the SPEC (no Docker engine runs here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SPEC_VARIABLES = {
    "REDIS_URL", "FKS_INSTANCE_ID", "ENABLE_CHECKPOINT_NOTIFY", "STAT_PAIR_RL_MODEL",
    "STAT_PAIR_RL_DIR", "STAT_PAIR_RL_JIT", "FKS_API_KEY", "FKS_NOTIFY_SECRET",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_three_services_exist(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "server", "trainer"}


def test_redis_has_a_healthcheck_and_the_others_wait_for_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in ("server", "trainer"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_server_and_trainer_share_the_checkpoint_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server_dir = services["server"]["environment"]["STAT_PAIR_RL_DIR"]
    for name in ("server", "trainer"):
        mounts = services[name]["volumes"]
        assert f"checkpoints:{server_dir}" in mounts, name
    assert f"--dir {server_dir}" in " ".join(services["trainer"]["command"])
    assert "checkpoints" in compose["volumes"]


def test_environment_uses_only_spec_variables_with_valid_values(compose: dict[str, Any]) -> None:
    """Every variable set is one of SPEC §4 and parses into Settings; both point at redis."""
    for name in ("server", "trainer"):
        env = compose["services"][name]["environment"]
        assert set(env) <= SPEC_VARIABLES, set(env) - SPEC_VARIABLES
        assert env["REDIS_URL"].startswith("redis://redis:")
        settings = Settings(**{k.lower(): v for k, v in env.items()})
        assert settings.instance_id == "default"


def test_the_server_publishes_its_port_and_serves(compose: dict[str, Any]) -> None:
    server = compose["services"]["server"]
    assert "8000:8000" in server["ports"]
    assert server["command"][:2] == ["fks", "serve"] and "0.0.0.0" in server["command"]
    assert "/sac/health" in " ".join(server["healthcheck"]["test"])


def test_the_dockerfile_installs_the_pinned_cpu_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"torch==([\d.]+)", (ROOT / "constraints.txt").read_text())
    assert pinned is not None
    assert f"torch=={pinned.group(1)}" in text and "whl/cpu" in text
    for package in ("common", "publisher", "subscriber", "fks"):
        assert f"COPY {package} ./{package}" in text
