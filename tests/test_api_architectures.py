"""Serving any architecture over HTTP (SPEC §12): a discrete dqn, a windowed one, a user's
module; verify-before-swap refusals; the OpenAPI of both answer shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from common.architectures.dqn import DQN, DQNConfig
from common.checkpoint import SavedCheckpoint, save_checkpoint
from common.policy import register_architecture
from tests.helpers import AttendRows, bump_mtime, write_checkpoint
from tests.safetensors_files import retag

STATE = [0.1] * 28
Client = Callable[..., Any]


def write_dqn(root: Path, version: int, **config: Any) -> tuple[SavedCheckpoint, DQN]:
    torch.manual_seed(version)
    module = DQN(DQNConfig(**({"hidden": (32, 32)} | config)))
    path = root / f"model_{version}.safetensors"
    return save_checkpoint(path, module, version=version), module


def q_values(module: nn.Module, states: list[Any]) -> np.ndarray[Any, Any]:
    with torch.inference_mode():
        out: np.ndarray[Any, Any] = module(torch.tensor(states, dtype=torch.float32)).numpy()
    return out


def rejections(client: TestClient, reason: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'fks_rejections_total{{model="default",reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("jit", [False, True])
def test_a_dqn_answers_the_argmax_index_and_its_q_values(
    client_for: Client, model_root: Path, jit: bool
) -> None:
    """/sac/predict gives action = argmax (an int) and q_values; the batch route too; the
    numpy fast path (STAT_PAIR_RL_JIT) agrees with torch within 1e-5."""
    _, module = write_dqn(model_root, 1, n_actions=4)
    rows = np.random.default_rng(0).standard_normal((16, 28)).tolist()
    expected = q_values(module, rows)
    with client_for(jit=jit) as client:
        body = client.post("/sac/predict", json={"state": rows[3]}).json()
        assert body["action"] == int(np.argmax(expected[3])) and isinstance(body["action"], int)
        assert np.allclose(body["q_values"], expected[3], atol=1e-5)
        assert body["jit_compiled"] is jit
        batch = client.post("/sac/predict/batch", json={"states": rows}).json()
        assert batch["actions"] == np.argmax(expected, axis=1).tolist()
        assert np.allclose(batch["q_values"], expected, atol=1e-5)
        info = client.get("/sac/model/info").json()
    assert info["architecture"] == "dqn" and info["discrete"] is True
    assert (info["input_shape"], info["output_shape"], info["action_dim"]) == ([28], [4], 4)


def test_a_windowed_dqn_takes_window_rows_and_runs_in_torch(
    client_for: Client, model_root: Path
) -> None:
    """window=4: state is 4 rows of 28, oldest first; a flat state is a clear 400; the LSTM
    runs in torch even with STAT_PAIR_RL_JIT."""
    _, module = write_dqn(model_root, 1, window=4, lstm_hidden=16)
    windows = np.random.default_rng(1).standard_normal((5, 4, 28)).tolist()
    expected = q_values(module, windows)
    with client_for(jit=True) as client:
        body = client.post("/sac/predict", json={"state": windows[0]}).json()
        assert body["action"] == int(np.argmax(expected[0])) and body["jit_compiled"] is False
        assert np.allclose(body["q_values"], expected[0], atol=1e-5)
        batch = client.post("/sac/predict/batch", json={"states": windows}).json()
        assert batch["actions"] == np.argmax(expected, axis=1).tolist()
        flat = client.post("/sac/predict", json={"state": STATE})
        assert flat.status_code == 400 and "4 rows of 28" in flat.json()["detail"]
        short = client.post("/sac/predict", json={"state": windows[0][:3]})
        assert short.status_code == 400 and "(4, 28)" in short.json()["detail"]
        nan = client.post("/sac/predict", json={"state": [[1e39] * 28] * 4})
        assert nan.status_code == 400 and "not finite" in nan.json()["detail"]
        assert client.get("/sac/model/info").json()["input_shape"] == [4, 28]
        bench = client.post("/sac/benchmark", json={"batch_size": 2, "iterations": 5})
        assert bench.status_code == 200


def test_a_node_swaps_between_architectures_and_back(client_for: Client, model_root: Path) -> None:
    """sac_actor v1 -> dqn v2 -> sac_actor v3, each answering in its own shape."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        assert isinstance(
            client.post("/sac/predict", json={"state": STATE}).json()["action"], float
        )
        saved, _ = write_dqn(model_root, 2)
        bump_mtime(saved.path)
        assert client.post("/sac/model/reload").json()["version"] == 2
        assert "q_values" in client.post("/sac/predict", json={"state": STATE}).json()
        bump_mtime(write_checkpoint(model_root, 3).path, 2)
        assert client.post("/sac/model/reload").json()["version"] == 3
        body = client.post("/sac/predict", json={"state": STATE}).json()
        assert "q_values" not in body and isinstance(body["action"], float)


@pytest.mark.parametrize(
    ("architecture", "config", "reason"),
    [
        ("lstm_dqn_v1", {}, "unknown_architecture"),
        ("dqn", {"hidden": [32, 32], "payload": "rm -rf /"}, "invalid_config"),
        ("dqn", {"hidden": [32, 32], "lstm_hidden": 1 << 20}, "invalid_config"),
    ],
)
def test_a_refused_architecture_is_counted_and_the_served_model_stays(
    client_for: Client, model_root: Path, architecture: str, config: dict[str, Any], reason: str
) -> None:
    """A newer checkpoint of an unregistered architecture or a hostile config: 500 on
    reload with the reason, counted in fks_rejections_total, the old model still served."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        before = client.post("/sac/predict", json={"state": STATE}).json()
        saved, _ = write_dqn(model_root, 2)
        retag(saved.path, architecture, config)
        bump_mtime(saved.path)
        failed = client.post("/sac/model/reload")
        assert failed.status_code == 500 and reason in failed.json()["detail"]
        assert rejections(client, reason) >= 1
        after = client.post("/sac/predict", json={"state": STATE}).json()
        assert (after["version"], after["action"]) == (1, before["action"])


class Broken(nn.Module):
    """A user's module whose forward pass gives what the config asks: NaN or a wrong shape."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.layer = nn.Linear(28, 2)
        self.mode = mode
        self.input_shape = (28,)
        self.output_shape = (2,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x)
        if self.mode == "nan":
            return out * float("nan")
        if self.mode == "shape":
            return out[:, :1]
        raise RuntimeError("this module cannot run")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("nan", "non_finite"), ("shape", "probe_failed"), ("raise", "probe_failed")],
)
def test_a_user_module_that_fails_its_probe_is_refused(
    client_for: Client, model_root: Path, mode: str, reason: str
) -> None:
    """Verify before swap holds for any architecture: the probe pass with the declared input
    shape must give finite outputs of the declared shape."""
    register_architecture("broken_test", lambda c: Broken(c["mode"]), defaults={"mode": "nan"})
    write_checkpoint(model_root, 1)
    with client_for() as client:
        path = model_root / "model_2.pt"
        save_checkpoint(path, Broken(mode), architecture="broken_test", config={"mode": mode})
        bump_mtime(path)
        failed = client.post("/sac/model/reload")
        assert failed.status_code == 500 and reason in failed.json()["detail"]
        assert rejections(client, reason) >= 1
        assert client.get("/sac/model/info").json()["version"] == 1


def test_openapi_documents_both_answer_shapes_and_windowed_states(client_for: Client) -> None:
    """The predict routes answer a continuous or a discrete shape; state may be a window."""
    with client_for() as client:
        spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    answer = json.dumps(spec["paths"]["/sac/predict"]["post"]["responses"]["200"])
    assert "PredictResponse" in answer and "DiscretePredictResponse" in answer
    batch = json.dumps(spec["paths"]["/sac/predict/batch"]["post"]["responses"]["200"])
    assert "DiscreteBatchResponse" in batch
    assert {"action", "q_values"} <= set(schemas["DiscretePredictResponse"]["required"])
    assert schemas["DiscretePredictResponse"]["examples"]
    assert "window" in schemas["PredictRequest"]["properties"]["state"]["description"]
    assert {"architecture", "input_shape", "output_shape"} <= set(
        schemas["ModelInfo"]["properties"]
    )


def test_a_batch_over_the_activation_budget_is_413_with_the_largest_batch_allowed(
    client_for: Client, model_root: Path
) -> None:
    """A windowed dqn (16 steps of a 64-wide LSTM) under a 64 KiB FKS_MAX_ACTIVATION_BYTES:
    /sac/model/info reports its cost a row and the largest batch; one row more is 413 naming
    the limit and that batch, which itself answers 200; /sac/benchmark holds the same (400,
    as over its other caps)."""
    write_dqn(model_root, 1, window=16, lstm_hidden=64)
    windows = np.zeros((64, 16, 28)).tolist()
    with client_for(max_activation_bytes=64 << 10) as client:
        info = client.get("/sac/model/info").json()
        per_row, largest = info["activation_bytes_per_row"], info["max_batch_rows"]
        assert per_row >= 16 * 64 * 4 and 0 < largest == (64 << 10) // per_row < 64
        over = client.post("/sac/predict/batch", json={"states": windows[: largest + 1]})
        assert over.status_code == 413
        detail = over.json()["detail"]
        assert "FKS_MAX_ACTIVATION_BYTES" in detail and f"at most {largest} rows" in detail
        ok = client.post("/sac/predict/batch", json={"states": windows[:largest]})
        assert ok.status_code == 200 and ok.json()["batch_size"] == largest
        bench = {"batch_size": largest + 1, "warmup": 0, "iterations": 1}
        refused = client.post("/sac/benchmark", json=bench)
        assert refused.status_code == 400 and "FKS_MAX_ACTIVATION_BYTES" in refused.json()["detail"]
        bench["batch_size"] = largest
        assert client.post("/sac/benchmark", json=bench).status_code == 200


def test_rows_that_attend_to_rows_take_the_largest_batch_measured_within_the_budget(
    client_for: Client, model_root: Path
) -> None:
    """A user module whose rows attend to each other (rows² scores, a few hundred bytes a row
    at 8 rows) under a 1 MiB FKS_MAX_ACTIVATION_BYTES: /sac/model/info names a batch far
    below FKS_MAX_BATCH_ROWS, whose cost a row is what that batch holds; it answers 200, one
    row more is 413 naming the limit and the batch (400 for /sac/benchmark)."""
    register_architecture(
        "attend_rows_test", lambda c: AttendRows(c["width"]), defaults={"width": 16}
    )
    torch.manual_seed(0)
    path = model_root / "model_1.safetensors"
    save_checkpoint(path, AttendRows(16), architecture="attend_rows_test", config={"width": 16})
    with client_for(max_activation_bytes=1 << 20) as client:
        info = client.get("/sac/model/info").json()
        per_row, largest = info["activation_bytes_per_row"], info["max_batch_rows"]
        assert info["architecture"] == "attend_rows_test" and 64 < largest < 1024
        assert 2048 < per_row and largest * per_row <= 1 << 20
        over = client.post("/sac/predict/batch", json={"states": [STATE] * (largest + 1)})
        assert over.status_code == 413
        detail = over.json()["detail"]
        assert "FKS_MAX_ACTIVATION_BYTES" in detail and f"at most {largest} rows" in detail
        ok = client.post("/sac/predict/batch", json={"states": [STATE] * largest})
        assert ok.status_code == 200 and ok.json()["batch_size"] == largest
        bench = {"batch_size": largest + 1, "warmup": 0, "iterations": 1}
        assert client.post("/sac/benchmark", json=bench).status_code == 400


def test_a_wide_dqn_cannot_make_a_small_batch_hold_half_a_gigabyte(
    client_for: Client, model_root: Path
) -> None:
    """Not only windows amplify: a 2 MB dqn with one 16,384-wide layer holds 128 KiB a row,
    so FKS_MAX_BATCH_ROWS (4,096) rows would hold 512 MiB. With the default budget they are
    a 413 and the largest batch (511 rows) is said."""
    write_dqn(model_root, 1, hidden=(16384,))
    with client_for() as client:
        largest = client.get("/sac/model/info").json()["max_batch_rows"]
        assert 400 < largest < 600
        over = client.post("/sac/predict/batch", json={"states": [STATE] * 4096})
        assert over.status_code == 413 and f"at most {largest} rows" in over.json()["detail"]


def test_the_default_actor_still_takes_batches_of_the_row_limit(
    client_for: Client, model_root: Path
) -> None:
    """28 -> 256 -> 256 -> 1 holds ~2 KiB a row: 4,096 rows (FKS_MAX_BATCH_ROWS) answer 200
    under the default FKS_MAX_ACTIVATION_BYTES, as before it existed."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        assert client.get("/sac/model/info").json()["max_batch_rows"] == 4096
        body = client.post("/sac/predict/batch", json={"states": [STATE] * 4096}).json()
        assert body["batch_size"] == 4096


def test_a_model_whose_single_row_is_over_the_budget_is_refused_and_counted(
    client_for: Client, model_root: Path
) -> None:
    """A dqn whose one row holds 32 KiB (128 steps of a 64-wide LSTM), under a 16 KiB budget:
    500 on reload with too_many_activations, counted; the served actor stays."""
    write_checkpoint(model_root, 1)
    with client_for(max_activation_bytes=16 << 10) as client:
        saved, _ = write_dqn(model_root, 2, window=128, lstm_hidden=64)
        bump_mtime(saved.path)
        failed = client.post("/sac/model/reload")
        assert failed.status_code == 500
        assert "too_many_activations" in failed.json()["detail"]
        assert rejections(client, "too_many_activations") == 1
        assert client.post("/sac/predict", json={"state": STATE}).json()["version"] == 1
