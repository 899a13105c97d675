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
    # SPEC §9 and the standard S3 client environment it names:
    "FKS_MODEL_URLS", "STAT_PAIR_RL_URL", "FKS_UPLOAD_TO", "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
}  # fmt: skip
NODES = ("server", "server-2")
FKS_VARS = ("REDIS", "FKS", "ENABLE", "STAT")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_services_exist(compose: dict[str, Any]) -> None:
    """`docker compose up` runs these; the operators' board waits for its profile."""
    default = {n for n, s in compose["services"].items() if "profiles" not in s}
    assert default == {
        "redis", "minio", "minio-init", "server", "server-2", "trainer"
    }  # fmt: skip
    profiled = {n: s["profiles"] for n, s in compose["services"].items() if "profiles" in s}
    assert profiled == {"prometheus": ["monitoring"], "grafana": ["monitoring"]}


def test_redis_has_a_healthcheck_and_the_others_wait_for_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in (*NODES, "trainer"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_minio_is_healthy_before_its_bucket_is_made_once(compose: dict[str, Any]) -> None:
    services = compose["services"]
    minio, init = services["minio"], services["minio-init"]
    assert minio["image"].startswith("minio/minio") and "server" in minio["command"]
    assert "ready" in " ".join(minio["healthcheck"]["test"])
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert init["restart"] == "no" and "mc mb" in " ".join(init["command"])
    assert "local/checkpoints" in " ".join(init["command"])
    for name in (*NODES, "trainer"):
        condition = services[name]["depends_on"]["minio-init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_the_trainer_uploads_to_minio_and_both_nodes_may_fetch_from_it(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    trainer = services["trainer"]["environment"]
    prefix = trainer["FKS_UPLOAD_TO"]
    assert prefix.startswith("s3://checkpoints/")
    assert trainer["AWS_ENDPOINT_URL"] == "http://minio:9000"
    for name in NODES:
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert Settings(model_urls=env["FKS_MODEL_URLS"]).url_prefixes() == [prefix], name
        assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]


def test_the_second_node_shares_no_volume(compose: dict[str, Any]) -> None:
    second = compose["services"]["server-2"]
    assert "volumes" not in second and "STAT_PAIR_RL_DIR" not in second["environment"]
    assert second["environment"]["STAT_PAIR_RL_URL"].startswith("s3://checkpoints/")
    ports = {p.split(":")[0] for n in NODES for p in compose["services"][n]["ports"]}
    assert ports == {"8000", "8001"}


def test_server_and_trainer_share_the_checkpoint_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server_dir = services["server"]["environment"]["STAT_PAIR_RL_DIR"]
    for name in ("server", "trainer"):
        mounts = services[name]["volumes"]
        assert f"checkpoints:{server_dir}" in mounts, name
    assert f"--dir {server_dir}" in " ".join(services["trainer"]["command"])
    assert "checkpoints" in compose["volumes"]


def test_environment_uses_only_spec_variables_with_valid_values(compose: dict[str, Any]) -> None:
    """Every variable set is one of SPEC §4/§9 and parses into Settings; all point at redis."""
    for name in (*NODES, "trainer"):
        env = compose["services"][name]["environment"]
        assert set(env) <= SPEC_VARIABLES, set(env) - SPEC_VARIABLES
        assert env["REDIS_URL"].startswith("redis://redis:")
        settings = Settings(**{k.lower(): v for k, v in env.items() if k.startswith(FKS_VARS)})
        assert settings.instance_id == "default"


def test_the_servers_publish_their_ports_and_serve(compose: dict[str, Any]) -> None:
    for name in NODES:
        server = compose["services"][name]
        assert server["command"][:2] == ["fks", "serve"] and "0.0.0.0" in server["command"]
        assert "/sac/health" in " ".join(server["healthcheck"]["test"])
    assert "8000:8000" in compose["services"]["server"]["ports"]


def test_the_dockerfile_installs_the_pinned_cpu_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"torch==([\d.]+)", (ROOT / "requirements.lock").read_text())
    assert pinned is not None
    assert f"torch=={pinned.group(1)}" in text and "whl/cpu" in text
    for package in ("common", "publisher", "subscriber", "fks"):
        assert f"COPY {package} ./{package}" in text
    assert "'.[s3]'" in text  # s3fs, for the nodes and the trainer that talk to MinIO
