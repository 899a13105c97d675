"""The /sac HTTP API in-process (TestClient runs the real lifespan; Redis is off here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from common import Settings
from common.checkpoint import load_checkpoint
from common.policy import PolicyConfig
from subscriber import create_app, mount
from tests.helpers import bump_mtime, wait_for, write_checkpoint

STATE = [0.1] * 28
ClientFactory = Callable[..., Any]


def eager_action(path: Path, state: list[float]) -> float:
    from common.checkpoint import build_policy

    policy = build_policy(load_checkpoint(path))
    with torch.inference_mode():
        return float(policy.act(torch.tensor([state]))[0, 0])


# -- the seven classic cases ---------------------------------------------------------------


def test_load_predict_and_hot_reload_by_mtime(client_for: ClientFactory, model_root: Path) -> None:
    """Redis off: the served checkpoint predicts, and requests soon see a newer file (the
    request that notices it is not held up by the load)."""
    first = write_checkpoint(model_root, 1)
    with client_for() as client:
        body = client.post("/sac/predict", json={"state": STATE}).json()
        assert body["version"] == 1 and body["generation"] == 1
        assert body["model_path"] == str(first.path)
        assert body["model_mtime_utc"].endswith("Z") and body["latency_ms"] >= 0
        assert body["action"] == pytest.approx(eager_action(first.path, STATE), abs=1e-6)
        assert client.get("/sac/health").json()["mode"] == "mtime"
        second = write_checkpoint(model_root, 2)

        def newest() -> bool:
            body = client.post("/sac/predict", json={"state": STATE}).json()
            return (body["version"], body["generation"], body["model_path"]) == (
                2, 2, str(second.path),
            )  # fmt: skip

        wait_for(newest)


def test_cold_start_answers_503_until_a_model_appears(
    client_for: ClientFactory, model_root: Path
) -> None:
    """No checkpoint: 503 everywhere a model is needed, health says so, then a file appears."""
    with client_for() as client:
        assert client.post("/sac/predict", json={"state": STATE}).status_code == 503
        assert client.get("/sac/model/info").status_code == 503
        assert client.get("/sac/ready").status_code == 503
        health = client.get("/sac/health").json()
        assert health == {
            "status": "ok", "model_loaded": False, "redis_connected": False, "mode": "mtime",
        }  # fmt: skip
        write_checkpoint(model_root, 1)
        # /sac/ready answers from state alone: the request that needs a model finds the file.
        assert client.post("/sac/predict", json={"state": STATE}).status_code == 200
        assert client.get("/sac/ready").json() == {"ready": True, "version": 1, "generation": 1}


def test_forced_reload_route(client_for: ClientFactory, model_root: Path) -> None:
    """POST /sac/model/reload reloads the same file as a new generation; 500 keeps the old."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        assert client.post("/sac/predict", json={"state": STATE}).json()["generation"] == 1
        info = client.post("/sac/model/reload").json()
        assert (info["generation"], info["version"], info["source"]) == (2, 1, "reload")
        bad = model_root / "model_9.pt"
        bad.write_bytes(b"not a checkpoint")
        bump_mtime(bad)
        failed = client.post("/sac/model/reload")
        assert failed.status_code == 500 and "still served" in failed.json()["detail"]
        assert client.get("/sac/model/info").json()["generation"] == 2


def test_reload_with_nothing_to_load_is_503(client_for: ClientFactory) -> None:
    with client_for() as client:
        assert client.post("/sac/model/reload").status_code == 503


@pytest.mark.parametrize(
    ("states", "code", "needle"),
    [
        ([STATE, STATE[:27]], 400, "states[1] has 27 values"),
        ([[0.1] * 29], 400, "expects 28"),
        ([], 400, "empty"),
        ([STATE, [*STATE[:5], 1e39, *STATE[6:]]], 400, "states[1][5] is not finite"),
        ([STATE] * 5, 413, "over the limit of 4"),
    ],
)
def test_batch_shape_validation(
    client_for: ClientFactory, model_root: Path, states: list[list[float]], code: int, needle: str
) -> None:
    """Ragged, wrong-size, empty, non-finite and oversized batches are refused clearly."""
    write_checkpoint(model_root, 1)
    with client_for(max_batch_rows=4) as client:
        response = client.post("/sac/predict/batch", json={"states": states})
        assert response.status_code == code and needle in response.json()["detail"]


def test_batch_predicts_every_row(client_for: ClientFactory, model_root: Path) -> None:
    """Each row of a batch gets the same action as alone; big batches work too."""
    saved = write_checkpoint(model_root, 1)
    rows = np.random.default_rng(0).standard_normal((300, 28)).tolist()
    with client_for() as client:
        body = client.post("/sac/predict/batch", json={"states": rows}).json()
        assert body["batch_size"] == 300 and len(body["actions"]) == 300
        assert body["actions"][7] == pytest.approx(eager_action(saved.path, rows[7]), abs=1e-5)


def test_benchmark_route(client_for: ClientFactory, model_root: Path) -> None:
    """The benchmark returns ordered percentiles; requests over the caps are 400."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        body = client.post(
            "/sac/benchmark", json={"batch_size": 4, "warmup": 5, "iterations": 50}
        ).json()
        assert body["batch_size"] == 4 and body["iterations"] == 50
        assert 0 < body["p50_ms"] <= body["p90_ms"] <= body["p99_ms"]
        assert body["jit_compiled"] is False
        too_many = client.post("/sac/benchmark", json={"iterations": 1_000_000})
        assert too_many.status_code == 400 and "caps" in too_many.json()["detail"]


@pytest.mark.parametrize("backend", ["numpy", "torchscript"])
def test_compile_via_env(
    monkeypatch: pytest.MonkeyPatch, model_root: Path, tmp_path: Path, backend: str
) -> None:
    """STAT_PAIR_RL_JIT=true compiles before serving; outputs equal eager within 1e-5."""
    saved = write_checkpoint(model_root, 1)
    monkeypatch.setenv("STAT_PAIR_RL_DIR", str(model_root))
    monkeypatch.setenv("FKS_DEFAULT_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("STAT_PAIR_RL_JIT", "true")
    monkeypatch.setenv("FKS_COMPILE_BACKEND", backend)
    rows = np.random.default_rng(1).standard_normal((16, 28)).tolist()
    with TestClient(create_app()) as client:
        body = client.post("/sac/predict", json={"state": rows[0]}).json()
        assert body["jit_compiled"] is True
        batch = client.post("/sac/predict/batch", json={"states": rows}).json()["actions"]
        assert client.get("/sac/model/info").json()["jit_compiled"] is True
    expected = [eager_action(saved.path, r) for r in rows]
    assert np.allclose(batch, expected, atol=1e-5)


def test_explicit_path_overrides_the_directory(
    client_for: ClientFactory, model_root: Path, tmp_path: Path
) -> None:
    """STAT_PAIR_RL_MODEL wins over a newer file in STAT_PAIR_RL_DIR."""
    pinned_dir = tmp_path / "pinned"
    pinned_dir.mkdir()
    pinned = write_checkpoint(pinned_dir, 1, name="policy.pt")
    write_checkpoint(model_root, 5)
    with client_for(model_path=pinned.path) as client:
        info = client.get("/sac/model/info").json()
        assert info["path"] == str(pinned.path) and info["version"] == 1


# -- beyond the classics -------------------------------------------------------------------


def test_predict_validates_the_state(client_for: ClientFactory, model_root: Path) -> None:
    """Wrong size and non-finite states are 400 with the offending index; bad JSON is 422."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        short = client.post("/sac/predict", json={"state": STATE[:27]})
        assert short.status_code == 400 and "27 values" in short.json()["detail"]
        nan = client.post(
            "/sac/predict",
            content="{" + '"state": [1' + ",1" * 20 + ",NaN" + ",1" * 6 + "]}",
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 400 and "state[21] is not finite" in nan.json()["detail"]
        assert client.post("/sac/predict", json={"state": "x"}).status_code == 422


def test_multi_dimensional_actions_are_lists(client_for: ClientFactory, model_root: Path) -> None:
    """action is a float for one action dimension, a list for more."""
    write_checkpoint(model_root, 1, config=PolicyConfig(action_dim=3))
    with client_for() as client:
        assert len(client.post("/sac/predict", json={"state": STATE}).json()["action"]) == 3
        batch = client.post("/sac/predict/batch", json={"states": [STATE, STATE]}).json()
        assert [len(a) for a in batch["actions"]] == [3, 3]


def test_sampling_is_available(client_for: ClientFactory, model_root: Path) -> None:
    """deterministic=false samples: repeated calls differ."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        actions = {
            client.post("/sac/predict", json={"state": STATE, "deterministic": False}).json()[
                "action"
            ]
            for _ in range(5)
        }
        assert len(actions) > 1


class TestAuth:
    KEY = "k3y-for-tests"

    def test_routes_need_the_key_but_health_and_ready_do_not(
        self, client_for: ClientFactory, model_root: Path
    ) -> None:
        """With FKS_API_KEY set: 401 without or with a wrong key; Bearer and X-API-Key work."""
        write_checkpoint(model_root, 1)
        with client_for(api_key=self.KEY) as client:
            assert client.get("/sac/health").status_code == 200
            assert client.get("/sac/ready").status_code == 200
            for path in ("/sac/model/info", "/sac/model/history", "/metrics"):
                assert client.get(path).status_code == 401, path
            denied = client.post("/sac/predict", json={"state": STATE})
            assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
            wrong = {"Authorization": "Bearer nope"}
            assert (
                client.post("/sac/predict", json={"state": STATE}, headers=wrong).status_code == 401
            )
            for headers in ({"Authorization": f"Bearer {self.KEY}"}, {"X-API-Key": self.KEY}):
                ok = client.post("/sac/predict", json={"state": STATE}, headers=headers)
                assert ok.status_code == 200
            assert client.post("/sac/model/reload").status_code == 401
            assert client.post("/sac/model/rollback").status_code == 401

    def test_without_a_key_everything_is_open(
        self, client_for: ClientFactory, model_root: Path
    ) -> None:
        write_checkpoint(model_root, 1)
        with client_for() as client:
            assert client.get("/sac/model/info").status_code == 200
            assert client.get("/metrics").status_code == 200
            assert client.get("/docs").status_code == 200

    DOCS = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")

    def test_the_docs_need_the_key_unless_public(self, client_for: ClientFactory) -> None:
        """With FKS_API_KEY set, /docs, /redoc, /openapi.json and the oauth2 redirect need the
        key; FKS_PUBLIC_DOCS=true opens them (and nothing else)."""
        with client_for(api_key=self.KEY) as client:
            for path in self.DOCS:
                assert client.get(path).status_code == 401, path
                assert client.get(path, headers={"X-API-Key": self.KEY}).status_code == 200
            assert client.get("/no/such/path").status_code == 401
        with client_for(api_key=self.KEY, public_docs=True) as client:
            for path in self.DOCS:
                assert client.get(path).status_code == 200, path
            assert client.get("/sac/model/info").status_code == 401

    def test_mount_protects_only_our_routes(self, settings_for: Callable[..., Settings]) -> None:
        """mount(app) with a key: /sac/* (but health and ready) and /metrics need it; the host
        app's own routes and docs do not, and its bodies are not bounded by ours."""
        host = FastAPI()

        @host.get("/hello")
        def hello() -> dict[str, str]:
            return {"hello": "world"}

        @host.post("/upload")
        async def upload(request: Request) -> dict[str, int]:
            return {"size": len(await request.body())}

        mount(host, settings_for(api_key=self.KEY))
        with TestClient(host) as client:
            assert client.get("/hello").json() == {"hello": "world"}
            assert client.get("/docs").status_code == 200
            assert client.get("/openapi.json").status_code == 200
            nine_mib = b"x" * (9 * 1024 * 1024)
            assert client.post("/upload", content=nine_mib).json() == {"size": len(nine_mib)}
            assert client.get("/sac/health").status_code == 200
            assert client.get("/sac/ready").status_code == 503
            for path in ("/sac/model/info", "/sac/model/history", "/metrics", "/sac/nope"):
                assert client.get(path).status_code == 401, path
            refused = client.post("/sac/predict/batch", content=nine_mib)
            assert refused.status_code == 401  # the key first: nothing read
            keyed = {"Authorization": f"Bearer {self.KEY}"}
            too_big = client.post("/sac/predict/batch", content=nine_mib, headers=keyed)
            assert too_big.status_code == 413


def test_rollback_and_history(client_for: ClientFactory, model_root: Path) -> None:
    """Rollback returns the previous model; 409 when none is kept, and a second rollback
    never toggles back; history tells it all."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        assert client.post("/sac/model/rollback").status_code == 409
        client.post("/sac/predict", json={"state": STATE})
        write_checkpoint(model_root, 2)
        wait_for(lambda: client.post("/sac/predict", json={"state": STATE}).json()["version"] == 2)
        back = client.post("/sac/model/rollback").json()
        assert (back["version"], back["generation"], back["source"]) == (1, 3, "rollback")
        again = client.post("/sac/model/rollback")
        assert again.status_code == 409 and "not undone" in again.json()["detail"]
        assert client.post("/sac/predict", json={"state": STATE}).json()["version"] == 1
        history = client.get("/sac/model/history").json()
        assert [g["version"] for g in history["generations"]] == [1, 2, 1]
        assert [e["kind"] for e in history["events"]][:3] == ["rollback", "swap", "swap"]


def test_metrics_expose_the_served_model_and_the_reasons(
    client_for: ClientFactory, model_root: Path
) -> None:
    """/metrics has generation, version, freshness, swaps, rejections and latency series."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        client.post("/sac/predict", json={"state": STATE})
        bad = model_root / "model_2.pt"
        bad.write_bytes(b"PK\x03\x04 truncated")
        bump_mtime(bad)
        client.post("/sac/predict", json={"state": STATE})
        wait_for(lambda: 'reason="truncated"} 1.0' in client.get("/metrics").text)
        text = client.get("/metrics").text
    for line in (  # every series of the model carries model="<instance>" (SPEC §13)
        'fks_model_generation{model="default"} 1.0',
        'fks_model_version{model="default"} 1.0',
        'fks_swaps_total{model="default",source="disk"} 1.0',
        'fks_rejections_total{model="default",reason="truncated"} 1.0',
        "fks_listener_connected 0.0",
        'fks_predict_latency_seconds_count{model="default",route="predict"} 2.0',
        "fks_fallback_checks_total",
        "fks_model_age_seconds",
        "fks_notify_to_swap_seconds_bucket",
    ):
        assert line in text, line


def test_an_oversized_body_is_413(client_for: ClientFactory, model_root: Path) -> None:
    """A body over the 8 MiB limit is refused before it is parsed."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        huge = b'{"states": [' + b"[0.1]," * (2 * 1024 * 1024) + b"[0.1]]}"
        response = client.post(
            "/sac/predict/batch", content=huge, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413 and "over" in response.json()["detail"]


def test_a_host_app_keeps_its_routes_and_lifespan_without_a_model(
    settings_for: Callable[..., Settings],
) -> None:
    """mount() adds /sac to an existing app; its own routes and lifespan keep working."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def host_lifespan(app: FastAPI) -> Any:
        app.state.host_started = True
        yield

    host = FastAPI(lifespan=host_lifespan)

    @host.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    mount(host, settings_for())
    with TestClient(host) as client:
        assert client.get("/hello").json() == {"hello": "world"}
        assert host.state.host_started is True
        assert client.post("/sac/predict", json={"state": STATE}).status_code == 503
        assert client.get("/sac/health").json()["model_loaded"] is False


def test_openapi_describes_every_route_with_examples(client_for: ClientFactory) -> None:
    """/openapi.json lists every SPEC route, with request and response examples."""
    with client_for() as client:
        spec = client.get("/openapi.json").json()
    routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    for route in [
        ("GET", "/sac/health"), ("GET", "/sac/ready"), ("GET", "/sac/model/info"),
        ("GET", "/sac/model/history"), ("POST", "/sac/model/reload"),
        ("POST", "/sac/model/rollback"), ("POST", "/sac/predict"),
        ("POST", "/sac/predict/batch"), ("POST", "/sac/benchmark"), ("GET", "/metrics"),
    ]:  # fmt: skip
        assert route in routes, route
    schemas = spec["components"]["schemas"]
    assert schemas["PredictRequest"]["properties"]["state"]["examples"]
    assert schemas["PredictResponse"]["examples"]


def test_openapi_documents_the_guards_answers(client_for: ClientFactory) -> None:
    """401 on every protected route (every one but the health and readiness probes); 408,
    413 and 503 (with Retry-After) on the routes that take a body; 429 on the benchmark;
    nothing but 200 on health."""
    with client_for() as client:
        paths = client.get("/openapi.json").json()["paths"]
    codes = {
        (m.upper(), p): set(op["responses"]) for p, ops in paths.items() for m, op in ops.items()
    }
    for route, code in codes.items():
        if route[1] not in ("/sac/health", "/sac/ready", "/v2/health/live", "/v2/health/ready"):
            assert "401" in code, route
    v2 = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")
    for path in ("/sac/predict", "/sac/predict/batch", "/sac/benchmark", *v2):
        validated = set() if path in v2 else {"422"}  # /v2 reads its body itself: a 400
        assert {"400", "401", "408", "413", "503"} | validated <= codes[("POST", path)], path
        retry = paths[path]["post"]["responses"]["503"]["headers"]
        assert "Retry-After" in retry
    assert "429" in codes[("POST", "/sac/benchmark")]
    assert codes[("GET", "/sac/health")] == {"200"}


def test_a_torch_that_cannot_be_imported_still_starts_the_server(tmp_path: Path) -> None:
    """With torch unimportable, create_app serves health and answers 503 on /sac."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from fastapi.testclient import TestClient
        from common.settings import Settings
        from subscriber import create_app
        app = create_app(Settings(default_model_dir={str(tmp_path)!r},
                                  redis_url="redis://127.0.0.1:1/0"))
        with TestClient(app) as client:
            assert client.get("/sac/health").json()["status"] == "degraded"
            r = client.post("/sac/predict", json={{"state": [0.0] * 28}})
            assert r.status_code == 503 and "torch" in r.json()["detail"], r.text
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip().endswith("OK"), result.stderr
