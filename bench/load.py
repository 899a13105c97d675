"""A closed-loop HTTP load generator: C concurrent clients for N requests, in its own process.

``python -m bench.load URL PATH --concurrency 16 --requests 4000`` prints one JSON line:
``{"rps": ..., "p50_ms": ..., "p99_ms": ..., "errors": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx

from bench._util import pct

BODY = {"state": [0.05] * 28}


async def run(
    url: str, path: str, concurrency: int, requests: int, key: str | None = None
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"X-API-Key": key} if key else {}
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=30, headers=headers
    ) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                response = await client.post(path, json=BODY)
                latencies.append(time.perf_counter() - start)
                errors += response.status_code != 200

        for _ in range(min(50, requests)):
            await client.post(path, json=BODY)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ms = [x * 1e3 for x in latencies]
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "errors": float(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--key", default=None, help="the API key, sent as X-API-Key")
    args = parser.parse_args()
    result = run(args.url, args.path, args.concurrency, args.requests, args.key)
    print(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main()
