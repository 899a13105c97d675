"""The fast load: the built-in actor served from its arrays, with every check still made."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from common.checkpoint import build_policy, load_checkpoint, save_checkpoint
from common.checkpoint import digest as checkpoint_digest
from common.checkpoint.digest import PARALLEL_BYTES
from common.errors import CheckpointError, CheckpointRejected
from common.policy import PolicyConfig, SACActor
from common.settings import Settings
from subscriber.fetching.roots import ModelRoots
from subscriber.model.inference import EagerRunner, TorchScriptRunner
from subscriber.model.loader import LoadOptions, prepare_checkpoint
from subscriber.model.numpy_runner import NumpyRunner, actor_arrays
from subscriber.runtime.lane import LoadLane
from subscriber.runtime.threads import inherit_torch_threads

DATA = Path(__file__).parent / "data"
SMALL = PolicyConfig(hidden=(32, 32))


def roots_for(root: Path) -> ModelRoots:
    return ModelRoots(Settings(model_dir=root, default_model_dir=root))


def saved_actor(root: Path, name: str, config: PolicyConfig = SMALL, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(root / name, SACActor(config), version=1).path


def torch_actions(path: Path, states: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """What torch's own SACActor, built from the file, answers."""
    policy = build_policy(load_checkpoint(path))
    with torch.inference_mode():
        return policy.act(torch.from_numpy(states)).numpy()


STATES = np.random.default_rng(7).standard_normal((64, 28)).astype(np.float32)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_the_default_load_builds_no_module_and_answers_as_torch(
    model_root: Path, monkeypatch: pytest.MonkeyPatch, jit: bool, suffix: str
) -> None:
    """Whatever STAT_PAIR_RL_JIT says, the numpy runner serves, built without any SACActor,
    and answers what torch's module answers within 1e-5."""
    path = saved_actor(model_root, f"model_1.{suffix}")
    expected = torch_actions(path, STATES)

    def no_module(*args: object, **kwargs: object) -> None:
        raise AssertionError("the fast load built an nn.Module")

    monkeypatch.setattr(SACActor, "__init__", no_module)
    prepared = prepare_checkpoint(path, roots_for(model_root), LoadOptions(jit=jit))
    assert prepared.policy is None and isinstance(prepared.runner, NumpyRunner)
    assert prepared.runner.compiled is jit and prepared.runner.backend == "numpy"
    assert np.abs(prepared.runner(STATES) - expected).max() <= 1e-5


@pytest.mark.parametrize(("jit", "runner"), [(False, EagerRunner), (True, TorchScriptRunner)])
def test_the_torch_backend_builds_the_module(
    model_root: Path, jit: bool, runner: type[object]
) -> None:
    """FKS_COMPILE_BACKEND=torchscript: the module is built, eager or compiled."""
    path = saved_actor(model_root, "model_1.safetensors")
    options = LoadOptions(jit=jit, backend="torchscript")
    prepared = prepare_checkpoint(path, roots_for(model_root), options)
    assert isinstance(prepared.policy, SACActor) and isinstance(prepared.runner, runner)
    assert np.abs(prepared.runner(STATES) - torch_actions(path, STATES)).max() <= 1e-5


def test_a_first_release_pt_file_is_served_by_the_fast_load(tmp_path: Path) -> None:
    """tests/data/model_first_release.pt goes through the fast load and answers as before."""
    path = tmp_path / "model_first_release.pt"
    path.write_bytes((DATA / "model_first_release.pt").read_bytes())
    prepared = prepare_checkpoint(path, roots_for(tmp_path), LoadOptions())
    assert prepared.policy is None
    state = torch.linspace(-1, 1, 28).reshape(1, 28).numpy()
    assert float(prepared.runner(state)[0, 0]) == pytest.approx(-0.01590520143508911, abs=1e-6)
    assert np.abs(prepared.runner(STATES) - torch_actions(path, STATES)).max() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_are_served_as_torch_serves_them(
    model_root: Path, dtype: torch.dtype
) -> None:
    """float16, bfloat16 and float64 weights become float32, as a built module holds them."""
    torch.manual_seed(1)
    actor = SACActor(SMALL).to(dtype)
    path = save_checkpoint(model_root / "model_1.safetensors", actor, version=1).path
    prepared = prepare_checkpoint(path, roots_for(model_root), LoadOptions())
    assert prepared.policy is None
    assert all(w.dtype == np.float32 for w, _ in prepared.runner.arrays.trunk)  # type: ignore[attr-defined]
    assert np.abs(prepared.runner(STATES) - torch_actions(path, STATES)).max() <= 1e-5


def test_weights_of_another_shape_are_refused_by_name() -> None:
    """A tensor missing, extra or of the wrong shape is a shape_mismatch, never served."""
    state_dict = SACActor(SMALL).state_dict()
    wrong = dict(state_dict, **{"mean.weight": torch.zeros(1, 31)})
    with pytest.raises(CheckpointRejected, match=r"mean\.weight \[1, 31\]") as caught:
        actor_arrays(SMALL, wrong)
    assert caught.value.reason == "shape_mismatch"
    missing = {k: v for k, v in state_dict.items() if k != "log_std.bias"}
    with pytest.raises(CheckpointRejected, match="log_std.bias"):
        actor_arrays(SMALL, missing)
    extra = dict(state_dict, **{"trunk.4.weight": torch.zeros(32, 32)})
    with pytest.raises(CheckpointRejected, match="trunk.4.weight"):
        actor_arrays(SMALL, extra)


def test_weights_that_overflow_the_probe_are_refused(model_root: Path) -> None:
    """Finite weights whose forward pass overflows: non_finite, from the fast load's probe."""
    actor = SACActor(SMALL)
    with torch.no_grad():
        for p in actor.parameters():
            p.fill_(1e30)
    path = save_checkpoint(model_root / "model_1.safetensors", actor, version=1).path
    with pytest.raises(CheckpointRejected) as caught:
        prepare_checkpoint(path, roots_for(model_root), LoadOptions())
    assert caught.value.reason == "non_finite"


def test_a_numpy_runner_that_disagrees_is_not_served(
    model_root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Off by more than 1e-5 from the probe's reference pass: the module is built and served
    eagerly, and the reason is logged."""
    path = saved_actor(model_root, "model_1.safetensors")
    right = NumpyRunner.__call__

    def off(self: NumpyRunner, states: Any, deterministic: bool = True) -> Any:
        return right(self, states, deterministic) + 1e-4

    monkeypatch.setattr(NumpyRunner, "__call__", off)
    with caplog.at_level(logging.WARNING):
        prepared = prepare_checkpoint(path, roots_for(model_root), LoadOptions(jit=True))
    assert isinstance(prepared.runner, EagerRunner) and prepared.policy is not None
    assert not prepared.runner.compiled
    assert "differs from the reference" in caplog.text


def test_sampled_actions_follow_the_policy_s_gaussian() -> None:
    """deterministic=false: tanh of mean + std * noise, with torch's mean and std."""
    torch.manual_seed(2)
    actor = SACActor(SMALL).eval()
    runner = NumpyRunner.from_policy(actor)
    state = STATES[:1]
    samples = runner(np.repeat(state, 20_000, axis=0), deterministic=False)[:, 0]
    assert np.all(np.abs(samples) <= 1.0) and len(np.unique(samples)) > 19_000
    pre = np.arctanh(np.clip(samples.astype(np.float64), -1 + 1e-7, 1 - 1e-7))
    with torch.inference_mode():
        mean, log_std = actor(torch.from_numpy(state))
    std = float(log_std.exp())
    assert pre.mean() == pytest.approx(float(mean), abs=4 * std / np.sqrt(20_000) + 1e-3)
    assert pre.std() == pytest.approx(std, rel=0.05)


def test_the_load_lane_gives_its_thread_the_process_s_torch_threads() -> None:
    """A lane worker runs torch's BLAS with the process's thread limit, not OpenMP's default
    (a fresh thread's team would spin against the requests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lane = LoadLane(5.0, thread_init=inherit_torch_threads)

        def openmp_threads() -> list[int]:
            return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]

        seen = lane.run(openmp_threads, what="test")
        assert seen and all(n == 1 for n in seen)
        assert threading.current_thread() is threading.main_thread()
        lane.close()
    finally:
        torch.set_num_threads(before)


BIG = PolicyConfig(hidden=(512, 512))  # ~1.1 MB: hashed beside its decoding


def test_a_large_safetensors_is_hashed_beside_its_decoding_and_still_verified(
    model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over PARALLEL_BYTES the sha256 runs on its helper thread; a mismatch is still refused
    before anything is returned, and it is the reason given even when the bytes are bad."""
    torch.manual_seed(4)
    saved = save_checkpoint(model_root / "model_1.safetensors", SACActor(BIG), version=1)
    assert saved.size >= PARALLEL_BYTES
    threads: list[str] = []
    real = checkpoint_digest.sha256_hex

    def spy(data: bytes) -> str:
        threads.append(threading.current_thread().name)
        return real(data)

    monkeypatch.setattr(checkpoint_digest, "sha256_hex", spy)
    loaded = load_checkpoint(saved.path, expected_sha256=saved.sha256)
    assert loaded.sha256 == saved.sha256 and threads[-1].startswith("fks-sha256")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved.path, expected_sha256="0" * 64)
    assert caught.value.reason == "sha256_mismatch"
    data = bytearray(saved.path.read_bytes())
    data[8:9] = b"["  # the header no longer parses
    bad = model_root / "model_2.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(bad, expected_sha256=saved.sha256)
    assert caught.value.reason == "sha256_mismatch"
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(bad, expected_sha256=checkpoint_digest.sha256_hex(bytes(data)))
    assert caught.value.reason == "bad_header"


def test_a_large_pt_is_hashed_before_it_is_unpickled(
    model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .pt whose bytes do not match never reaches torch.load, however large."""
    torch.manual_seed(4)
    saved = save_checkpoint(model_root / "model_1.pt", SACActor(BIG), version=1)
    assert saved.size >= PARALLEL_BYTES
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(saved.path, expected_sha256="0" * 64)
    assert caught.value.reason == "sha256_mismatch"
