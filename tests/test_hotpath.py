"""``POST /sac/predict`` answered in front of FastAPI (subscriber/web/hotpath.py): the same
answer as the FastAPI route for every body, and the route still answers what it does not take.

``Content-Type: application/json; charset=utf-8`` is never taken by the hot path, so each
body sent both ways compares the hot path with the route itself (in-process, Redis off)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import subscriber.web.predict as predict_module
from subscriber.web.deps import get_authorized_node as original
from tests.helpers import write_checkpoint

PLAIN = {"content-type": "application/json"}
ROUTE = {"content-type": "application/json; charset=utf-8"}
STATE = [0.1] * 28
KEY = "hot-key"

# body → whether the hot path takes it (else the route answers it)
BODIES: list[tuple[str, bool]] = [
    (json.dumps({"state": STATE}), True),
    (json.dumps({"state": [1] * 28}), True),  # ints are floats, as pydantic converts them
    (json.dumps({"state": STATE, "deterministic": True, "extra": {"x": 1}}), True),
    (json.dumps({"state": [0.1] * 27}), True),  # wrong size: the shared code's 400
    ('{"state": [' + ",".join(["NaN"] + ["0.1"] * 27) + "]}", True),  # not finite: 400
    (json.dumps({"state": [1e39] + [0.1] * 27}), True),  # over float32: 400
    (json.dumps({"state": [1e300] * 28}), True),
    (json.dumps({"state": STATE, "state": [0.2] * 28}), True),  # noqa: F601 - duplicate key
    (json.dumps({"state": []}), False),
    (json.dumps({"state": ["0.1"] * 28}), False),  # strings: pydantic's lax rules decide
    (json.dumps({"state": [True] * 28}), False),
    (json.dumps({"state": [10**400] + [0] * 27}), False),
    (json.dumps({"state": [2**60] + [0] * 27}), False),
    (json.dumps({"state": [STATE]}), False),  # nested rows: the route's shapes
    (json.dumps({"state": STATE, "deterministic": "yes"}), False),
    (json.dumps({"state": STATE, "deterministic": 1}), False),
    (json.dumps({"states": [STATE]}), False),
    (json.dumps([STATE]), False),
    ("{not json", False),
    ("", False),
    ('{"state": ' + "[" * 5000 + "]" * 5000 + "}", False),
]


def answer(response: Any) -> tuple[int, Any, str]:
    """Status, JSON without the timing, content type."""
    body = response.json()
    if isinstance(body, dict):
        body.pop("latency_ms", None)
    return response.status_code, body, response.headers["content-type"]


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests reached the FastAPI route's own code."""
    calls: list[int] = []

    async def counted(request: Any) -> Any:
        calls.append(1)
        return await original(request)

    monkeypatch.setattr(predict_module, "get_authorized_node", counted)
    return calls


@pytest.fixture
def client(client_for: Callable[..., Any], model_root: Path) -> Iterator[TestClient]:
    write_checkpoint(model_root, 1)
    with client_for() as c:
        yield c


@pytest.mark.parametrize(("body", "hot"), BODIES)
def test_every_body_gets_the_route_s_answer(
    client: TestClient, routed: list[int], body: str, hot: bool
) -> None:
    via_route = answer(client.post("/sac/predict", content=body, headers=ROUTE))
    by_route = len(routed)  # 0 when FastAPI refused the body before the route ran
    via_hot = answer(client.post("/sac/predict", content=body, headers=PLAIN))
    assert via_hot == via_route
    took = len(routed) == by_route
    assert took == hot or (not by_route and not hot), "the hot path took a body it must leave"


def test_a_sampled_action_and_the_counts_follow_the_same_rules(
    client: TestClient, routed: list[int]
) -> None:
    """deterministic=false samples (answers differ, shapes do not); each request is counted
    once against the generation it used, by either path."""
    body = json.dumps({"state": STATE, "deterministic": False})
    hot = client.post("/sac/predict", content=body, headers=PLAIN).json()
    route = client.post("/sac/predict", content=body, headers=ROUTE).json()
    assert set(hot) == set(route) and hot["version"] == route["version"] == 1
    assert len(routed) == 1
    node = client.app.state.fks_node  # type: ignore[attr-defined]
    requests, errors = node.traffic.snapshot()
    assert (requests, errors) == (2, 0)


def test_no_model_is_the_route_s_503(client_for: Callable[..., Any], routed: list[int]) -> None:
    with client_for() as client:
        body = json.dumps({"state": STATE})
        hot = client.post("/sac/predict", content=body, headers=PLAIN)
        route = client.post("/sac/predict", content=body, headers=ROUTE)
    assert answer(hot) == answer(route) and hot.status_code == 503


def test_the_key_is_checked_before_and_by_the_hot_path(
    client_for: Callable[..., Any], model_root: Path, routed: list[int]
) -> None:
    """With FKS_API_KEY: no key or a wrong one is 401 from the guard (no body read); the right
    key, as Bearer or X-API-Key, is answered by the hot path."""
    write_checkpoint(model_root, 1)
    body = json.dumps({"state": STATE})
    with client_for(api_key=KEY) as client:
        for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
            refused = client.post("/sac/predict", content=body, headers={**PLAIN, **headers})
            assert refused.status_code == 401
        for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"}):
            ok = client.post("/sac/predict", content=body, headers={**PLAIN, **headers})
            assert ok.status_code == 200 and ok.json()["version"] == 1
    assert routed == []


def test_other_methods_and_paths_are_the_router_s(client: TestClient, routed: list[int]) -> None:
    body = json.dumps({"state": STATE})
    assert client.get("/sac/predict").status_code == 405
    assert client.put("/sac/predict", content=body, headers=PLAIN).status_code == 405
    no_type = client.post("/sac/predict", content=body)  # FastAPI's strict content type
    assert no_type.status_code == 422
    batch = client.post("/sac/predict/batch", json={"states": [STATE]})
    assert batch.status_code == 200 and batch.json()["batch_size"] == 1
    assert routed == [1]  # the batch route, FastAPI's own


def test_a_repeated_header_is_read_as_the_route_reads_it_its_first_copy(
    client_for: Callable[..., Any], model_root: Path, routed: list[int]
) -> None:
    """Found by the fresh-eyes review: the guard and the hot path kept the last copy of a
    repeated header, the route (Starlette) reads the first: a wrong key followed by the
    right one got 200 from the hot path and 401 from the route, a text/plain body followed
    by application/json 200 and 422. Now every layer reads the first copy."""
    write_checkpoint(model_root, 1)
    body = json.dumps({"state": STATE})
    with client_for(api_key=KEY) as client:

        def post(*headers: tuple[str, str]) -> int:
            answer = client.post("/sac/predict", content=body, headers=list(headers))
            return int(answer.status_code)

        key, wrong = ("x-api-key", KEY), ("x-api-key", "wrong")
        bearer, bad_bearer = ("authorization", f"Bearer {KEY}"), ("authorization", "Bearer no")
        json_type, text_type = ("content-type", "application/json"), ("content-type", "text/plain")
        assert post(json_type, wrong, key) == 401
        assert post(json_type, bad_bearer, bearer) == 401
        assert post(json_type, key, wrong) == 200
        assert post(json_type, bearer, bad_bearer) == 200
        assert post(text_type, json_type, key) == 422  # FastAPI reads text/plain: no JSON
        assert post(json_type, text_type, key) == 200
