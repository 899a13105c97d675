"""The public API of each package is said out loud and pinned (SPEC §6)."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "common": {
        "MAX_MESSAGE_BYTES", "CheckpointError", "CheckpointLoadError", "CheckpointNotification",
        "CheckpointRejected", "FksError", "Freshness", "InvalidNotification", "RedisKeys",
        "ServedIdentity", "Settings", "checkpoint_channel", "judge", "validate_instance_id",
    },
    "publisher": {
        "AckReport", "CheckpointNotifier", "NotifyOptions", "NotifyResult", "notify_checkpoint",
    },
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_exported_members(package: str) -> None:
    """__all__ lists exactly the public names, and each one exists."""
    module = importlib.import_module(package)
    assert set(module.__all__) == EXPECTED[package]
    for name in module.__all__:
        assert hasattr(module, name), name


def test_spec_imports_work() -> None:
    """The import lines of SPEC §6 that this layer provides all resolve."""
    from common import CheckpointNotification, checkpoint_channel  # noqa: F401
    from common.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401
    from common.policy import SACActor  # noqa: F401
    from publisher import CheckpointNotifier, notify_checkpoint  # noqa: F401


def test_notify_checkpoint_takes_the_notifiers_options() -> None:
    """notify_checkpoint passes its options on to CheckpointNotifier.notify: NotifyOptions names
    each of notify's keywords with its type (all but saved_at and hash_file, which a one-shot
    call has no use for), so the two cannot drift apart; SPEC §6's keywords are all there."""
    import inspect
    import typing

    from publisher import CheckpointNotifier, NotifyOptions, notify_checkpoint

    notify = inspect.signature(CheckpointNotifier.notify).parameters
    hints = typing.get_type_hints(CheckpointNotifier.notify)
    options = typing.get_type_hints(NotifyOptions)
    keywords = {n for n, p in notify.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(options) == keywords - {"saved_at", "hash_file"}
    assert {name: hints[name] for name in options} == options
    own = inspect.signature(notify_checkpoint).parameters
    assert list(own)[:2] == ["model_path", "model_name"]
    spec = {"version", "training_step", "metadata", "sha256", "force", "instance_id", "redis_url"}
    assert spec <= set(options) | set(own)
    # what NotifyOptions does not name is refused before anything is sent, notify's own
    # saved_at and hash_file included (a TypedDict is not checked at run time)
    for wrong in ("verison", "hash_file", "saved_at"):
        with pytest.raises(TypeError, match=f"notify_checkpoint.*'{wrong}'"):
            notify_checkpoint("/m/model.pt", redis_url="redis://127.0.0.1:1", **{wrong: 1})  # type: ignore[arg-type]


def test_common_imports_nothing_of_ours() -> None:
    """Data flows one way: common never imports publisher, subscriber or fks."""
    import pathlib

    root = pathlib.Path(importlib.import_module("common").__file__).parent  # type: ignore[arg-type]
    for source in root.rglob("*.py"):
        text = source.read_text()
        for other in ("publisher", "subscriber", "fks"):
            assert f"from {other}" not in text and f"import {other}" not in text, source


def test_checkpoint_bounds_interface_resolves() -> None:
    """What the serving core codes against for issue 12 is importable from common.checkpoint."""
    import common.checkpoint as checkpoint

    names = {"CheckpointLimits", "FileIdentity", "file_identity", "load_checkpoint",
             "LoadedCheckpoint", "parameter_count"}  # fmt: skip
    assert names <= set(checkpoint.__all__)
    assert all(hasattr(checkpoint, name) for name in checkpoint.__all__)
    assert "identity" in checkpoint.LoadedCheckpoint.__dataclass_fields__
