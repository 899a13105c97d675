"""A fleet for the rollout tests: real uvicorn server processes with distinct FKS_NODE_IDs
around one real redis-server, started together (in parallel: each imports torch)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from fks.server_process import ServerProcess

STATE = [0.05] * 28
# A state the poisoned checkpoint of tests/helpers.py answers with NaN (see poisoned()).
POISON_STATE = [0.05] * 27 + [10.0]


def start_fleet(
    redis_url: str, model_root: Path, names: list[str], log_dir: Path, **env: str
) -> dict[str, ServerProcess]:
    """One server per name (``FKS_NODE_ID``), heartbeats every 0.3 s, all started at once."""
    servers = {
        name: ServerProcess(
            {
                "REDIS_URL": redis_url,
                "STAT_PAIR_RL_DIR": str(model_root),
                "FKS_DEFAULT_DIR": str(log_dir / "default"),
                "FKS_NODE_ID": name,
                "FKS_HEARTBEAT_SECONDS": "0.3",
                **env,
            },
            log_path=log_dir / f"{name}.log",
        )
        for name in names
    }
    errors: list[BaseException] = []

    def start(server: ServerProcess) -> None:
        try:
            server.start(timeout=90)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for server in servers.values():
            server.stop()
        raise errors[0]
    return servers


def served_version(server: ServerProcess) -> int | None:
    r = httpx.get(server.url + "/sac/model/info", timeout=5)
    return int(r.json()["version"]) if r.status_code == 200 else None
