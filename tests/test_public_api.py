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
    "publisher": {"AckReport", "CheckpointNotifier", "NotifyResult", "notify_checkpoint"},
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
