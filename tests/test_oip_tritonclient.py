"""`tritonclient` (the Open Inference Protocol's client that Triton ships; nobody here wrote
it) against a real `fks serve` on a real socket with a real redis-server (SPEC §14): health,
metadata, binary and JSON inference equal to /sac/predict for a sac_actor and a dqn, and a
swap during a stream of v2 requests that fails none and mixes no models."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from fks.redis_server import free_port
from publisher import notify_checkpoint
from tests.helpers import wait_for, write_checkpoint
from tests.test_api_architectures import q_values, write_dqn

ROWS = np.random.default_rng(7).standard_normal((4, 28)).astype(np.float32)


@contextmanager
def fks_serve(tmp_path: Path, root: Path, redis_url: str, *args: str, **env: str) -> Iterator[str]:
    """`fks serve [args]` on a free port over ``root``: its host:port, once it is ready."""
    port = free_port()
    environ = {**os.environ, "REDIS_URL": redis_url, "STAT_PAIR_RL_DIR": str(root),
               "FKS_DEFAULT_DIR": str(tmp_path / "default"), **env}  # fmt: skip
    command = [sys.executable, "-m", "fks", "serve", "--port", str(port), "--log-level",
               "warning", *args]  # fmt: skip
    log = open(tmp_path / f"serve-{port}.log", "wb")  # noqa: SIM115 - closed below
    with subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT) as proc:
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: _answers(url + "/v2/health/ready"), timeout=60, every=0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(20)
            log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def state_input(rows: np.ndarray[Any, Any], binary: bool) -> triton.InferInput:
    given = triton.InferInput("state", list(rows.shape), "FP32")
    given.set_data_from_numpy(rows, binary_data=binary)
    return given


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_drives_a_sac_actor_like_sac_predict(
    tmp_path: Path, model_root: Path, redis_url: str, binary: bool
) -> None:
    """Live, ready, metadata, and infer (binary tensors both ways, or JSON both ways): the
    actions are /sac/predict/batch's, to the bit."""
    write_checkpoint(model_root, 3)
    with fks_serve(tmp_path, model_root, redis_url) as host:
        client = triton.InferenceServerClient(host)
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("default") and client.is_model_ready("default", "3")
        assert not client.is_model_ready("default", "4") and not client.is_model_ready("x")
        meta = client.get_model_metadata("default")
        assert meta["versions"] == ["3"] and meta["inputs"][0]["shape"] == [-1, 28]
        assert client.get_server_metadata()["extensions"] == [
            "binary_tensor_data", "model_repository"
        ]  # fmt: skip
        wanted = [triton.InferRequestedOutput("action", binary_data=binary)]
        result = client.infer("default", [state_input(ROWS, binary)], outputs=wanted,
                              request_id="r1")  # fmt: skip
        expected = httpx.post(f"http://{host}/sac/predict/batch",
                              json={"states": ROWS.tolist()}).json()["actions"]  # fmt: skip
        assert result.as_numpy("action").tolist() == [[np.float32(a)] for a in expected]
        answer = result.get_response()
        assert answer["model_version"] == "3" and answer["id"] == "r1"
        assert ("binary_data_size" in answer["outputs"][0].get("parameters", {})) is binary
        single = httpx.post(f"http://{host}/sac/predict",
                            json={"state": ROWS[0].tolist()}).json()["action"]  # fmt: skip
        default = client.infer("default", [state_input(ROWS[:1], True)])  # the client's default
        assert default.as_numpy("action")[0, 0] == np.float32(single)
        for algorithm in ("gzip", "deflate"):  # a compressed request; the answer comes plain
            packed = client.infer("default", [state_input(ROWS, binary)],
                                  request_compression_algorithm=algorithm,
                                  response_compression_algorithm=algorithm)  # fmt: skip
            assert packed.as_numpy("action").tolist() == result.as_numpy("action").tolist()
        client.close()


def test_tritonclient_drives_a_dqn_and_reads_the_errors(
    tmp_path: Path, model_root: Path, redis_url: str
) -> None:
    """A dqn: action INT64 (the argmax) and q_values; a wrong shape, an unknown model and an
    unknown version come back as InferenceServerException with the server's reason."""
    write_dqn(model_root, 2, n_actions=3)
    with fks_serve(tmp_path, model_root, redis_url) as host:
        client = triton.InferenceServerClient(host)
        result = client.infer("default", [state_input(ROWS, True)], model_version="2")
        q_values = result.as_numpy("q_values")
        expected = httpx.post(f"http://{host}/sac/predict/batch",
                              json={"states": ROWS.tolist()}).json()  # fmt: skip
        assert q_values.tolist() == np.asarray(expected["q_values"], np.float32).tolist()
        assert result.as_numpy("action").tolist() == expected["actions"]
        assert result.as_numpy("action").dtype == np.int64
        with pytest.raises(InferenceServerException, match=r"shape \[4, 27\]") as bad:
            client.infer("default", [state_input(ROWS[:, :27].copy(), True)])
        assert bad.value.status() == "400"
        with pytest.raises(InferenceServerException, match="unknown model 'other'") as unknown:
            client.infer("other", [state_input(ROWS, True)])
        assert unknown.value.status() == "404"
        with pytest.raises(InferenceServerException, match="no version '9'"):
            client.infer("default", [state_input(ROWS, True)], model_version="9")
        index = client.get_model_repository_index()
        assert index == [{"name": "default", "version": "2", "state": "READY", "reason": ""}]
        client.close()


def test_a_swap_during_a_stream_of_v2_requests_fails_none_and_mixes_no_models(
    tmp_path: Path, model_root: Path, incoming: Path, redis_url: str
) -> None:
    """Two clients stream binary infers while the trainer publishes versions 2..6: every
    answer is 200, and its actions are exactly those of the version it names (never a mix
    of two models within one batch)."""
    expected: dict[str, list[float]] = {}
    first = write_checkpoint(model_root, 1)
    with fks_serve(tmp_path, model_root, redis_url) as host:
        url = f"http://{host}/sac/predict/batch"

        def actions_of_current() -> tuple[str, list[float]]:
            body = httpx.post(url, json={"states": ROWS.tolist()}).json()
            return str(body["version"]), [float(np.float32(a)) for a in body["actions"]]

        wait_for(lambda: actions_of_current()[0] == "1", timeout=20)
        expected["1"] = actions_of_current()[1]
        answers: list[tuple[str, list[float]]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def stream() -> None:
            client = triton.InferenceServerClient(host)
            try:
                while not stop.is_set():
                    result = client.infer("default", [state_input(ROWS, True)])
                    version = result.get_response()["model_version"]
                    answers.append((version, result.as_numpy("action")[:, 0].tolist()))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=stream) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            for version in range(2, 7):
                saved = write_checkpoint(incoming, version)
                result = notify_checkpoint(saved.path, version=version, redis_url=redis_url,
                                           wait_for="all", timeout=10)  # fmt: skip
                assert result.acks is not None and result.acks.ok, result.acks
                expected[str(version)] = actions_of_current()[1]
        finally:
            stop.set()
            for thread in threads:
                thread.join(20)
        assert not errors, errors
        assert first.path.exists()
        seen = {version for version, _ in answers}
        assert len(answers) > 20 and "6" in seen, seen
        for named, actions in answers:
            assert actions == expected[named], named


def test_tritonclient_drives_a_two_model_node_and_each_model_swaps_alone(
    tmp_path: Path, redis_url: str
) -> None:
    """SPEC §13-14: one `fks serve` of a sac_actor (``alpha``, /sac's) and a dqn (``beta``).
    tritonclient sees both ready, reads each one's metadata, and gets each one's answers:
    alpha's equal /sac/predict/batch's, beta's the dqn's own q-values and argmax. While two
    clients stream infers to both, beta is swapped three times: no answer fails, alpha's
    every answer is version 1's, and each of beta's is exactly the version it names."""
    root = tmp_path / "models"
    alpha, beta = root / "alpha", root / "beta"
    alpha.mkdir(parents=True)
    beta.mkdir()
    write_checkpoint(alpha, 1)
    modules = {"1": write_dqn(beta, 1, n_actions=3)[1]}
    env = {"FKS_INSTANCE_IDS": "alpha,beta",
           "FKS_DEFAULT_DIR": str(tmp_path / "default" / "{instance}")}  # fmt: skip
    with fks_serve(tmp_path, root / "{instance}", redis_url, **env) as host:
        client = triton.InferenceServerClient(host)
        assert client.is_model_ready("alpha") and client.is_model_ready("beta", "1")
        index = client.get_model_repository_index()
        assert [(m["name"], m["version"], m["state"]) for m in index] == [
            ("alpha", "1", "READY"), ("beta", "1", "READY")
        ]  # fmt: skip
        assert [o["name"] for o in client.get_model_metadata("alpha")["outputs"]] == ["action"]
        beta_out = client.get_model_metadata("beta")["outputs"]
        assert [(o["name"], o["datatype"]) for o in beta_out] == [
            ("action", "INT64"), ("q_values", "FP32")
        ]  # fmt: skip
        sac = httpx.post(f"http://{host}/sac/predict/batch", json={"states": ROWS.tolist()})
        alpha_actions = [[np.float32(a)] for a in sac.json()["actions"]]
        assert client.infer("alpha", [state_input(ROWS, True)]).as_numpy(
            "action").tolist() == alpha_actions  # fmt: skip

        def beta_matches(result: Any) -> None:
            version = result.get_response()["model_version"]
            expected = q_values(modules[version], ROWS.tolist())
            np.testing.assert_allclose(result.as_numpy("q_values"), expected, atol=1e-5)
            assert result.as_numpy("action").tolist() == expected.argmax(axis=1).tolist()

        beta_matches(client.infer("beta", [state_input(ROWS, False)]))
        client.close()
        answers: list[tuple[str, Any]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def stream(name: str) -> None:
            own = triton.InferenceServerClient(host)
            try:
                while not stop.is_set():
                    answers.append((name, own.infer(name, [state_input(ROWS, True)])))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                own.close()

        threads = [threading.Thread(target=stream, args=(n,)) for n in ("alpha", "beta")]
        for thread in threads:
            thread.start()
        try:
            for version in (2, 3, 4):
                saved, modules[str(version)] = write_dqn(beta, version, n_actions=3)
                result = notify_checkpoint(
                    saved.path, version=version, instance_id="beta", redis_url=redis_url,
                    wait_for="all", timeout=10,
                )  # fmt: skip
                assert result.acks is not None and result.acks.ok, result.acks

            def beta_on_4() -> bool:
                last = next(r for n, r in reversed(answers) if n == "beta")
                return bool(last.get_response()["model_version"] == "4")

            wait_for(beta_on_4, timeout=10)
        finally:
            stop.set()
            for thread in threads:
                thread.join(20)
        assert not errors, errors
        seen = {name: {r.get_response()["model_version"] for n, r in answers if n == name}
                for name in ("alpha", "beta")}  # fmt: skip
        assert seen["alpha"] == {"1"} and "4" in seen["beta"], seen
        for name, result in answers:
            if name == "alpha":
                assert result.as_numpy("action").tolist() == alpha_actions
            else:
                beta_matches(result)
