"""``REDIS_URL`` in every form (SPEC §10), parsed in this one place.

- ``redis://[user:pass@]host[:port][/db]``, ``rediss://…`` (TLS), ``unix:///path.sock``: one
  server, read by redis-py's own ``from_url``;
- ``redis+sentinel://[user:pass@]host:port[,host:port…]/<service>[/<db>]``: Sentinel, the
  sentinels' addresses and the master's service name; ``rediss+sentinel://…`` over TLS (to
  the sentinels and to the master);
- ``redis+cluster://[user:pass@]host:port[,host:port…][/0]``, ``rediss+cluster://…``: a Redis
  Cluster, from any of its nodes.

The user name and password of the userinfo are those of the data nodes (the master, the
cluster nodes): an ACL user. Sentinels that need their own credentials take them from the
query: ``?sentinel_username=…&sentinel_password=…``. TLS options are query parameters in
every form: ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
(``required``, ``optional``, ``none``) and ``ssl_check_hostname``. Anything else in the query
of a sentinel or cluster URL is a ``ValueError``, as is an unknown scheme: a typo in a URL
should fail at start, with the reason, not as a silent default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["TLS_OPTIONS", "RedisTarget", "parse_redis_url"]

Kind = Literal["server", "sentinel", "cluster"]

TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9_.-]+))(?::(?P<port>\d+))?$")
_SERVICE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to talk to it; ``url`` is the form it was given in."""

    url: str = field(repr=False)
    kind: Kind
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    tls_options: tuple[tuple[str, str], ...] = ()
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def credentials(self) -> dict[str, str]:
        """``username``/``password`` keyword arguments for redis-py (only those given)."""
        out = {}
        if self.username:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password
        return out

    def tls_kwargs(self) -> dict[str, object]:
        """redis-py's ``ssl*`` keyword arguments (empty without TLS)."""
        if not self.tls:
            return {}
        out: dict[str, object] = {"ssl": True}
        for name, value in self.tls_options:
            out[name] = _truthy(value) if name == "ssl_check_hostname" else value
        return out


def parse_redis_url(url: str) -> RedisTarget:
    """The :class:`RedisTarget` of ``url``; ``ValueError`` saying why for a malformed one."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ValueError(
            f"REDIS_URL scheme {scheme or '(none)'!r} is not supported: use redis://, rediss://, "
            "unix://, redis+sentinel://, rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
    kind, tls = _SCHEMES[scheme]
    if kind == "server":
        return RedisTarget(url, kind, tls=tls)
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host(item, _DEFAULT_PORT[kind], scheme) for item in hostlist.split(","))
    path = [unquote(p) for p in parts.path.split("/") if p]
    service, db = _path(kind, path, scheme)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    allowed = TLS_OPTIONS + (_SENTINEL_OPTIONS if kind == "sentinel" else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{scheme}:// does not take the option(s) {', '.join(unknown)}; it takes "
            + ", ".join(allowed)
        )
    tls_options = tuple((k, v) for k, v in options.items() if k in TLS_OPTIONS)
    if tls_options and not tls:
        raise ValueError(
            f"TLS options need the TLS scheme {scheme.replace('redis', 'rediss', 1)}://"
        )
    return RedisTarget(
        url,
        kind,
        tls=tls,
        hosts=hosts,
        service=service,
        db=db,
        username=username,
        password=password,
        tls_options=tls_options,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password"),
    )


def _host(item: str, default_port: int, scheme: str) -> tuple[str, int]:
    match = _HOST.match(item.strip())
    if match is None:
        raise ValueError(
            f"{scheme}:// host {item!r} is not host[:port] (hosts are comma separated)"
        )
    port = int(match["port"]) if match["port"] else default_port
    if not 0 < port < 65536:
        raise ValueError(f"{scheme}:// port {port} is out of range")
    return match["v6"] or match["name"], port


def _path(kind: Kind, path: list[str], scheme: str) -> tuple[str, int]:
    if kind == "sentinel":
        if not path or len(path) > 2:
            raise ValueError(
                f"{scheme}:// needs the master's service name: {scheme}://host:port[,host:port]"
                "/<service>[/<db>]"
            )
        if not _SERVICE.match(path[0]):
            raise ValueError(f"{scheme}:// service name {path[0]!r} is not valid")
        return path[0], _db(path[1] if len(path) == 2 else "0", scheme)
    if len(path) > 1 or (path and _db(path[0], scheme) != 0):
        raise ValueError(f"{scheme}:// has one database, 0: {scheme}://host:port[,host:port][/0]")
    return "", 0


def _db(text: str, scheme: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{scheme}:// database {text!r} is not a number")
    return int(text)


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")
