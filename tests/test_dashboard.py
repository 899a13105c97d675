"""The operators' board: every query of docs/grafana/fks-dashboard.json names series that a
real running node exports on /metrics, and the compose profile `monitoring` wires Prometheus
and Grafana to the nodes and the dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from tests.helpers import wait_for, write_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "fks-dashboard.json"
STATE = [0.05] * 28
ADDED_BY_PROMETHEUS = {"instance", "job"}


def queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


@pytest.fixture
def scraped(redis_url: str, model_root: Path, tmp_path: Path) -> Iterator[dict[str, set[str]]]:
    """Sample name -> label names, from /metrics of a real server that swapped, rejected,
    skipped, acked and answered predictions."""
    incoming = model_root / "incoming"
    incoming.mkdir()
    env = {"REDIS_URL": redis_url, "STAT_PAIR_RL_DIR": str(model_root),
           "FKS_DEFAULT_DIR": str(tmp_path / "d"), "FKS_NODE_ID": "board-1"}  # fmt: skip
    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            wait_for(lambda: http.get("/sac/health").json()["redis_connected"], timeout=10)
            good, old = write_checkpoint(incoming, 2), write_checkpoint(incoming, 1)
            with CheckpointNotifier(redis_url) as notifier:
                assert notifier.notify(good.path, version=2, wait_for=1).acks.ok  # type: ignore[union-attr]
                assert notifier.notify(old.path, version=1, wait_for=1).sent  # stale
                notifier.notify(good.path, version=3, sha256="0" * 64, wait_for=1)  # rejected
            assert http.post("/sac/predict", json={"state": STATE}).status_code == 200
            assert http.post("/sac/predict/batch", json={"states": [STATE]}).status_code == 200
            text = http.get("/metrics").text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    yield labels


def test_the_dashboard_covers_what_operators_watch() -> None:
    """Served version per node, freshness, swaps, rejections by reason, notify→swap,
    predict latency, listener connected."""
    text = " ".join(queries())
    for series in ("fks_model_version", "fks_model_age_seconds", "fks_swaps_total",
                   "fks_rejections_total", "fks_notify_to_swap_seconds_bucket",
                   "fks_predict_latency_seconds_bucket", "fks_listener_connected"):  # fmt: skip
        assert series in text, series


def test_every_query_names_series_a_running_node_exports(scraped: dict[str, set[str]]) -> None:
    """Each fks_* name of every query is a sample on /metrics, and every label the query
    groups or joins by is a label of those samples (instance and job: added by Prometheus)."""
    for expr in queries():
        names = set(re.findall(r"\bfks_[a-z0-9_]+\b", expr))
        assert names, expr
        for name in names:
            assert name in scraped, f"{name} (in {expr!r}) is not exported"
        have = set().union(*(scraped[n] for n in names)) | ADDED_BY_PROMETHEUS
        for group in re.findall(r"\b(?:by|on|group_left)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in have, f"label {label!r} of {expr!r} is on none of {names}"


def test_the_monitoring_profile_scrapes_every_node_into_the_provisioned_board() -> None:
    """Prometheus scrapes /metrics of each node service on its container port; Grafana gets
    the datasource the dashboard names and the dashboard directory."""
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = {n for n, s in services.items() if s.get("command", [None])[:2] == ["fks", "serve"]}
    prom = services["prometheus"]
    mount = next(v for v in prom["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro"))
    config = yaml.safe_load((ROOT / mount.split(":")[0]).read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{n}:{services[n]['command'][-1]}" for n in nodes}

    grafana = services["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts["./docs/grafana"] == "/var/lib/grafana/dashboards"
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "fks.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    assert [p.rsplit(":", 1)[1] for p in prom["ports"]] == ["9090"]
    board = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert uids == {source["uid"]}
