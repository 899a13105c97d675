"""End to end (SPEC §12): a real uvicorn server swaps sac_actor -> dqn -> a user's own module
(the examples/my_arch package, pip-installed, registered by its entry point) while clients
keep predicting, with 0 failed requests; and a dqn whose rows amplify, and a user module
whose rows attend to rows, are held to FKS_MAX_ACTIVATION_BYTES over a real socket (issue 24)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from common.architectures import load_entry_points
from common.architectures.dqn import DQN, DQNConfig
from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import build_architecture, register_architecture
from fks.server_process import ServerProcess
from publisher import CheckpointNotifier
from tests.helpers import AttendRows, wait_for, write_checkpoint
from tests.process_stats import peak_memory_growth

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT / "examples" / "my_arch"
STATE = [0.05] * 28


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/my_arch pip-installed into a directory of its own (not into the venv)."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "my_arch"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", *isolation, "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


@pytest.fixture
def with_example(example_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process sees the example's entry point too (to save its checkpoints)."""
    monkeypatch.syspath_prepend(str(example_site))
    assert "gated_policy" in load_entry_points()
    yield example_site


def test_the_example_is_registered_by_its_entry_point(with_example: Path) -> None:
    """The entry point names a factory; build_architecture takes its config with defaults
    and refuses a key it does not know."""
    module = build_architecture("gated_policy", {"width": 8})
    assert type(module).__name__ == "GatedPolicy" and module(torch.zeros(3, 28)).shape == (3, 1)
    with pytest.raises(ValueError, match="unknown config key"):
        build_architecture("gated_policy", {"depth": 3})


def serves(client: httpx.Client, version: int) -> Callable[[], bool]:
    return lambda: bool(client.get("/sac/model/info").json()["version"] == version)


def answered(seen: list[Any], count: int) -> Callable[[], bool]:
    return lambda: len(seen) > count


def _user_checkpoint(root: Path, version: int) -> SavedCheckpoint:
    torch.manual_seed(version)
    module = build_architecture("gated_policy", {"width": 16})
    return save_checkpoint(
        root / f"model_{version}.safetensors", module, architecture="gated_policy",
        config={"state_dim": 28, "action_dim": 1, "width": 16}, version=version,
    )  # fmt: skip


@pytest.mark.slow
def test_a_node_swaps_sac_actor_dqn_and_a_user_module_live_with_no_failed_request(
    with_example: Path, redis_url: str, model_root: Path, tmp_path: Path
) -> None:
    """4 clients predict throughout; v1 sac_actor, v2 dqn, v3 the user's gated_policy, v4
    sac_actor again are announced in turn: every response is 200, each in its model's shape."""
    files = [
        write_checkpoint(model_root, 1),
        save_checkpoint(model_root / "model_2.safetensors", DQN(DQNConfig(hidden=(64,))),
                        version=2),
        _user_checkpoint(model_root, 3),
        write_checkpoint(model_root, 4),
    ]  # fmt: skip
    env = {
        "REDIS_URL": redis_url,
        "STAT_PAIR_RL_DIR": str(model_root / "none"),
        "FKS_DEFAULT_DIR": str(tmp_path / "default"),
        "STAT_PAIR_RL_MODEL": str(files[0].path),
        "STAT_PAIR_RL_JIT": "true",
        "PYTHONPATH": os.pathsep.join([str(with_example), os.environ.get("PYTHONPATH", "")]),
    }
    seen: list[tuple[int, Any]] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                r = client.post("/sac/predict", json={"state": STATE})
                seen.append((r.status_code, r.json()))

    with ServerProcess(env, log_path=tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url) as probe:
            wait_for(lambda: probe.get("/sac/health").json()["redis_connected"], timeout=10)
            threads = [threading.Thread(target=client_loop) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                with CheckpointNotifier(redis_url) as notifier:
                    for saved in files[1:]:
                        wait_for(answered(seen, 50 + 100 * saved.version), timeout=20)
                        result = notifier.notify(
                            saved.path, version=saved.version, sha256=saved.sha256
                        )
                        assert result
                        wait_for(serves(probe, saved.version), timeout=20)
                        if saved.version == 3:
                            info = probe.get("/sac/model/info").json()
                            assert info["architecture"] == "gated_policy"
                            assert info["input_shape"] == [28] and info["discrete"] is False
                wait_for(lambda: len(seen) > 600, timeout=20)
            finally:
                stop.set()
                for t in threads:
                    t.join()
    failures = [r for r in seen if r[0] != 200]
    assert failures == [], failures[:3]
    by_version = {body["version"]: body for _, body in seen}
    assert set(by_version) == {1, 2, 3, 4}
    assert isinstance(by_version[2]["action"], int) and len(by_version[2]["q_values"]) == 3
    for version in (1, 3, 4):
        assert isinstance(by_version[version]["action"], float)
        assert "q_values" not in by_version[version]
    assert by_version[2]["jit_compiled"] is True and by_version[3]["jit_compiled"] is False


@pytest.mark.slow
def test_an_amplifying_dqn_batch_is_413_and_the_node_does_not_grow(
    redis_url: str, model_root: Path, tmp_path: Path
) -> None:
    """A dqn within every checkpoint cap (window 256, LSTM 512, 8 MB) holds ~0.5 MiB a row:
    256 rows, a 450 KiB body, would hold 136 MiB. The node answers 413 naming
    FKS_MAX_ACTIVATION_BYTES and the largest batch (what /sac/model/info says), its resident
    memory grows by less than half of that (the body's JSON alone), and it still serves."""
    config = {"state_dim": 1, "n_actions": 2, "hidden": [8], "window": 256, "lstm_hidden": 512}
    torch.manual_seed(0)
    saved = save_checkpoint(
        model_root / "model_1.safetensors", build_architecture("dqn", config),
        architecture="dqn", config=config, version=1,
    )  # fmt: skip
    env = {
        "REDIS_URL": redis_url,
        "STAT_PAIR_RL_MODEL": str(saved.path),
        "FKS_DEFAULT_DIR": str(tmp_path / "default"),
        "FKS_STATE_DIM": "1",
    }
    with (
        ServerProcess(env, log_path=tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        wait_for(lambda: client.get("/sac/model/info").status_code == 200, timeout=60, every=0.1)
        info = client.get("/sac/model/info").json()
        per_row, largest = info["activation_bytes_per_row"], info["max_batch_rows"]
        assert per_row >= 256 * 512 * 4 and 0 < largest < 256
        windows = [[[0.0]] * 256] * 256
        assert server.process is not None
        with peak_memory_growth(server.process.pid) as growth:
            refused = client.post("/sac/predict/batch", json={"states": windows})
        assert refused.status_code == 413, refused.text[:200]
        detail = refused.json()["detail"]
        assert "FKS_MAX_ACTIVATION_BYTES" in detail and f"at most {largest} rows" in detail
        assert growth[0] < 256 * per_row / 2 / 1e6
        served = client.post("/sac/predict/batch", json={"states": windows[:2]})
        assert served.status_code == 200 and len(served.json()["actions"]) == 2


ATTEND_ROWS_PLUGIN = {
    "attend_rows_plugin.py": (
        "from tests.helpers import AttendRows\n\n\n"
        "def build(config):\n"
        "    return AttendRows(config['width'], config['heads'])\n\n\n"
        "build.config_defaults = {'width': 16, 'heads': 4}\n"
    ),
    "attend_rows_plugin-0.1.dist-info/METADATA": (
        "Metadata-Version: 2.1\nName: attend-rows-plugin\nVersion: 0.1\n"
    ),
    "attend_rows_plugin-0.1.dist-info/entry_points.txt": (
        "[fks.architectures]\nattend_rows = attend_rows_plugin:build\n"
    ),
}


@pytest.mark.slow
def test_rows_that_attend_to_rows_hold_the_node_to_the_budget_at_the_largest_batch(
    redis_url: str, model_root: Path, tmp_path: Path
) -> None:
    """A user module (an entry point) whose rows attend to each other holds 4 x rows² scores:
    ~1.2 KiB a row at 8 rows, 512 MiB at 4,096. Under a 16 MiB FKS_MAX_ACTIVATION_BYTES the
    node takes the largest batch measured within it: a request of that many rows answers 200
    and raises the server's peak resident memory by less than twice the budget; one row more
    is 413."""
    site = tmp_path / "site"
    for name, text in ATTEND_ROWS_PLUGIN.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    config = {"width": 16, "heads": 4}
    register_architecture("attend_rows", lambda c: AttendRows(c["width"], c["heads"]),
                          defaults=config)  # fmt: skip
    torch.manual_seed(0)
    saved = save_checkpoint(
        model_root / "model_1.safetensors", AttendRows(**config), architecture="attend_rows",
        config=config, version=1,
    )  # fmt: skip
    budget = 16 << 20
    env = {
        "REDIS_URL": redis_url,
        "STAT_PAIR_RL_MODEL": str(saved.path),
        "FKS_DEFAULT_DIR": str(tmp_path / "default"),
        "FKS_MAX_ACTIVATION_BYTES": str(budget),
        "PYTHONPATH": os.pathsep.join([str(site), str(PROJECT), os.environ.get("PYTHONPATH", "")]),
    }
    with (
        ServerProcess(env, log_path=tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        wait_for(lambda: client.get("/sac/model/info").status_code == 200, timeout=60, every=0.1)
        info = client.get("/sac/model/info").json()
        assert info["architecture"] == "attend_rows"
        largest = info["max_batch_rows"]
        assert server.process is not None
        with peak_memory_growth(server.process.pid) as growth:
            served = client.post("/sac/predict/batch", json={"states": [STATE] * largest})
        assert served.status_code == 200 and served.json()["batch_size"] == largest
        assert growth[0] < 2 * budget / 1e6, f"{largest} rows: +{growth[0]:.0f} MB"
        assert 0 < largest < 4096
        refused = client.post("/sac/predict/batch", json={"states": [STATE] * (largest + 1)})
        assert refused.status_code == 413 and f"at most {largest} rows" in refused.json()["detail"]
