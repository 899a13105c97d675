"""The monitoring setup against a real Prometheus (Debian's, fetched by fks/prometheus.py when
missing): `promtool` checks the shipped configuration and rules and runs the rules' unit
tests; Prometheus scrapes two real nodes, each serving its own model (instance `alpha`,
instance `beta`), with the API key as the shipped configuration sends it; and every query of
the shipped Grafana dashboard returns data for each model, and only the selected ones when
the board's `model` selector names one."""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fks.prometheus import ensure_prometheus
from fks.redis_server import free_port
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from tests.helpers import wait_for, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "prometheus.yml"
RULES = ROOT / "deploy" / "fks-rules.yml"
DASHBOARD = ROOT / "docs" / "grafana" / "fks-dashboard.json"
MODELS = ("alpha", "beta")
KEY = "prom-key"
STATE = [0.05] * 28
# the node's own series (its Redis connection), drawn per node, not per model
PER_NODE = ("fks_listener_connected", "fks_listener_reconnects_total")


def queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


@pytest.fixture(scope="module")
def tools() -> tuple[Path, Path]:
    return ensure_prometheus()


def promtool(tools: tuple[Path, Path], *args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([str(tools[1]), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def scrape_config(tmp_path: Path, targets: list[str]) -> Path:
    """The shipped configuration with this test's key file and nodes: nothing else changed."""
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    (job,) = config["scrape_configs"]
    key = tmp_path / "fks_api_key"
    key.write_text(KEY)
    job["authorization"]["credentials_file"] = str(key)
    job["static_configs"] = [{"targets": targets}]
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_promtool_passes_the_shipped_rules_and_their_unit_tests(tools: tuple[Path, Path]) -> None:
    """The rules file is valid, and each alert fires when (and only when) it should."""
    assert "SUCCESS: 4 rules found" in promtool(tools, "check", "rules", str(RULES))
    promtool(tools, "test", "rules", "fks-rules.test.yml", cwd=ROOT / "tests" / "data")


@pytest.fixture
def nodes(redis_url: str, tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    """Two real nodes, one model each, that swapped, refused, skipped, acked and answered."""
    servers: dict[str, ServerProcess] = {}
    try:
        for model in MODELS:
            root = tmp_path / model
            (root / "incoming").mkdir(parents=True)
            write_checkpoint(root, 1)
            env = {"REDIS_URL": redis_url, "STAT_PAIR_RL_DIR": str(root),
                   "FKS_DEFAULT_DIR": str(tmp_path / f"d-{model}"), "FKS_INSTANCE_ID": model,
                   "FKS_NODE_ID": f"node-{model}", "FKS_API_KEY": KEY}  # fmt: skip
            servers[model] = ServerProcess(env, log_path=tmp_path / f"{model}.log").start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def traffic(redis_url: str, servers: dict[str, ServerProcess], root: Path, version: int) -> None:
    """On each model: a swap by the channel (acked), a stale notice, a refused checkpoint,
    and predictions on the three inference routes."""
    auth = {"Authorization": f"Bearer {KEY}"}
    for model, server in servers.items():
        good = write_checkpoint(root / model / "incoming", version)
        old = write_checkpoint(root / model / "incoming", 1, name=f"old_{version}.pt")
        with CheckpointNotifier(redis_url, model) as notifier:
            assert notifier.notify(good.path, version=version, wait_for=1).acks.ok  # type: ignore[union-attr]
            assert notifier.notify(old.path, version=1, wait_for=1).sent  # stale
            notifier.notify(good.path, version=version + 1, sha256="0" * 64, wait_for=1)
        with httpx.Client(base_url=server.url, headers=auth, timeout=5) as http:
            assert http.post("/sac/predict", json={"state": STATE}).status_code == 200
            assert http.post("/sac/predict/batch", json={"states": [STATE]}).status_code == 200
            tensor = {"name": "state", "shape": [1, 28], "datatype": "FP32", "data": STATE}
            v2 = http.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
            assert v2.status_code == 200, v2.text


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def finite(series: dict[str, Any]) -> bool:
    return math.isfinite(float(series["value"][1]))


def test_every_dashboard_query_has_data_for_each_model_on_a_real_prometheus(
    tools: tuple[Path, Path], nodes: dict[str, ServerProcess], redis_url: str, tmp_path: Path
) -> None:
    """`promtool check config` passes the shipped configuration (with this test's key file and
    targets); Prometheus scrapes both nodes with the key; every query of the dashboard, with
    the selector on All, gives a finite value for each model (a per-node one for each node),
    and with the selector on one model, that model's series only."""
    targets = [server.url.removeprefix("http://") for server in nodes.values()]
    config = scrape_config(tmp_path, targets)
    promtool(tools, "check", "config", str(config))
    port = free_port()
    prometheus = f"http://127.0.0.1:{port}"
    args = [str(tools[0]), f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--log.level=warn"]  # fmt: skip
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    with subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT) as process:
        try:

            def scraped() -> bool:
                try:
                    up = query(prometheus, "up")
                except (httpx.HTTPError, ValueError):  # not listening, or starting (not JSON)
                    return False
                return len(up) == 2 and all(s["value"][1] == "1" for s in up)

            wait_for(scraped, timeout=60, every=0.2)
            time.sleep(2.0)  # counters seen before the traffic: increases and rates start at 0
            traffic(redis_url, nodes, tmp_path, version=2)

            def every_query_has_data() -> bool:  # scrapes that followed the traffic
                return all(
                    (answer := query(prometheus, expr.replace("$model", ".*")))
                    and all(map(finite, answer))
                    for expr in queries()
                )

            wait_for(every_query_has_data, timeout=30, every=0.5)

            def first_events_seen() -> bool:  # each node's first channel swap and first ack
                for expr in ('increase(fks_swaps_total{source="channel"}[5m])',
                             'increase(fks_acks_total{outcome="applied"}[5m])'):  # fmt: skip
                    answer = query(prometheus, f"sum by (model) ({expr})")
                    if {s["metric"]["model"] for s in answer if float(s["value"][1]) > 0} != set(
                        MODELS
                    ):
                        return False
                return True

            wait_for(first_events_seen, timeout=30, every=0.5)
            for expr in queries():
                everything = query(prometheus, expr.replace("$model", ".*"))
                assert everything and all(map(finite, everything)), (expr, everything)
                if any(name in expr for name in PER_NODE):
                    nodes_seen = {s["metric"].get("node") or s["metric"]["instance"]
                                  for s in everything}  # fmt: skip
                    assert len(nodes_seen) == 2, (expr, everything)
                    continue
                assert {s["metric"]["model"] for s in everything} == set(MODELS), expr
                one = query(prometheus, expr.replace("$model", "beta"))
                assert one and {s["metric"]["model"] for s in one} == {"beta"}, (expr, one)

            def refused_alerts() -> set[str]:  # each node's first refusal: a new series at 1
                alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()
                return {a["labels"]["model"] for a in alerts["data"]["alerts"]
                        if a["labels"]["alertname"] == "FksCheckpointsRejected"
                        and a["state"] == "firing"}  # fmt: skip

            wait_for(lambda: refused_alerts() == set(MODELS), timeout=30, every=0.5)
            rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()
            names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
            assert names == {"FksListenerDisconnected", "FksCheckpointsRejected",
                             "FksModelStale", "FksAcksDropped"}  # fmt: skip
        finally:
            process.terminate()
            process.wait(20)
            log.close()
