"""A model_path is a path or a remote URL, judged with no I/O (SPEC §9, common/remote.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.errors import CheckpointRejected
from common.remote import RemoteRef, canonical_url, is_url, parse_model_path
from common.settings import Settings

SHA = "ab" * 32
ALLOWED = [canonical_url("s3://models/prod/"), canonical_url("https://store.example/ckpt")]


def parse(
    model_path: str, sha256: str | None = SHA, allowed: list[str] | None = None
) -> str | RemoteRef:
    return parse_model_path(
        model_path, sha256=sha256, allowed=ALLOWED if allowed is None else allowed
    )


def reason(model_path: str, sha256: str | None = SHA, allowed: list[str] | None = None) -> str:
    with pytest.raises(CheckpointRejected) as caught:
        parse(model_path, sha256, allowed)
    return caught.value.reason


def test_paths_stay_paths() -> None:
    """Absolute and relative paths (even with a colon) are local; the roots confine them."""
    assert parse("/srv/models/model_1.pt") == "/srv/models/model_1.pt"
    assert parse("model:1.pt") == "model:1.pt" and not is_url("model:1.pt")
    assert parse("s3:models/prod/x.pt") == "s3:models/prod/x.pt"


def test_a_file_url_becomes_a_local_path() -> None:
    """file:///p, file://localhost/p and file:/p name a local file, decoded once."""
    assert parse("file:///srv/models/model_1.pt") == "/srv/models/model_1.pt"
    assert parse("FILE://localhost/srv/a%20b.pt") == "/srv/a b.pt"
    assert parse("file:/srv/x.pt") == "/srv/x.pt"
    assert parse("file:///srv/models/%2e%2e/etc/passwd") == "/srv/models/../etc/passwd"


@pytest.mark.parametrize(
    "url", ["file://evil.example/etc/passwd", "file:relative.pt", "file:///x.pt?y", "file:///a#b"]
)
def test_file_urls_of_other_machines_or_with_tricks_are_refused(url: str) -> None:
    assert reason(url) == "outside_roots"


def test_an_allowed_s3_url_is_a_remote_reference() -> None:
    ref = parse("S3://models/prod/model_7.pt", SHA.upper())
    assert ref == RemoteRef("s3://models/prod/model_7.pt", "fsspec", "s3", SHA)
    assert isinstance(ref, RemoteRef) and ref.suffix == ".pt"


def test_a_remote_url_without_sha256_is_unverifiable() -> None:
    assert reason("s3://models/prod/model_7.pt", None) == "unverifiable_remote"


@pytest.mark.parametrize(
    "url",
    [
        "s3://other/prod/model.pt",  # another bucket
        "s3://models/prod-evil/model.pt",  # a sibling that shares the prefix's letters
        "s3://models/model.pt",  # above the prefix
        "s3://models/prod/../secret/model.pt",
        "s3://models/prod/%2e%2e/secret/model.pt",
        "s3://models/prod/%2E%2E/secret/model.pt",
        "s3://models/prod/%252e%252e/secret/model.pt",  # double encoding
        "s3://models/prod/\uff0e\uff0e/secret/model.pt",  # fullwidth dots fold to '..'
        "s3://models/prod/./model.pt",
        "s3://user@models/prod/model.pt",
        "s3://models/prod/model.pt?versionId=1",
        "s3://models/prod/model.pt#frag",
        "s3://models/prod\\..\\x.pt",
        "s3://models/prod/a\u202ecod.pt",  # a bidi override
        "s3://modéls/prod/model.pt",  # a non-ASCII bucket
        "https://store.example/ckpt-evil/model.pt",
        "https://store.example.evil.com/ckpt/model.pt",
        "https://store.example:8443/ckpt/model.pt",  # another port
        "https://a:b@store.example/ckpt/model.pt",
    ],
)
def test_urls_outside_the_prefixes_are_refused(url: str) -> None:
    assert reason(url) == "outside_roots"


def test_canonical_form_drops_the_default_port_and_lowercases_the_host() -> None:
    assert canonical_url("HTTPS://Store.Example:443/ckpt/a%20b.pt") == (
        "https://store.example/ckpt/a b.pt"
    )
    assert isinstance(parse("https://STORE.example:443/ckpt/model.pt"), RemoteRef)


def test_plain_http_is_allowed_only_to_loopback() -> None:
    assert reason("http://store.example/ckpt/model.pt") == "unsupported_scheme"
    assert reason("http://10.0.0.1/ckpt/model.pt") == "unsupported_scheme"
    allowed = [canonical_url("http://127.0.0.1:8080/"), canonical_url("http://[::1]:8080/")]
    for url in ("http://127.0.0.1:8080/model.pt", "http://[::1]:8080/model.pt"):
        ref = parse_model_path(url, sha256=SHA, allowed=allowed)
        assert isinstance(ref, RemoteRef) and ref.kind == "http"


def test_a_scheme_nothing_installed_can_fetch_is_unsupported() -> None:
    assert reason("gopher://models/prod/model.pt") == "unsupported_scheme"
    assert reason("local://srv/models/model.pt") == "unsupported_scheme"
    with pytest.raises(CheckpointRejected) as caught:  # s3fs missing: the s3 extra
        parse_model_path(
            "s3://models/prod/m.pt", sha256=SHA, allowed=ALLOWED, installed=lambda _: False
        )
    assert caught.value.reason == "unsupported_scheme" and "s3 extra" in str(caught.value)


def test_a_blob_is_named_by_its_hash_and_is_accepted_only_when_listed() -> None:
    """Blobs are opt-in like any other source (issue 24, a1): whoever can write to Redis can
    store one. Listed as ``redis-blob:`` in FKS_MODEL_URLS, a blob needs no sha256 field."""
    assert reason(f"redis-blob:{SHA}", allowed=[]) == "outside_roots"
    ref = parse_model_path(f"redis-blob:{SHA.upper()}", sha256=None, allowed=["redis-blob:"])
    assert ref == RemoteRef(f"redis-blob:{SHA}", "blob", "redis-blob", SHA)
    blobs = ["redis-blob:"]
    assert reason(f"redis-blob:{SHA}", "cd" * 32, allowed=blobs) == "sha256_mismatch"
    assert reason("redis-blob:1234", allowed=blobs) == "outside_roots"
    assert reason(f"redis-blob:../{SHA}", allowed=blobs) == "outside_roots"
    assert Settings(model_urls="s3://a/x/, REDIS-BLOB:").url_prefixes() == [
        "s3://a/x/",
        "redis-blob:",
    ]
    with pytest.raises(ValidationError):
        Settings(model_url="redis-blob:")  # the remote tier lists a store; a blob is no store


def test_settings_read_the_prefixes_and_the_remote_tier() -> None:
    s = Settings(model_urls=" s3://a/x/ , HTTPS://H:443/m", model_url="s3://b/tier")
    assert s.url_prefixes() == ["s3://a/x/", "https://h/m", "s3://b/tier"]
    with pytest.raises(ValidationError):
        Settings(model_urls="/srv/models")
    with pytest.raises(ValidationError):
        Settings(model_urls="s3://a/x?q=1")
