"""What a ``model_path`` names: a local path or a remote checkpoint (SPEC §9), decided
without any I/O.

:func:`parse_model_path` turns a ``model_path`` into a local path (a plain path, or a
``file://`` URL decoded into one: the model roots confine it as usual) or a
:class:`RemoteRef`, and applies every rule that needs no I/O, raising
:class:`~common.errors.CheckpointRejected` with its reason:

- a scheme that nothing installed can fetch: ``unsupported_scheme`` (``http://`` counts as one
  unless it names a loopback host: ``https://`` elsewhere);
- a URL outside the ``FKS_MODEL_URLS`` prefixes: ``outside_roots``. URLs are compared in one
  canonical form (scheme and host lower-cased, default port dropped, the path decoded once)
  and anything that could make the compared URL and the fetched one differ is refused:
  userinfo, a query or fragment, ``.`` or ``..`` segments (also as ``%2e%2e``, or after NFKC
  folding), a ``%`` left after decoding, a backslash, control and format characters, a
  non-ASCII host, an fsspec chain (``::``). A prefix is a directory: ``s3://b/models``
  admits ``s3://b/models/x.pt``, never ``s3://b/models-evil/x.pt``;
- a remote URL without ``sha256``: ``unverifiable_remote``. ``redis-blob:<sha256>`` is named by
  its hash and needs no ``sha256`` field (a different one is ``sha256_mismatch``); like any
  other source it is opt-in: accepted only when ``FKS_MODEL_URLS`` lists ``redis-blob:``
  (:data:`BLOB_PREFIX`), else ``outside_roots`` (whoever can write to Redis can store a blob).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, urlsplit

from common.errors import CheckpointRejected
from common.textsafe import printable

__all__ = [
    "BLOB_PREFIX",
    "BLOB_SCHEME",
    "RemoteRef",
    "canonical_url",
    "is_url",
    "parse_model_path",
    "protocol_installed",
    "under_prefix",
]

BLOB_SCHEME = "redis-blob"
BLOB_PREFIX = BLOB_SCHEME + ":"  # the FKS_MODEL_URLS entry that admits redis-blob:<sha256>
Kind = Literal["fsspec", "http", "blob"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HOST = re.compile(r"^[a-z0-9_.-]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOCAL_SCHEMES = frozenset({"file", "local"})
SUFFIXES = (".pt", ".safetensors")


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """A checkpoint to fetch: its canonical ``url``, how (``kind``), and the sha256 it must
    hash to (``None`` only for an object of the node's own ``STAT_PAIR_RL_URL``)."""

    url: str
    kind: Kind
    protocol: str
    sha256: str | None

    @property
    def suffix(self) -> str:
        """``.pt`` or ``.safetensors`` when the URL ends so, else ``""`` (sniffed later)."""
        return next((s for s in SUFFIXES if self.url.endswith(s)), "")


def is_url(model_path: str) -> bool:
    """Whether ``model_path`` is a URL rather than a path: ``scheme://…``, ``file:…`` or
    ``redis-blob:…``. ``model:1.pt`` stays a relative path."""
    return _scheme_of(model_path) is not None


def parse_model_path(
    model_path: str,
    *,
    sha256: str | None,
    allowed: Collection[str],
    installed: Callable[[str], bool] | None = None,
) -> str | RemoteRef:
    """The local path ``model_path`` names (to confine), or the remote checkpoint it names.

    ``allowed``: canonical URL prefixes (``FKS_MODEL_URLS``, :data:`BLOB_PREFIX` among them
    when blobs are accepted); ``installed(protocol)``: whether
    an fsspec implementation of ``protocol`` can be imported. Raises CheckpointRejected.
    """
    scheme = _scheme_of(model_path)
    if scheme is None:
        return model_path
    if scheme == "file":
        return _file_path(model_path)
    if scheme == BLOB_SCHEME:
        if BLOB_PREFIX not in allowed:
            raise CheckpointRejected(
                f"{_shown(model_path)}: redis-blob: checkpoints are not accepted here "
                f"(FKS_MODEL_URLS does not list {BLOB_PREFIX})",
                reason="outside_roots",
            )
        return _blob(model_path, sha256)
    if scheme == "http":
        host = urlsplit(model_path).hostname if _splits(model_path) else None
        if not _loopback(host):
            raise CheckpointRejected(
                f"{_shown(model_path)}: plain http:// is allowed only to a loopback host; "
                "use https://",
                reason="unsupported_scheme",
            )
    elif scheme != "https" and (
        scheme in _LOCAL_SCHEMES or not (installed or protocol_installed)(scheme)
    ):
        raise CheckpointRejected(
            f"{_shown(model_path)}: no installed client fetches {scheme}:// URLs "
            "(s3:// needs the s3 extra: pip install 'fks-checkpoint-notify[s3]')",
            reason="unsupported_scheme",
        )
    try:
        url = canonical_url(model_path)
    except ValueError as exc:
        raise CheckpointRejected(
            f"{_shown(model_path)}: {exc}; not fetched", reason="outside_roots"
        ) from None
    prefixes = list(allowed)
    if not any(under_prefix(url, prefix) for prefix in prefixes):
        shown = ", ".join(prefixes) or "none: FKS_MODEL_URLS is empty"
        raise CheckpointRejected(
            f"{_shown(model_path)} lies outside the allowed URL prefixes ({shown})",
            reason="outside_roots",
        )
    if sha256 is None:
        raise CheckpointRejected(
            f"{_shown(model_path)}: a remote checkpoint must be announced with its sha256",
            reason="unverifiable_remote",
        )
    kind: Kind = "http" if scheme in ("http", "https") else "fsspec"
    return RemoteRef(url, kind, scheme, sha256.lower())


def canonical_url(url: str) -> str:
    """``url`` in the one form that is compared and fetched; ValueError says what is refused."""
    if "::" in re.sub(r"\[[^\]]*\]", "", url):  # an IPv6 host is not a chain
        raise ValueError("a chained fsspec URL (::) is not allowed")
    if any(ch in url for ch in "?#"):
        raise ValueError("a query or fragment is not allowed")
    if "\\" in url:
        raise ValueError("a backslash is not allowed")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not parts.netloc:
        raise ValueError("no host or bucket")
    if "@" in parts.netloc:
        raise ValueError("userinfo (user@) is not allowed")
    netloc = parts.netloc.lower()
    host, port = netloc, None
    if netloc.startswith("["):
        _ipv6(parts.hostname or "")
        host = "[" + (parts.hostname or "") + "]"
        port = parts.port
    elif ":" in netloc:
        host = parts.hostname or ""
        port = parts.port  # ValueError when not a number in range
    if not host.startswith("[") and not _HOST.match(host):
        raise ValueError("the host must be ASCII letters, digits, '.', '-' or '_'")
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    path = _clean_path(parts.path)
    return f"{scheme}://{host}{path}"


def under_prefix(url: str, prefix: str) -> bool:
    """Whether canonical ``url`` lies under canonical ``prefix`` (a directory)."""
    if prefix.endswith("/"):
        return url.startswith(prefix)
    return url == prefix or url.startswith(prefix + "/")


@lru_cache(maxsize=64)
def protocol_installed(protocol: str) -> bool:
    """Whether fsspec can fetch ``protocol://`` here (its implementation imports)."""
    try:
        import fsspec

        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError):
        return False
    return True


def _scheme_of(model_path: str) -> str | None:
    match = _SCHEME.match(model_path)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme in ("file", BLOB_SCHEME) or model_path.startswith("//", match.end()):
        return scheme
    return None


def _splits(url: str) -> bool:
    try:
        urlsplit(url).hostname  # noqa: B018 - raises ValueError on a malformed netloc
    except ValueError:
        return False
    return True


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError("a bracketed host must be an IPv6 address") from None


def _clean_path(raw: str) -> str:
    try:
        path = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ValueError("the path is not UTF-8 once decoded") from None
    if "%" in path:
        raise ValueError("a '%' is left after decoding (double encoding)")
    if "\\" in path:
        raise ValueError("a backslash is not allowed")
    if any(unicodedata.category(ch).startswith("C") for ch in path):
        raise ValueError("control or format characters are not allowed")
    for form in (path, unicodedata.normalize("NFKC", path)):
        if any(seg in (".", "..") for seg in form.split("/")):
            raise ValueError("'.' and '..' segments are not allowed")
    return path


def _file_path(model_path: str) -> str:
    """The local path of a ``file:`` URL (``file:///abs``, ``file://localhost/abs``,
    ``file:/abs``), decoded once; the caller confines it to the model roots."""
    shown = _shown(model_path)
    if any(ch in model_path for ch in "?#"):
        raise CheckpointRejected(
            f"{shown}: a query or fragment is not allowed", reason="outside_roots"
        )
    try:
        parts = urlsplit(model_path)
        path = unquote(parts.path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise CheckpointRejected(f"{shown}: not a file URL", reason="outside_roots") from None
    if parts.netloc not in ("", "localhost"):
        raise CheckpointRejected(
            f"{shown}: a file URL must name this machine (file:///path)", reason="outside_roots"
        )
    if not path.startswith("/") or "\x00" in path:
        raise CheckpointRejected(f"{shown}: not an absolute file URL", reason="outside_roots")
    return path


def _blob(model_path: str, sha256: str | None) -> RemoteRef:
    name = model_path.split(":", 1)[1]
    if not _HEX64.match(name):
        raise CheckpointRejected(
            f"{_shown(model_path)}: a blob is named redis-blob:<64 hex characters>",
            reason="outside_roots",
        )
    name = name.lower()
    if sha256 is not None and sha256.lower() != name:
        raise CheckpointRejected(
            f"{_shown(model_path)}: announced with sha256 {sha256}, another hash",
            reason="sha256_mismatch",
        )
    return RemoteRef(f"{BLOB_SCHEME}:{name}", "blob", BLOB_SCHEME, name)


def _shown(text: str) -> str:
    """``text`` for a message: escaped, cut (it came from a publisher)."""
    return repr(printable(text, 200))
