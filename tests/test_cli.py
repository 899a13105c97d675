"""The fks command line against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import torch

from common import CheckpointNotification, RedisKeys
from common.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from common.checkpoint.convert import convert_checkpoint
from common.errors import CheckpointLoadError
from common.notification import U64_MAX
from common.policy import PolicyConfig, SACActor
from fks.cli import main
from fks.redis_server import free_port
from subscriber import ServingNode
from tests.helpers import wait_for, write_checkpoint

KEYS = RedisKeys("default")


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["train"], ["notify"], ["status"], ["convert"], ["demo"]]
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`fks [COMMAND] --help` explains itself and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage: fks" in text and len(text.splitlines()) > 4


def test_notify_publishes_and_prints_the_json(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fks notify sends what it prints; --meta, --force, --step and --version are carried."""
    saved = write_checkpoint(tmp_path, 3)
    code = main([
        "notify", str(saved.path), "--name", "m", "--version", "3", "--step", "90",
        "--meta", "loss=0.1", "--meta", "run=a", "--force", "--redis-url", redis_url,
    ])  # fmt: skip
    assert code == 0
    printed = CheckpointNotification.from_message(capsys.readouterr().out.strip())
    assert (printed.version, printed.training_step, printed.force) == (3, 90, True)
    assert printed.metadata == {"loss": "0.1", "run": "a"} and printed.sha256 == saved.sha256
    latest = redis_client.get(KEYS.latest)
    assert latest is not None and CheckpointNotification.from_message(latest) == printed


def test_notify_without_redis_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["notify", str(tmp_path / "m.pt"), "--redis-url", url]) == 1
    assert "redis_unavailable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["notify", "m.pt", "--meta", "novalue"], "key=value"),
        (["notify", "m.pt", "--instance", "bad id"], "instance_id"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    argv: list[str], needle: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--redis-url", redis_url]) == 2
    assert needle in capsys.readouterr().err


def test_status_shows_latest_listeners_and_nodes(
    redis_url: str, start_node: Callable[..., ServingNode], model_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """fks status: the :latest notification, NUMSUB, and the node serving it."""
    node = start_node(redis_url, node_id="node-1", heartbeat_seconds=0.2)
    wait_for(lambda: node.listener.connected)
    saved = write_checkpoint(model_root, 7)
    assert main(["notify", str(saved.path), "--version", "7", "--redis-url", redis_url]) == 0
    wait_for(lambda: node.holder.current() is not None)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    wait_for(lambda: '"version": 7' in (client.hget(KEYS.nodes, "node-1") or ""))
    capsys.readouterr()
    assert main(["status", "--redis-url", redis_url]) == 0
    text = capsys.readouterr().out
    assert "version 7" in text and "1 listening" in text
    assert "node-1" in text and "redis" in text and "STALE" not in text
    assert main(["status", "--json", "--redis-url", redis_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["latest"]["version"] == 7 and report["subscribers"] == 1
    assert report["nodes"][0]["node_id"] == "node-1" and report["nodes"][0]["version"] == 7


def test_status_without_redis_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]) == 1
    assert "fks status" in capsys.readouterr().err


def test_convert_rewrites_a_pt_as_safetensors_and_prints_both_sha256s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same weights, same metadata, the suffix changed; stdout is `sha256sum` lines."""
    actor = SACActor(PolicyConfig(hidden=(16,)))
    src = save_checkpoint(
        tmp_path / "model_7.pt", actor, model_name="m", version=7, training_step=70,
        metadata={"loss": 0.5},
    ).path  # fmt: skip
    assert main(["convert", str(src)]) == 0
    dst = tmp_path / "model_7.safetensors"
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{file_sha256(src)}  {src}", f"{file_sha256(dst)}  {dst}"]
    before, after = load_checkpoint(src), load_checkpoint(dst)
    assert after.format == "safetensors" and before.format == "pt"
    for field in ("config", "model_name", "version", "training_step", "saved_at", "metadata"):
        assert getattr(after, field) == getattr(before, field), field
    assert all(torch.equal(after.state_dict[k], v) for k, v in before.state_dict.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_7.pt", "model_7.safetensors"]


def test_convert_keeps_a_first_release_file_and_its_dtype(tmp_path: Path) -> None:
    """The first release's .pt converts; float64 weights stay float64 (no model in between)."""
    first = tmp_path / "first.pt"
    first.write_bytes((Path(__file__).parent / "data" / "model_first_release.pt").read_bytes())
    converted = convert_checkpoint(first)
    assert converted.saved.path == tmp_path / "first.safetensors"
    assert load_checkpoint(converted.saved.path).version == 7
    double = save_checkpoint(tmp_path / "double.pt", SACActor(PolicyConfig(hidden=(8,))).double())
    written = load_checkpoint(
        convert_checkpoint(double.path, tmp_path / "d.safetensors").saved.path
    )
    assert {t.dtype for t in written.state_dict.values()} == {torch.float64}


def test_a_conversion_that_does_not_read_back_the_same_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import common.checkpoint.convert

    def differ(*args: object) -> None:
        raise CheckpointLoadError("reads back with other state_dict", reason="corrupt")

    monkeypatch.setattr(common.checkpoint.convert, "_same", differ)
    src = write_checkpoint(tmp_path, 1).path
    with pytest.raises(CheckpointLoadError):
        convert_checkpoint(src)
    assert [p.name for p in tmp_path.iterdir()] == ["model_1.pt"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["nope.pt"], "missing"),
        (["junk.pt"], "corrupt"),
        (["model_1.safetensors"], "foreign_format"),
        (["model_1.pt", "out.pt"], "must end in .safetensors"),
        (["model_1.pt", "taken.safetensors"], "exists"),
    ],
)
def test_convert_refuses_a_bad_source_or_destination_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    """A missing, corrupt or already converted SRC, a DST that is not .safetensors or exists."""
    write_checkpoint(tmp_path, 1)
    write_checkpoint(tmp_path, 1, name="model_1.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"junk" * 100)
    (tmp_path / "taken.safetensors").write_bytes(b"x")
    assert main(["convert", *(str(tmp_path / a) for a in argv)]) == 2
    assert needle in capsys.readouterr().err
    assert (tmp_path / "taken.safetensors").read_bytes() == b"x"
    assert not (tmp_path / "out.pt").exists() and not (tmp_path / "nope.safetensors").exists()
    assert main(["convert", str(tmp_path / "model_1.pt"), str(tmp_path / "taken.safetensors"),
                 "--force"]) == 0  # fmt: skip


def test_train_saves_announces_prunes_and_continues_versions(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Every N steps a checkpoint is saved (.safetensors unless --format pt) and announced;
    only K stay, of both formats; a rerun continues the versions."""
    argv = [
        "train", "--steps", "120", "--every", "40", "--warmup", "20", "--keep", "2",
        "--dir", str(tmp_path), "--redis-url", redis_url, "--quiet",
    ]  # fmt: skip
    assert main([*argv, "--format", "pt"]) == 0
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["model_000002.pt", "model_000003.pt"]
    assert [load_checkpoint(f).version for f in files] == [2, 3]
    latest = CheckpointNotification.from_message(redis_client.get(KEYS.latest) or "")
    assert latest.version == 3 and latest.training_step == 120
    assert {"eval_return", "alpha", "critic_loss", "mean_q"} <= set(latest.metadata)
    assert "np." not in json.dumps(latest.metadata)
    assert main(argv) == 0
    latest = CheckpointNotification.from_message(redis_client.get(KEYS.latest) or "")
    assert latest.version == 6 and latest.model_path.endswith("model_000006.safetensors")
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["model_000005.safetensors", "model_000006.safetensors"]
    loaded = load_checkpoint(files[-1], expected_sha256=latest.sha256)
    assert loaded.format == "safetensors" and loaded.metadata == latest.metadata


def test_train_moves_past_a_version_an_operator_took(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """An operator's `fks notify --force` takes the trainer's next version mid-run: the
    trainer's checkpoint is announced under the next free version instead of being lost."""
    from fks.trainer import CheckpointReport, TrainConfig, train
    from publisher import CheckpointNotifier

    def operator(report: CheckpointReport) -> None:
        if report.version == 1:  # roll back to it: --force allocates 2, the trainer's next
            assert (
                main(["notify", str(report.saved.path), "--force", "--redis-url", redis_url]) == 0
            )

    config = TrainConfig(directory=tmp_path, steps=80, every=40, warmup=20, progress=False)
    with CheckpointNotifier(redis_url) as notifier:
        summary = train(config, notifier, on_checkpoint=operator)
    assert [r.version for r in summary.checkpoints] == [1, 3]
    assert all(r.result.sent for r in summary.checkpoints)
    latest = CheckpointNotification.from_message(redis_client.get(KEYS.latest) or "")
    assert latest.version == 3 and not latest.force


def test_train_moves_past_a_version_the_fleet_moved_to(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The counter moves to 142 mid-run (a node serving an operator's unversioned message
    under its file's version raises it): the trainer's next checkpoint is v143, not v2,
    which every node would judge stale (a review ran the trainer into it, 2026-12-08)."""
    from fks.trainer import CheckpointReport, TrainConfig, train
    from publisher import CheckpointNotifier

    def fleet(report: CheckpointReport) -> None:
        if report.version == 1:
            redis_client.set(KEYS.version, 142)

    config = TrainConfig(directory=tmp_path, steps=80, every=40, warmup=20, progress=False)
    with CheckpointNotifier(redis_url) as notifier:
        summary = train(config, notifier, on_checkpoint=fleet)
    assert [r.version for r in summary.checkpoints] == [1, 143]
    assert summary.checkpoints[-1].saved.path.name == "model_000143.safetensors"
    latest = CheckpointNotification.from_message(redis_client.get(KEYS.latest) or "")
    assert latest.version == 143


@pytest.mark.parametrize("counter", [b"abc", str(U64_MAX - 1).encode()], ids=["garbage", "max"])
def test_train_goes_on_past_a_counter_it_cannot_number_above(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, counter: bytes
) -> None:
    """A counter that is no number (a Redis writer's garbage) is ignored, and one at the end
    of the version space caps the trainer's versions at 2^64 - 1, where the notify says the
    space is exhausted: training goes on and every checkpoint is saved, where reading the
    counter mid-run first raised out of train() (the review of 7e668c1)."""
    from fks.trainer import CheckpointReport, TrainConfig, train
    from publisher import CheckpointNotifier

    def writer(report: CheckpointReport) -> None:
        if report.version == 1:
            redis_client.set(KEYS.version, counter)

    config = TrainConfig(directory=tmp_path, steps=120, every=40, warmup=20, progress=False)
    with CheckpointNotifier(redis_url) as notifier:
        summary = train(config, notifier, on_checkpoint=writer)
    versions = [r.version for r in summary.checkpoints]
    if counter == b"abc":
        assert versions == [1, 2, 3]
        assert all(r.result.sent for r in summary.checkpoints)
    else:
        assert versions == [1, U64_MAX, U64_MAX]
        assert not summary.checkpoints[-1].result.sent
        assert "exhausted" in (summary.checkpoints[-1].result.reason or "")


@pytest.mark.slow
def test_training_visibly_improves_the_evaluation_return(tmp_path: Path) -> None:
    """Over 2,000 steps the deterministic policy's return rises well above its start."""
    from fks.trainer import TrainConfig, train
    from publisher import CheckpointNotifier

    config = TrainConfig(directory=tmp_path, steps=2000, every=500, progress=False)
    with CheckpointNotifier(f"redis://127.0.0.1:{free_port()}/0") as offline:
        summary = train(config, offline)
    returns = [r.eval_return for r in summary.checkpoints]
    assert returns[-1] > returns[0] + 1.0, returns


def test_serve_runs_the_server_and_stops_gracefully(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    """`fks serve --port P` answers /sac/health, registers, and on SIGTERM shuts down cleanly
    (uvicorn re-raises the signal after its graceful shutdown; the node's registry entry,
    removed only by a clean stop, tells the shutdown was graceful)."""
    port = free_port()
    env = {
        **os.environ, "REDIS_URL": redis_url, "FKS_DEFAULT_DIR": str(tmp_path),
        "FKS_NODE_ID": "cli-serve", "FKS_HEARTBEAT_SECONDS": "0.2",
    }  # fmt: skip
    with subprocess.Popen(
        [sys.executable, "-m", "fks", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as proc:  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/sac/health"

            def healthy() -> bool:
                try:
                    return httpx.get(url).json()["redis_connected"] is True
                except httpx.HTTPError:
                    return False

            wait_for(healthy, timeout=30, every=0.1)
            wait_for(lambda: redis_client.hget(KEYS.nodes, "cli-serve"), timeout=5)
        finally:
            proc.terminate()
        assert proc.wait(15) in (0, -15)
    assert redis_client.hget(KEYS.nodes, "cli-serve") is None


def test_notify_of_a_path_this_os_cannot_look_up_is_sent_not_a_traceback(
    redis_url: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name over 255 bytes (or a path over PATH_MAX) is a path that does not exist on this
    machine (it may on the nodes): announced, not an OSError (found by the review of issue
    26)."""
    # a 300-byte name; a 2,426-character path of 4,846 bytes (over PATH_MAX, under SPEC's
    # 4,096 characters)
    paths = ["/srv/" + "x" * 300 + ".pt", "/" + "/".join(["é" * 120] * 20) + "/m.pt"]
    for version, path in enumerate(paths, start=2):
        pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(RedisKeys("default").channel)
        assert main(["notify", path, "--version", str(version), "--redis-url", redis_url]) == 0
        message = None
        for _ in range(20):
            message = message or pubsub.get_message(timeout=0.1)
        assert message is not None and json.loads(message["data"])["model_path"] == path
        pubsub.close()
        assert "does not exist on this machine" in capsys.readouterr().err
