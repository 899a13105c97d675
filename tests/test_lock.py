"""`.venv` is exactly what `requirements.lock` names: the versions CI verified, nothing more.

`make install` syncs `.venv` to the lock (uv pip sync) and installs the project on top with no
dependency resolution; a package installed by hand, a version that floated, or a lock edited
without `make install` fails here. `make test-latest` runs the suite without the lock and
leaves this test out (it checks the lock, not the code).
"""

from __future__ import annotations

import json
import re
import site
from collections import Counter
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*$")
# pip is the installer the venv was born with (python -m venv), the project is installed
# from its own tree; neither is a dependency the lock could name.
NOT_LOCKED = {"pip", "fks-checkpoint-notify"}


def venv_distributions() -> list[metadata.Distribution]:
    """What the venv holds (its site-packages), not the metadata a source tree on sys.path
    carries (the repository's own ``*.egg-info`` of the editable build)."""
    return list(metadata.distributions(path=site.getsitepackages()))


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin in {LOCK.name}: {line!r}"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def installed() -> dict[str, Version]:
    return {
        canonicalize_name(d.metadata["Name"]): Version(d.version)
        for d in venv_distributions()
        if d.metadata["Name"]
    }


def test_the_lock_pins_every_package_exactly() -> None:
    pins = locked()
    assert len(pins) > 50  # the dev extra's tree, transitive packages included
    assert pins["torch"] == Version("2.13.0+cpu")  # the CPU build, never the CUDA one
    assert {"redis", "hiredis", "fastapi", "uvicorn", "pydantic", "uv"} <= set(pins)


def test_the_venv_holds_exactly_what_the_lock_names() -> None:
    pins, have = locked(), installed()
    extra = sorted(f"{name}=={have[name]}" for name in set(have) - set(pins) - NOT_LOCKED)
    missing = sorted(f"{name}=={pins[name]}" for name in set(pins) - set(have))
    other = sorted(
        f"{name}: {have[name]} installed, {pins[name]} locked"
        for name in set(pins) & set(have)
        if have[name] != pins[name]
    )
    problems = [f"not in the lock: {x}" for x in extra] + [f"missing: {x}" for x in missing]
    problems += [f"another version: {x}" for x in other]
    assert not problems, "run make install (or make lock):\n" + "\n".join(problems)


def test_no_package_is_installed_twice() -> None:
    """Two metadata folders of one package (a stale one left beside the new) make its version
    whichever is listed last; uv pip sync does not remove the stale one."""
    names = Counter(
        canonicalize_name(d.metadata["Name"]) for d in venv_distributions() if d.metadata["Name"]
    )
    twice = sorted(name for name, count in names.items() if count > 1)
    assert not twice, f"installed more than once (rm -rf .venv && make install): {twice}"


def test_the_project_is_this_tree_installed_editable() -> None:
    """The tests run against the code in this repository, not a copy in site-packages."""
    (dist,) = [d for d in venv_distributions() if d.metadata["Name"] == "fks-checkpoint-notify"]
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    assert direct.get("dir_info", {}).get("editable") is True, "run make install"
    assert direct.get("url", "").removeprefix("file://") == str(ROOT), direct.get("url")
