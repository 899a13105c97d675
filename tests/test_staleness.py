"""The staleness rule of SPEC §2 as a table."""

from __future__ import annotations

import pytest

from common import Freshness, ServedIdentity, judge

SERVED = ServedIdentity(path="/m/model_5.pt", mtime_ns=1_000, version=5)
UNVERSIONED = ServedIdentity(path="/m/model.pt", mtime_ns=1_000, version=0)
# an unversioned decision taken at t=5_000 while version 7 was the highest known
DECIDED = ServedIdentity(
    path="/m/model.pt", mtime_ns=1_000, version=0, newer_after_ns=5_000, watermark=7
)


@pytest.mark.parametrize(
    ("served", "path", "version", "force", "mtime", "expected"),
    [
        (None, "/m/a.pt", 0, False, 1, Freshness.NO_MODEL),
        (SERVED, "/m/model_6.pt", 6, False, 2, Freshness.NEWER_VERSION),
        (SERVED, "/m/model_5.pt", 5, False, 1_000, Freshness.STALE_VERSION),
        (SERVED, "/m/model_4.pt", 4, False, 9_999, Freshness.STALE_VERSION),
        (SERVED, "/m/model_4.pt", 4, True, 9_999, Freshness.FORCED),
        (SERVED, "/m/model_5.pt", 5, True, 1_000, Freshness.FORCED),
        (SERVED, "/m/model_5.pt", 0, False, 1_000, Freshness.SAME_FILE),
        (SERVED, "/m/model_5.pt", 0, False, 2_000, Freshness.FILE_CHANGED),
        (SERVED, "/m/other.pt", 0, False, 1_000, Freshness.FILE_CHANGED),
        (SERVED, "/m/other.pt", 0, False, 999, Freshness.OLDER_FILE),
        (UNVERSIONED, "/m/model.pt", 9, False, 1_000, Freshness.NEWER_VERSION),
        (UNVERSIONED, "/m/model.pt", 0, False, 1_001, Freshness.FILE_CHANGED),
        (UNVERSIONED, "/m/model.pt", 0, False, None, Freshness.FILE_CHANGED),
        (UNVERSIONED, "/m/other.pt", 0, False, None, Freshness.FILE_CHANGED),
        (DECIDED, "/m/model_8.pt", 8, False, 1, Freshness.NEWER_VERSION),
        (DECIDED, "/m/model_7.pt", 7, False, 9_999, Freshness.STALE_VERSION),
        (DECIDED, "/m/other.pt", 0, False, 4_999, Freshness.OLDER_FILE),
        (DECIDED, "/m/other.pt", 0, False, 5_000, Freshness.FILE_CHANGED),
        (DECIDED, "/m/model.pt", 0, False, 999, Freshness.FILE_CHANGED),
    ],
)
def test_staleness_rule(
    served: ServedIdentity | None,
    path: str,
    version: int,
    force: bool,
    mtime: int | None,
    expected: Freshness,
) -> None:
    """force always applies; a version must be above the served version (or the highest one
    known when an unversioned decision was taken); else the file must not be older than the
    decision."""
    got = judge(served, path=path, version=version, force=force, mtime_ns=mtime)
    assert got is expected
    assert got.apply == (
        expected
        in {Freshness.NO_MODEL, Freshness.FORCED, Freshness.NEWER_VERSION, Freshness.FILE_CHANGED}
    )
