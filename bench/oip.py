"""The Open Inference Protocol's ``infer`` beside ``/sac/predict``, on one server (SPEC §14).

One uvicorn worker (``fks serve``'s stack) serves the default actor with the API key on, in
Redis mode. One closed-loop client at a time sends the same rows, batch 1 and 256, for
``seconds`` per case and round, the cases alternating over ``rounds`` (medians kept):
``/sac/predict`` (``/sac/predict/batch`` for 256 rows) and ``/v2/models/default/infer`` as JSON
and as binary tensors, through a plain HTTP client (httpx, keep-alive) and through
``tritonclient`` (its ``InferenceServerClient``: binary by default, or JSON). Every answer is
checked against ``/sac``'s before the timing starts.

Run: ``python -m bench.oip`` (``--seconds``, ``--rounds``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as triton

from bench._util import make_checkpoint, summary_ms, table
from bench.http import API_KEY, HEADERS, started
from fks.redis_server import EmbeddedRedis

__all__ = ["run"]

BATCHES = (1, 256)
V2 = "/v2/models/default/infer"


def _rows(batch: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(batch).standard_normal((batch, 28)).astype(np.float32)


def _sac(client: httpx.Client, rows: np.ndarray[Any, Any]) -> Callable[[], list[float]]:
    if len(rows) == 1:
        body = json.dumps({"state": rows[0].tolist()})
        return lambda: [client.post("/sac/predict", content=body).json()["action"]]
    body = json.dumps({"states": rows.tolist()})
    return lambda: list(client.post("/sac/predict/batch", content=body).json()["actions"])


def _v2_json(client: httpx.Client, rows: np.ndarray[Any, Any]) -> Callable[[], list[float]]:
    tensor = {"name": "state", "shape": list(rows.shape), "datatype": "FP32",
              "data": rows.ravel().tolist()}  # fmt: skip
    body = json.dumps({"inputs": [tensor]})
    return lambda: list(client.post(V2, content=body).json()["outputs"][0]["data"])


def _v2_binary(client: httpx.Client, rows: np.ndarray[Any, Any]) -> Callable[[], list[float]]:
    tensor = {"name": "state", "shape": list(rows.shape), "datatype": "FP32",
              "parameters": {"binary_data_size": rows.nbytes}}  # fmt: skip
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    body, headers = head + rows.tobytes(), {"Inference-Header-Content-Length": str(len(head))}

    def call() -> list[float]:
        answer = client.post(V2, content=body, headers=headers)
        size = int(answer.headers["inference-header-content-length"])
        return list(np.frombuffer(answer.content[size:], "<f4").tolist())

    return call


def _triton(
    client: triton.InferenceServerClient, rows: np.ndarray[Any, Any], binary: bool
) -> Callable[[], list[float]]:
    wanted = [triton.InferRequestedOutput("action", binary_data=binary)]

    def call() -> list[float]:
        given = triton.InferInput("state", list(rows.shape), "FP32")
        given.set_data_from_numpy(rows, binary_data=binary)
        result = client.infer("default", [given], outputs=wanted,
                              headers={"X-API-Key": API_KEY})  # fmt: skip
        return list(result.as_numpy("action")[:, 0].tolist())

    return call


def _timed(call: Callable[[], object], seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        call()
        latencies.append(time.perf_counter() - start)
    return {"rps": len(latencies) / seconds, **summary_ms(latencies)}


def run(seconds: float = 2.0, rounds: int = 3) -> list[list[object]]:
    """Rows: case, batch, requests/s, p50 ms, p99 ms, rows/s (medians of the rounds)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(persistent=False) as redis,
        contextlib.ExitStack() as stack,
    ):
        make_checkpoint(Path(tmp), 1)
        env = {"REDIS_URL": redis.url, "STAT_PAIR_RL_DIR": tmp, "FKS_DEFAULT_DIR": tmp,
               "FKS_API_KEY": API_KEY}  # fmt: skip
        server = started(stack, "subscriber.web.app:create_app", env)
        http = stack.enter_context(httpx.Client(base_url=server.url, headers=HEADERS))
        host = server.url.removeprefix("http://")
        tc = triton.InferenceServerClient(host, connection_timeout=10, network_timeout=10)
        stack.callback(tc.close)
        cases: dict[tuple[str, int], Callable[[], list[float]]] = {}
        for batch in BATCHES:
            rows = _rows(batch)
            sac = "/sac/predict" if batch == 1 else "/sac/predict/batch"
            cases[(f"{sac} (JSON, httpx)", batch)] = _sac(http, rows)
            cases[("/v2 infer, JSON (httpx)", batch)] = _v2_json(http, rows)
            cases[("/v2 infer, binary (httpx)", batch)] = _v2_binary(http, rows)
            cases[("/v2 infer, JSON (tritonclient)", batch)] = _triton(tc, rows, False)
            cases[("/v2 infer, binary (tritonclient)", batch)] = _triton(tc, rows, True)
        expected: dict[int, list[float]] = {}  # per batch: /sac's actions, the first case
        for (name, batch), call in cases.items():  # the same actions everywhere
            got = np.asarray(call(), np.float32).tolist()
            assert expected.setdefault(batch, got) == got, name
        runs: dict[tuple[str, int], list[dict[str, float]]] = {key: [] for key in cases}
        for _ in range(rounds):
            for key, call in cases.items():
                runs[key].append(_timed(call, seconds))
    rows_out: list[list[object]] = []
    for (name, batch), results in runs.items():
        rps = statistics.median(r["rps"] for r in results)
        rows_out.append([name, batch, rps, statistics.median(r["p50"] for r in results),
                         statistics.median(r["p99"] for r in results), rps * batch])  # fmt: skip
    return rows_out


HEADERS_OUT = ["route (client)", "batch", "req/s", "p50 ms", "p99 ms", "rows/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(HEADERS_OUT, run(args.seconds, args.rounds)))


if __name__ == "__main__":
    main()
