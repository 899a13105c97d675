"""The wire format of SPEC §2: what is accepted, what is rejected and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import MAX_MESSAGE_BYTES, CheckpointNotification, InvalidNotification
from common.notification import U64_MAX
from common.signing import canonical_json, sign_payload

RUST_JSON = (
    '{"model_path":"model.bin","model_name":"test","version":1,'
    '"saved_at":"2025-01-01T00:00:00Z","training_step":100}'
)
RUST_FIELDS = ["model_path", "model_name", "version", "saved_at", "training_step", "metadata"]


def parse(text: str | bytes, secret: str | None = None) -> CheckpointNotification:
    return CheckpointNotification.from_message(text, secret=secret)


def test_rust_output_parses() -> None:
    """The exact JSON the Rust struct emits parses with every field kept."""
    n = parse(RUST_JSON)
    assert n.model_path == "model.bin"
    assert n.model_name == "test"
    assert n.version == 1
    assert n.saved_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert n.training_step == 100
    assert n.metadata == {}
    assert n.sha256 is None and n.signature is None and n.force is False


def test_rust_output_with_metadata_parses() -> None:
    """The same JSON with a metadata object keeps its entries."""
    obj = json.loads(RUST_JSON) | {"metadata": {"loss": "0.5", "run": "a"}}
    assert parse(json.dumps(obj)).metadata == {"loss": "0.5", "run": "a"}


def test_output_carries_the_six_rust_fields_and_round_trips() -> None:
    """Our output has the six fields first and parses back to an equal notification."""
    n = parse(RUST_JSON)
    out = json.loads(n.to_json())
    assert list(out)[:6] == RUST_FIELDS
    assert out["saved_at"] == "2025-01-01T00:00:00Z"
    assert parse(n.to_json()) == n


def test_optional_fields_round_trip() -> None:
    """sha256, force and metadata survive a round trip."""
    n = CheckpointNotification(
        model_path="/m/model_1.pt",
        version=7,
        sha256="ab" * 32,
        force=True,
        metadata={"k": "v"},
    )
    back = parse(n.to_json())
    assert back == n
    assert json.loads(n.to_json())["force"] is True


def test_only_model_path_is_required() -> None:
    """Absent fields take the SPEC defaults; saved_at is the time of receipt."""
    before = datetime.now(UTC)
    n = parse('{"model_path":"/abs/model_x.pt","force":true}')
    assert (n.model_name, n.version, n.training_step, n.metadata) == ("", 0, 0, {})
    assert n.force is True
    assert before <= n.saved_at <= datetime.now(UTC)


def test_offsets_are_accepted_and_normalised_to_utc() -> None:
    """'Z', '+00:00' and other offsets are read; output is always UTC with 'Z'."""
    a = parse('{"model_path":"a","saved_at":"2025-01-01T00:00:00+00:00"}')
    b = parse('{"model_path":"a","saved_at":"2025-01-01T02:00:00+02:00"}')
    assert a.saved_at == b.saved_at
    assert json.loads(b.to_json())["saved_at"] == "2025-01-01T00:00:00Z"


def test_metadata_numbers_and_bools_become_strings() -> None:
    """Numbers and booleans in metadata are turned into strings, JSON-style."""
    n = parse('{"model_path":"a","metadata":{"i":3,"f":0.25,"t":true,"s":"x"}}')
    assert n.metadata == {"i": "3", "f": "0.25", "t": "true", "s": "x"}


def test_numpy_numbers_in_metadata_read_as_plain_numbers() -> None:
    """np.float64 / np.int64 metadata (a trainer's metrics) become "0.5" and "3"."""
    import numpy as np

    n = CheckpointNotification(
        model_path="a",
        metadata={"loss": np.float64(0.5), "n": np.int64(3)},  # type: ignore[dict-item]
    )
    assert n.metadata == {"loss": "0.5", "n": "3"}


def test_unknown_fields_are_ignored() -> None:
    """A newer publisher's extra fields do not break an older subscriber."""
    assert parse('{"model_path":"a","future":{"x":1}}').model_path == "a"


def test_largest_u64_version_is_accepted() -> None:
    """2^64-1 is a valid version."""
    assert parse(json.dumps({"model_path": "a", "version": U64_MAX})).version == U64_MAX


@pytest.mark.parametrize(
    ("message", "reason", "needle"),
    [
        ('{"model_name":"x"}', "invalid_field", "model_path"),
        ('{"model_path":""}', "invalid_field", "model_path"),
        ('{"model_path":null}', "invalid_field", "model_path"),
        ('{"model_path":42}', "invalid_field", "model_path"),
        (json.dumps({"model_path": "a" * 4097}), "invalid_field", "model_path"),
        ('{"model_path":"a\\u0000b"}', "invalid_field", "NUL"),
        ('{"model_path":"a","version":-1}', "invalid_field", "version"),
        ('{"model_path":"a","version":18446744073709551616}', "invalid_field", "version"),
        ('{"model_path":"a","version":"3"}', "invalid_field", "version"),
        ('{"model_path":"a","version":1.5}', "invalid_field", "version"),
        ('{"model_path":"a","training_step":-5}', "invalid_field", "training_step"),
        ('{"model_path":"a","force":"yes"}', "invalid_field", "force"),
        ('{"model_path":"a","metadata":[1]}', "invalid_field", "metadata"),
        ('{"model_path":"a","metadata":{"k":{"n":1}}}', "invalid_field", "metadata"),
        ('{"model_path":"a","metadata":{"k":null}}', "invalid_field", "metadata"),
        ('{"model_path":"a","sha256":"xyz"}', "invalid_field", "sha256"),
        ('{"model_path":"a","saved_at":"yesterday"}', "invalid_field", "saved_at"),
        ('{"model_path":"a","saved_at":"2025-01-01T00:00:00"}', "invalid_field", "saved_at"),
        ('{"model_path":"a","saved_at":1735689600}', "invalid_field", "saved_at"),
        ("[1,2]", "not_object", "object"),
        ('"just a string"', "not_object", "object"),
        ("null", "not_object", "object"),
        ("not json", "not_json", "JSON"),
        ('{"model_path":"a"', "not_json", "JSON"),
        ('{"model_path":"a","version":NaN}', "not_json", "NaN"),
        (b'{"model_path":"\xff"}', "not_utf8", "UTF-8"),
        ("", "not_json", "JSON"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(
    message: str | bytes, reason: str, needle: str
) -> None:
    """Each malformed kind raises InvalidNotification with its own reason and a clear text."""
    with pytest.raises(InvalidNotification) as info:
        parse(message)
    assert info.value.reason == reason
    assert needle in str(info.value)


def test_oversize_messages_are_rejected_before_parsing() -> None:
    """A message over 64 KiB is rejected as oversize, even if it is valid JSON."""
    big = json.dumps({"model_path": "a", "metadata": {"pad": "x" * MAX_MESSAGE_BYTES}})
    with pytest.raises(InvalidNotification) as info:
        parse(big)
    assert info.value.reason == "oversize"


def test_exactly_64_kib_is_still_accepted() -> None:
    """The limit is inclusive."""
    base = json.dumps({"model_path": "a", "metadata": {"pad": ""}})
    pad = MAX_MESSAGE_BYTES - len(base)
    text = json.dumps({"model_path": "a", "metadata": {"pad": "x" * pad}})
    assert len(text.encode()) == MAX_MESSAGE_BYTES
    assert parse(text).metadata["pad"] == "x" * pad


class TestSignatures:
    SECRET = "correct horse battery staple"

    def test_signed_message_verifies(self) -> None:
        """A message signed with the secret is accepted and keeps its signature."""
        n = CheckpointNotification(model_path="/m/a.pt", version=2).signed(self.SECRET)
        assert parse(n.to_json(), secret=self.SECRET).signature == n.signature

    def test_unsigned_message_is_rejected_when_a_secret_is_set(self) -> None:
        """With a secret, an unsigned message is rejected as unsigned."""
        with pytest.raises(InvalidNotification) as info:
            parse(RUST_JSON, secret=self.SECRET)
        assert info.value.reason == "unsigned"

    def test_wrong_key_is_rejected(self) -> None:
        """A message signed with another key is rejected as badly signed."""
        n = CheckpointNotification(model_path="/m/a.pt").signed("other key")
        with pytest.raises(InvalidNotification) as info:
            parse(n.to_json(), secret=self.SECRET)
        assert info.value.reason == "bad_signature"

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda o: o.update(model_path="/etc/passwd"),
            lambda o: o.update(version=o["version"] + 1),
            lambda o: o.update(force=True),
            lambda o: o["metadata"].update(x="1"),
            lambda o: o.pop("model_name"),
        ],
    )
    def test_any_change_after_signing_is_rejected(self, tamper: object) -> None:
        """Changing, adding or removing any field after signing breaks the signature."""
        n = CheckpointNotification(model_path="/m/a.pt", version=3, model_name="m")
        obj = json.loads(n.signed(self.SECRET).to_json())
        tamper(obj)  # type: ignore[operator]
        with pytest.raises(InvalidNotification) as info:
            parse(json.dumps(obj), secret=self.SECRET)
        assert info.value.reason == "bad_signature"

    def test_operator_can_sign_by_hand(self) -> None:
        """The canonical form is sorted compact JSON without 'signature': easy to reproduce."""
        obj = {"model_path": "/m/a.pt", "force": True}
        assert canonical_json(obj) == b'{"force":true,"model_path":"/m/a.pt"}'
        obj["signature"] = sign_payload(obj, self.SECRET)
        assert parse(json.dumps(obj), secret=self.SECRET).force is True

    def test_signature_is_ignored_without_a_secret(self) -> None:
        """A node without a secret accepts signed messages too."""
        n = CheckpointNotification(model_path="/m/a.pt").signed(self.SECRET)
        assert parse(n.to_json()).model_path == "/m/a.pt"


json_scalars = st.one_of(st.text(max_size=20), st.integers(-5, 2**65), st.booleans(), st.none())


@given(
    path=st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s),
    name=st.text(max_size=50),
    version=st.integers(0, U64_MAX),
    step=st.integers(0, U64_MAX),
    meta=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5),
)
def test_any_valid_notification_round_trips(
    path: str, name: str, version: int, step: int, meta: dict[str, str]
) -> None:
    """Whatever we can build, we can send and read back unchanged."""
    n = CheckpointNotification(
        model_path=path, model_name=name, version=version, training_step=step, metadata=meta
    )
    assert parse(n.to_json()) == n


@given(st.dictionaries(st.sampled_from(RUST_FIELDS + ["force", "sha256"]), json_scalars))
def test_arbitrary_objects_parse_or_raise_invalid_notification(obj: dict[str, object]) -> None:
    """No JSON object makes the parser raise anything but InvalidNotification."""
    try:
        parse(json.dumps(obj))
    except InvalidNotification as exc:
        assert exc.reason in {"invalid_field", "not_object"}


@pytest.mark.parametrize(
    "message",
    [
        '{"model_path":"/x\\ud800"}',
        '{"model_path":"/x\\uDBFF.pt"}',
        '{"model_path":"/x","metadata":{"k":"\\udc00"}}',
        '{"model_path":"/x","metadata":{"\\ud83d":"v"}}',
        '{"model_path":"/x\\\\\\ud800"}',  # an escaped backslash, then the escape
        '{"model_path":"/x\\ud83d\\ud83d"}',  # two high halves: no pair
    ],
)
def test_a_lone_surrogate_escape_anywhere_is_refused_bad_unicode(message: str) -> None:
    """Only a \\u escape can carry half of a UTF-16 pair (the bytes are UTF-8): the parser
    looks for one wherever such an escape appears, in a value or a key, of either case."""
    with pytest.raises(InvalidNotification) as caught:
        CheckpointNotification.from_message(message.encode())
    assert caught.value.reason == "bad_unicode"


def test_escapes_that_make_whole_characters_are_accepted() -> None:
    parsed = CheckpointNotification.from_message(b'{"model_path":"/x\\ud83d\\ude00\\u00e9\\\\u"}')
    assert parsed.model_path == "/x\U0001f600\u00e9\\u"
