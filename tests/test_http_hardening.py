"""The HTTP side of issue 12. Over real sockets against a real uvicorn server: the key is
checked before any body is read, bodies are read under a time limit and a cap, and the
benchmark runs one at a time, bounded, and stops when its client hangs up. In-process: health
and readiness answer from state, model work never needs the default threadpool, and every
answer is strict JSON."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient

from common import Settings
from common.policy import PolicyConfig
from fks.redis_server import EmbeddedRedis
from fks.server_process import ServerProcess
from subscriber import create_app
from subscriber.web.benchmark import MAX_SECONDS
from subscriber.web.modelwork import runs_inline
from tests.helpers import new_dir, wait_for, write_checkpoint

KEY = "k-http-hardening"
AUTH = {"Authorization": f"Bearer {KEY}"}
STATE = [0.05] * 28
BODY_TIMEOUT = 2.0


def running(
    redis: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    config: PolicyConfig | None = None,
    **env: str,
) -> Iterator[ServerProcess]:
    """A real server behind the API key on a fresh root holding one checkpoint of ``config``,
    in Redis mode with the model loaded; stopped afterwards."""
    root = new_dir(tmp_path_factory.mktemp(name) / "models")
    write_checkpoint(root, 1, config=config)
    base = {
        "REDIS_URL": redis.url,
        "FKS_INSTANCE_ID": f"http-{root.parent.name}",
        "STAT_PAIR_RL_DIR": str(root),
        "FKS_DEFAULT_DIR": str(root),
        "FKS_API_KEY": KEY,
    }
    server = ServerProcess(base | env, log_path=root.parent / "server.log").start()
    try:
        wait_for(lambda: httpx.get(server.url + "/sac/health").json()["mode"] == "redis", 20)
        wait_for(lambda: httpx.get(server.url + "/sac/ready").status_code == 200, 20)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(
    session_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The default actor behind an API key, a 2 s body timeout and room for 2 large bodies."""
    yield from running(
        session_redis, tmp_path_factory, "guarded",
        FKS_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT), FKS_MAX_LARGE_BODIES="2",
    )  # fmt: skip


@pytest.fixture(scope="module")
def big_server(
    session_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A 1024x1024 actor (1.08 M parameters): one benchmark of it outlasts the 5 s cap."""
    big = PolicyConfig(hidden=(1024, 1024))
    yield from running(session_redis, tmp_path_factory, "big", config=big)


# -- raw HTTP/1.1 over a socket --------------------------------------------------------------


def send_head(server: ServerProcess, path: str, length: int, *, key: bool) -> socket.socket:
    """A connection that has sent a POST's headers and no body yet."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n" + (f"Authorization: Bearer {KEY}\r\n" if key else "")
    )
    sock.sendall(head.encode() + b"\r\n")
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the one response on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- the key before the body -----------------------------------------------------------------


def test_a_keyless_body_is_refused_from_its_headers(server: ServerProcess) -> None:
    """Without the key, 401 comes right after the headers of an 8 MiB POST, none of whose
    body was sent (a server that read the body first would answer 408 after 2 s), and the
    connection is closed rather than drained."""
    with send_head(server, "/sac/predict/batch", 8 * 1024 * 1024 - 1, key=False) as sock:
        sock.settimeout(BODY_TIMEOUT)  # a 408 would take this long: the 401 comes first
        status, headers, body = read_response(sock)
        assert status == 401, body
        assert headers["www-authenticate"] == "Bearer"
        assert "missing or wrong API key" in json.loads(body)["detail"]
        assert closed_by_server(sock)


def test_a_keyless_client_cannot_learn_the_schema(server: ServerProcess) -> None:
    """A malformed body without the key is 401, not a 422 describing the schema; with the key
    it is the 422; the docs need the key too."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.post("/sac/predict", json={"state": "x"}).status_code == 401
        assert client.post("/sac/predict", json={"state": "x"}, headers=AUTH).status_code == 422
        for path in ("/openapi.json", "/docs", "/redoc", "/metrics", "/sac/model/info"):
            assert client.get(path).status_code == 401, path
        assert client.get("/openapi.json", headers=AUTH).status_code == 200
        assert client.get("/sac/health").status_code == 200
        assert client.get("/sac/ready").status_code == 200


# -- bodies: time limit and cap --------------------------------------------------------------


def test_a_keyed_slow_body_is_cut_off_with_408(server: ServerProcess) -> None:
    """With the key, a body that stops arriving gets 408 after FKS_BODY_TIMEOUT_SECONDS and
    the connection is closed."""
    with send_head(server, "/sac/predict", 1000, key=True) as sock:
        sock.sendall(b'{"state": [0.1, ')
        status, headers, body = read_response(sock)
        assert status == 408 and "FKS_BODY_TIMEOUT_SECONDS" in json.loads(body)["detail"]
        assert headers["connection"] == "close" and closed_by_server(sock)


def test_large_bodies_over_the_cap_get_503_at_once(server: ServerProcess) -> None:
    """Two large bodies being read fill FKS_MAX_LARGE_BODIES=2: a third gets 503 with
    Retry-After at once, small requests still pass, and once the two are gone (408) a large
    body is read again."""
    holders = [send_head(server, "/sac/predict/batch", 1 << 20, key=True) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(b"[" * 100_000)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/sac/health").status_code == 200  # the holders' heads are in
            with send_head(server, "/sac/predict/batch", 1 << 20, key=True) as third:
                status, headers, body = read_response(third)
            assert status == 503 and headers["retry-after"] == "1"
            assert "FKS_MAX_LARGE_BODIES" in json.loads(body)["detail"]
            small = client.post("/sac/predict", json={"state": STATE}, headers=AUTH)
            assert small.status_code == 200
            assert [read_response(sock)[0] for sock in holders] == [408, 408]
            rows = {"states": [STATE] * 500}  # ~84 KB: a large body
            assert client.post("/sac/predict/batch", json=rows, headers=AUTH).status_code == 200
    finally:
        for sock in holders:
            sock.close()


# -- the benchmark ---------------------------------------------------------------------------

LONG = {"batch_size": 256, "warmup": 0, "iterations": 5000}  # minutes without the cap
PROBE = {"iterations": 10_001}  # over the caps: 429 while one runs, else 400; never runs


def probe(client: httpx.Client, status: int) -> bool:
    """Whether a benchmark call that can never run itself is answered ``status``."""
    return client.post("/sac/benchmark", json=PROBE).status_code == status


def test_one_benchmark_at_a_time_and_at_most_5_s(big_server: ServerProcess) -> None:
    """While a benchmark runs another call is 429 at once; the first stops at the 5 s cap and
    reports the iterations it timed."""
    result: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: result.append(
            httpx.post(big_server.url + "/sac/benchmark", json=LONG, headers=AUTH, timeout=60)
        )
    )
    with httpx.Client(base_url=big_server.url, headers=AUTH, timeout=30) as client:
        wait_for(lambda: probe(client, 400), timeout=30, every=0.1)  # none running
        first.start()
        try:
            wait_for(lambda: probe(client, 429), timeout=MAX_SECONDS, every=0.05)
            busy = client.post("/sac/benchmark", json={"iterations": 5})
        finally:
            first.join(60)
    assert busy.status_code == 429 and "one runs at a time" in busy.json()["detail"]
    body = result[0].json()
    assert result[0].status_code == 200 and body["capped"] is True
    assert 1 <= body["iterations"] < LONG["iterations"]


def test_a_benchmark_stops_when_its_client_hangs_up(big_server: ServerProcess) -> None:
    """A client that hangs up ends its benchmark: the server is free again long before the
    5 s cap would have ended it."""
    payload = json.dumps(LONG).encode()
    with httpx.Client(base_url=big_server.url, headers=AUTH, timeout=30) as client:
        wait_for(lambda: probe(client, 400), timeout=30, every=0.1)  # none running
        with send_head(big_server, "/sac/benchmark", len(payload), key=True) as sock:
            sock.sendall(payload)
            started = time.monotonic()
            wait_for(lambda: probe(client, 429), timeout=MAX_SECONDS / 2, every=0.05)
        hung_up = time.monotonic()
        wait_for(lambda: probe(client, 400), timeout=30, every=0.05)
        stopped = time.monotonic()
    assert stopped - hung_up < MAX_SECONDS - (hung_up - started) - 1.0, (
        f"free {stopped - hung_up:.2f} s after the hang-up, {stopped - started:.2f} s "
        "after the start: the benchmark ran on"
    )


# -- in-process: state, threads, strict JSON -------------------------------------------------


def strict(text: str) -> Any:
    """``json.loads`` that refuses the NaN and Infinity tokens (RFC 8259)."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def client(settings_for: Callable[..., Settings], model_root: Path) -> Iterator[TestClient]:
    write_checkpoint(model_root, 1)
    with TestClient(create_app(settings_for())) as running:
        yield running


def test_health_and_ready_answer_from_state(client: TestClient) -> None:
    """/sac/health and /sac/ready never call into the node's model lookup (stat, load)."""

    def refuse() -> None:
        raise AssertionError("health and ready must not look for a model")

    assert client.post("/sac/predict", json={"state": STATE}).status_code == 200
    client.app.state.fks_node.model_for_request = refuse  # type: ignore[attr-defined]
    assert client.get("/sac/ready").json() == {"ready": True, "version": 1, "generation": 1}
    assert client.get("/sac/health").json()["model_loaded"] is True


def test_model_work_never_needs_the_default_threadpool(
    settings_for: Callable[..., Settings], model_root: Path, redis_url: str
) -> None:
    """With every thread of the default pool taken, health, ready, a small predict, a big
    batch and a benchmark all still answer (Redis mode: the request path needs no stat)."""
    write_checkpoint(model_root, 1)
    with TestClient(create_app(settings_for(redis_url=redis_url))) as client:
        wait_for(lambda: client.get("/sac/health").json()["mode"] == "redis", 10)
        limiter, borrowers = client.portal.call(_take_every_default_thread)  # type: ignore[union-attr]
        try:
            calls: dict[str, Callable[[], int]] = {
                "health": lambda: client.get("/sac/health").status_code,
                "ready": lambda: client.get("/sac/ready").status_code,
                "predict": lambda: client.post("/sac/predict", json={"state": STATE}).status_code,
                "batch": lambda: (
                    client.post("/sac/predict/batch", json={"states": [STATE] * 300}).status_code
                ),
                "benchmark": lambda: (
                    client.post("/sac/benchmark", json={"iterations": 5}).status_code
                ),
            }
            for name, call in calls.items():
                assert _status_within(10.0, call) == 200, name
        finally:
            client.portal.call(  # type: ignore[union-attr]
                lambda: [limiter.release_on_behalf_of(b) for b in borrowers]
            )


def _take_every_default_thread() -> tuple[anyio.CapacityLimiter, list[object]]:
    limiter = anyio.to_thread.current_default_thread_limiter()
    borrowers = [object() for _ in range(int(limiter.total_tokens) - limiter.borrowed_tokens)]
    for borrower in borrowers:
        limiter.acquire_on_behalf_of_nowait(borrower)
    return limiter, borrowers


def _status_within(seconds: float, call: Callable[[], int]) -> int:
    """The status ``call()`` returns, or -1 if it has not answered within ``seconds``."""
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return out[0] if out else -1


def test_small_passes_run_inline_and_big_ones_off_the_loop() -> None:
    """The default actor (73,730 parameters) stays inline up to 64 rows; more rows or a big
    model go to a thread."""
    assert runs_inline(1, 73_730) and runs_inline(64, 73_730)
    assert not runs_inline(65, 73_730)
    assert not runs_inline(1, 10_000_000) and not runs_inline(8, 1_081_346)


HUGE = [3e38 if i % 2 else -3e38 for i in range(28)]  # finite, but overflows the network


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_non_finite_action_is_400_not_nan(client: TestClient, deterministic: bool) -> None:
    """States that make the policy's output NaN get 400 with a reason, never HTTP 200 with a
    NaN token; a batch names its first bad row."""
    one = client.post("/sac/predict", json={"state": HUGE, "deterministic": deterministic})
    assert one.status_code == 400 and "not finite" in strict(one.text)["detail"]
    rows = {"states": [STATE, HUGE, HUGE], "deterministic": deterministic}
    many = client.post("/sac/predict/batch", json=rows)
    assert many.status_code == 400 and "states[1]" in strict(many.text)["detail"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sac/predict", '{"state": NaN}'),
        ("/sac/predict", '{"states": [[Infinity]], "deterministic": "x"}'),
        ("/sac/predict/batch", '{"state": [-Infinity]}'),
        ("/sac/benchmark", '{"batch_size": NaN}'),
    ],
)
def test_validation_errors_are_strict_json(client: TestClient, path: str, body: str) -> None:
    """A 422 that echoes NaN or Infinity from the request writes them as strings (FastAPI's
    own handler failed to render them and answered 500)."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "Infinity" in response.text or "NaN" in response.text
    strict(response.text)
