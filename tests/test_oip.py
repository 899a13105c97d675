"""The Open Inference Protocol under /v2 (SPEC §14): metadata, inference as JSON and as
binary tensors, versions, the repository extension, and every refusal as {"error": ...}
with nothing served changed. The app and its lifespan run in-process here (real checkpoint
files); tests/test_oip_tritonclient.py drives a real server with tritonclient."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import SecretStr

from common.settings import Settings
from subscriber import mount
from subscriber.web.oip.tensors import OipError, parse_request
from tests.helpers import bump_mtime, write_checkpoint
from tests.test_api_architectures import write_dqn

Client = Callable[..., Any]
STATE = [0.1] * 28
HEADER = "Inference-Header-Content-Length"


def tensor(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    return {"name": "state", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
            "data": rows, **extra}  # fmt: skip


def binary_body(rows: np.ndarray[Any, Any], **request: Any) -> tuple[bytes, dict[str, str]]:
    """A request as tritonclient sends it by default: the JSON, then the raw float32 rows."""
    spec = {"name": "state", "shape": list(rows.shape), "datatype": "FP32",
            "parameters": {"binary_data_size": rows.nbytes}}  # fmt: skip
    head = json.dumps({"inputs": [spec], **request}).encode()
    return head + rows.astype("<f4").tobytes(), {HEADER: str(len(head))}


def split_answer(response: Any) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """The JSON part of an answer and each binary output as an array of its shape."""
    size = int(response.headers.get(HEADER, len(response.content)))
    head = json.loads(response.content[:size])
    arrays, offset = {}, size
    for out in head["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[out["datatype"]]
        if "data" in out:
            arrays[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
            continue
        length = out["parameters"]["binary_data_size"]
        chunk = response.content[offset : offset + length]
        arrays[out["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(out["shape"])
        offset += length
    assert offset == len(response.content) or HEADER not in response.headers
    return head, arrays


def infer(client: TestClient, *rows: list[float], path: str = "default", **req: Any) -> Any:
    return client.post(f"/v2/models/{path}/infer", json={"inputs": [tensor(list(rows))], **req})


def test_server_metadata_health_and_model_metadata(client_for: Client, model_root: Path) -> None:
    """GET /v2 names the server and its extensions; live and ready; a sac_actor's metadata
    says FP32 [-1, 28] in, FP32 [-1, 1] out, its version as a string."""
    write_checkpoint(model_root, 3)
    with client_for() as client:
        server = client.get("/v2").json()
        assert server["name"] == "fks-checkpoint-notify" and server["version"]
        assert server["extensions"] == ["binary_tensor_data", "model_repository"]
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/default").json() == {
            "name": "default",
            "versions": ["3"],
            "platform": "fks_sac_actor",
            "inputs": [{"name": "state", "datatype": "FP32", "shape": [-1, 28]}],
            "outputs": [{"name": "action", "datatype": "FP32", "shape": [-1, 1]}],
        }
        assert client.get("/v2/models/default/ready").status_code == 200
        assert client.get("/v2/models/default/versions/3/ready").status_code == 200


def test_a_dqn_declares_and_answers_its_argmax_and_q_values(
    client_for: Client, model_root: Path
) -> None:
    """dqn: action INT64 [-1] (the argmax) and q_values FP32 [-1, n_actions], the same as
    /sac/predict/batch gives for the same rows."""
    write_dqn(model_root, 1, n_actions=4)
    rows = np.random.default_rng(0).standard_normal((5, 28)).astype(np.float32).tolist()
    with client_for() as client:
        meta = client.get("/v2/models/default").json()
        assert meta["platform"] == "fks_dqn"
        assert meta["outputs"] == [
            {"name": "action", "datatype": "INT64", "shape": [-1]},
            {"name": "q_values", "datatype": "FP32", "shape": [-1, 4]},
        ]
        head, out = split_answer(infer(client, *rows))
        sac = client.post("/sac/predict/batch", json={"states": rows}).json()
        assert out["action"].tolist() == sac["actions"] and out["action"].shape == (5,)
        assert out["q_values"].tolist() == np.asarray(sac["q_values"], np.float32).tolist()
        assert [o["datatype"] for o in head["outputs"]] == ["INT64", "FP32"]


def test_json_and_binary_inference_answer_what_sac_predict_answers(
    client_for: Client, model_root: Path
) -> None:
    """One row and a batch, as JSON and as binary tensors: the same float32 actions as
    /sac/predict; `id` is echoed, model_version is the served version as a string."""
    write_checkpoint(model_root, 2)
    rows = np.random.default_rng(1).standard_normal((8, 28)).astype(np.float32)
    with client_for() as client:
        single = client.post("/sac/predict", json={"state": rows[0].tolist()}).json()["action"]
        batch = client.post("/sac/predict/batch", json={"states": rows.tolist()}).json()
        head, out = split_answer(infer(client, rows[0].tolist(), id="req-1"))
        assert head["model_name"] == "default" and head["model_version"] == "2"
        assert head["id"] == "req-1" and HEADER not in head
        assert out["action"].tolist() == [[np.float32(single)]]
        body, headers = binary_body(rows, parameters={"binary_data_output": True})
        answer = client.post("/v2/models/default/infer", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/octet-stream"
        head, out = split_answer(answer)
        assert "id" not in head and head["outputs"][0]["parameters"]["binary_data_size"] == 32
        assert out["action"][:, 0].tolist() == np.asarray(batch["actions"], np.float32).tolist()


def test_an_outputs_own_binary_flag_wins_over_the_requests(
    client_for: Client, model_root: Path
) -> None:
    """binary_data on an output overrides binary_data_output; with neither, JSON."""
    write_dqn(model_root, 1)
    rows = np.full((2, 28), 0.2, np.float32)
    outputs = [{"name": "q_values", "parameters": {"binary_data": False}}, {"name": "action"}]
    with client_for() as client:
        body, headers = binary_body(rows, outputs=outputs,
                                    parameters={"binary_data_output": True})  # fmt: skip
        head, out = split_answer(client.post("/v2/models/default/infer", content=body,
                                             headers=headers))  # fmt: skip
        assert [o["name"] for o in head["outputs"]] == ["q_values", "action"]
        assert "data" in head["outputs"][0] and "parameters" in head["outputs"][1]
        assert out["q_values"].shape == (2, 3) and out["action"].shape == (2,)
        plain = infer(client, STATE)
        assert plain.headers["content-type"] == "application/json" and HEADER not in plain.headers


def test_a_named_version_is_the_served_or_the_rollback_one_and_nothing_else(
    client_for: Client, model_root: Path
) -> None:
    """After a swap 1 → 2, /versions/2 answers with 2, /versions/1 with the model kept for
    rollback (its own actions), any other version 404; metadata lists both."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        first = split_answer(infer(client, STATE))[1]["action"]
        newer = write_checkpoint(model_root, 2)
        bump_mtime(newer.path)
        assert client.post("/sac/model/reload").json()["version"] == 2
        assert client.get("/v2/models/default").json()["versions"] == ["2", "1"]
        head, out = split_answer(infer(client, STATE, path="default/versions/1"))
        assert head["model_version"] == "1" and out["action"].tolist() == first.tolist()
        head, out = split_answer(infer(client, STATE, path="default/versions/2"))
        assert head["model_version"] == "2" and out["action"].tolist() != first.tolist()
        missing = infer(client, STATE, path="default/versions/7")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "model 'default' has no version '7'; it answers for 2, 1"
        }
        assert client.get("/v2/models/default/versions/7/ready").status_code == 404
        assert client.get("/v2/models/default/versions/1").json()["versions"] == ["1"]


def _raw(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post("/v2/models/default/infer", content=body, headers=headers)


def _send(client: TestClient, *inputs: dict[str, Any]) -> Any:
    return client.post("/v2/models/default/infer", json={"inputs": list(inputs)})


def _binary(client: TestClient, rows: int, *, size: int | None = None, extra: bytes = b"",
            cut: int = 0, shape: list[int] | None = None) -> Any:  # fmt: skip
    """``rows`` zero states as binary data; ``size``: the binary_data_size it claims (default
    the true one), with ``shape`` if given; ``extra`` appended, ``cut`` bytes missing."""
    body, headers = binary_body(np.zeros((rows, 28), np.float32))
    if size is not None:
        spec = {"name": "state", "shape": shape or [rows, 28], "datatype": "FP32",
                "parameters": {"binary_data_size": size}}  # fmt: skip
        head = json.dumps({"inputs": [spec]}).encode()
        body, headers = head + b"\0" * size, {HEADER: str(len(head))}
    return _raw(client, body[: len(body) - cut] + extra, **headers)


def _with(**fields: Any) -> dict[str, Any]:
    return {**tensor([STATE]), **fields}


NAN_BODY = json.dumps({"inputs": [tensor([[float("nan")] + STATE[1:]])]}).encode()
# fmt: off
HOSTILE: list[tuple[str, Callable[[TestClient], Any], int, str]] = [
    ("not JSON", lambda c: _raw(c, b"{nope"), 400, "not JSON"),
    ("a list", lambda c: _raw(c, b"[]"), 400, "JSON object"),
    ("no inputs", lambda c: _send(c), 400, "non-empty"),
    ("wrong name", lambda c: _send(c, _with(name="obs")), 400, "one input, 'state'"),
    ("two inputs", lambda c: _send(c, _with(), _with(name="x")), 400, "one input"),
    ("same input twice", lambda c: _send(c, _with(), _with()), 400, "given twice"),
    ("FP64", lambda c: _send(c, _with(datatype="FP64")), 400, "FP32, not FP64"),
    ("BYTES", lambda c: _send(c, _with(datatype="BYTES")), 400, "is not one of"),
    ("27 values", lambda c: infer(c, STATE[:27]), 400, "shape [1, 27]"),
    ("shape lies", lambda c: _send(c, _with(shape=[2, 28])), 400, "28 values for shape [2, 28]"),
    ("no rows", lambda c: _send(c, _with(shape=[0, 28], data=[])), 400, "shape [0, 28]"),
    ("negative dim", lambda c: _send(c, _with(shape=[-1, 28])), 400, "non-negative"),
    ("ragged", lambda c: _send(c, _with(data=[STATE, STATE[:3]])), 400, "regular array"),
    ("strings", lambda c: _send(c, _with(data=["0.1"] * 28)), 400, "must hold numbers"),
    ("booleans", lambda c: _send(c, _with(data=[True] * 28)), 400, "must hold numbers"),
    ("NaN", lambda c: _raw(c, NAN_BODY), 400, "[0][0] is not finite"),
    ("nested too deep", lambda c: _raw(c, b"[" * 100_000 + b"]" * 100_000), 400, "not JSON"),
    ("an integer past int64", lambda c: _send(c, _with(data=[10**30] * 28)), 400,
     "must hold numbers for datatype FP32"),
    ("1e39", lambda c: infer(c, [*STATE[:5], 1e39, *STATE[6:]]), 400, "[0][5] is not finite"),
    ("header over the body", lambda c: _raw(c, b"{}", **{HEADER: "3"}), 400, "byte count"),
    ("header not a number", lambda c: _raw(c, b"{}", **{HEADER: "-1"}), 400, "byte count"),
    ("bytes too few", lambda c: _binary(c, 2, cut=4), 400, "announced"),
    ("bytes left over", lambda c: _binary(c, 1, extra=b"x"), 400, "1 bytes of binary data"),
    ("size not the shape's", lambda c: _binary(c, 1, size=4), 400, "not the 112 bytes"),
    ("65 dimensions", lambda c: _send(c, _with(shape=[1] * 65, data=[1.0])), 400,
     "65 dimensions (at most 32)"),
    ("a huge dimension beside a 0", lambda c: _send(c, _with(shape=[2**63, 0], data=[])), 400,
     "more elements than the body holds"),
    ("huge dimensions, binary", lambda c: _binary(c, 1, size=4, shape=[10**2200, 10**2200]),
     400, "more elements than the body holds"),
    ("many huge dimensions", lambda c: _send(c, _with(shape=[10**4000] * 30, data=[1.0])), 400,
     "more elements than the body holds"),
    ("header of 5000 digits", lambda c: _raw(c, b"{}", **{HEADER: "1" * 5000}), 400,
     "byte count"),
    ("gzip that is not", lambda c: _raw(c, b"{}", **{"Content-Encoding": "gzip"}), 400,
     "not gzip data"),
    ("a gzip bomb", lambda c: _raw(c, gzip.compress(b" " * (9 << 20)),
                                   **{"Content-Encoding": "gzip"}), 413, "inflates past"),
    ("br", lambda c: _raw(c, b"{}", **{"Content-Encoding": "br"}), 400, "not supported"),
    ("8 KB of gzip inflating to 6 MB of JSON", lambda c: _raw(c, gzip.compress(
        b'{"inputs":[{"name":"state","shape":[1,28],"datatype":"FP32","data":['
        + b"[0]," * 1_500_000 + b"[0]]}]}"), **{"Content-Encoding": "gzip"}), 413,
     "inflates past"),
    ("gzip, then garbage", lambda c: _raw(c, gzip.compress(b"{}") + b"\xff" * 100,
                                          **{"Content-Encoding": "gzip"}), 400, "not gzip data"),
    ("deflate, then more", lambda c: _raw(c, zlib.compress(b"{}") + b"x",
                                          **{"Content-Encoding": "deflate"}), 400,
     "1 bytes follow the deflate data"),
    ("an output twice", lambda c: infer(c, STATE, outputs=[{"name": "action"}] * 2), 400,
     "requested twice"),
    ("unknown output", lambda c: infer(c, STATE, outputs=[{"name": "q_values"}]), 400,
     "no output 'q_values'"),
    ("id not a string", lambda c: infer(c, STATE, id=7), 400, "id must be a string"),
    ("deterministic not a bool", lambda c: infer(c, STATE, parameters={"deterministic": 1}),
     400, "deterministic"),
    ("unknown model", lambda c: infer(c, STATE, path="other"), 404, "unknown model 'other'"),
    ("GET infer", lambda c: c.get("/v2/models/default/infer"), 405, "Method Not Allowed"),
    ("no such route", lambda c: c.get("/v2/models/default/labels"), 404, "Not Found"),
    ("index nested too deep", lambda c: c.post("/v2/repository/index",
                                               content=b"[" * 100_000 + b"]" * 100_000),
     400, "not JSON"),
]
# fmt: on


@pytest.mark.parametrize(("case", "send", "code", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_bad_request_is_refused_with_the_protocols_error_and_changes_nothing(
    client_for: Client, model_root: Path, case: str, send: Callable[[TestClient], Any],
    code: int, says: str,
) -> None:  # fmt: skip
    """Each refusal is {"error": "<why>"} with its status; the model stays served and the
    next request is answered."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        answer = send(client)
        assert answer.status_code == code, answer.text
        assert says in answer.json()["error"], answer.json()
        assert client.get("/sac/ready").json()["version"] == 1
        assert infer(client, STATE).status_code == 200


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "1" * 5000, "-1", " 2", "3"])
def test_the_json_length_header_takes_ascii_digits_within_the_body_only(value: str) -> None:
    """A header byte read as latin-1 "²" (str.isdigit() takes it, int() does not), Arabic
    digits, more digits than int() reads, a sign, a space, past the body: 400, never 500."""
    with pytest.raises(OipError, match="byte count") as refused:
        parse_request(b"{}", value)
    assert refused.value.status == 400


LONG = "x" * 5000


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v2/models/default/infer", {"inputs": [{**tensor([STATE]), "name": LONG}]}),
        ("post", "/v2/models/default/infer", {"inputs": [{**tensor([STATE]), "name": LONG}] * 2}),
        ("post", "/v2/models/default/infer", {"inputs": [tensor([STATE])],
                                              "outputs": [{"name": LONG}]}),
        ("get", f"/v2/models/{LONG}", None),
        ("get", f"/v2/models/default/versions/{LONG}/ready", None),
        ("post", "/v2/repository/models/default/load", {LONG: 1}),
        ("post", "/v2/repository/models/default/load", {"parameters": {LONG: 1}}),
    ],
)  # fmt: skip
def test_an_error_never_echoes_more_than_a_little_of_the_request(
    client_for: Client, model_root: Path, method: str, path: str, body: Any
) -> None:
    """A name, a version or a key of 5,000 characters is cut short in the error."""
    write_checkpoint(model_root, 1)
    with client_for() as client:
        answer = client.request(method.upper(), path, json=body)
        assert 400 <= answer.status_code < 500
        assert 0 < len(answer.json()["error"]) < 300, answer.json()["error"][:400]


def test_gzip_members_that_follow_each_other_are_one_body(
    client_for: Client, model_root: Path
) -> None:
    """RFC 1952: a gzip body may be several members; the request is their concatenation."""
    write_checkpoint(model_root, 1)
    rows = np.full((2, 28), 0.1, np.float32)
    body, headers = binary_body(rows)
    split = len(body) // 2
    packed = gzip.compress(body[:split]) + gzip.compress(body[split:])
    with client_for() as client:
        answer = client.post("/v2/models/default/infer", content=packed,
                             headers={**headers, "Content-Encoding": "gzip"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert split_answer(answer)[1]["action"].shape == (2, 1)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_request_is_read_as_tritonclient_sends_it(
    client_for: Client, model_root: Path, encoding: str
) -> None:
    """Content-Encoding gzip or deflate (tritonclient's request_compression_algorithm): the
    same answer as the plain request."""
    write_checkpoint(model_root, 1)
    rows = np.random.default_rng(3).standard_normal((3, 28)).astype(np.float32)
    body, headers = binary_body(rows, parameters={"binary_data_output": True})
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    with client_for() as client:
        plain = split_answer(client.post("/v2/models/default/infer", content=body,
                                         headers=headers))[1]  # fmt: skip
        answer = client.post("/v2/models/default/infer", content=packed,
                             headers={**headers, "Content-Encoding": encoding})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert split_answer(answer)[1]["action"].tolist() == plain["action"].tolist()


def test_limits_key_and_no_model_are_the_protocols_errors_too(
    client_for: Client, model_root: Path
) -> None:
    """Over FKS_MAX_BATCH_ROWS or the body limit: 413; no key: 401 (probes stay public); no
    model yet: 503 and readiness 400; each one {"error": ...}."""
    with client_for(api_key="k", max_batch_rows=4) as client:
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/health/ready").status_code == 400
        for path in ("/v2", "/v2/models/default", "/v2/models/default/ready"):
            answer = client.get(path)
            assert answer.status_code == 401 and "API key" in answer.json()["error"]
        key = {"Authorization": "Bearer k"}
        none = client.post("/v2/models/default/infer", json={"inputs": [tensor([STATE])]},
                           headers=key)  # fmt: skip
        assert none.status_code == 503 and "no model" in none.json()["error"]
        assert client.get("/v2/models/default/ready", headers=key).status_code == 503
        write_checkpoint(model_root, 1)
        assert client.post("/sac/model/reload", headers=key).status_code == 200
        rows = [STATE] * 5
        over = client.post("/v2/models/default/infer", json={"inputs": [tensor(rows)]},
                           headers=key)  # fmt: skip
        assert over.status_code == 413 and "FKS_MAX_BATCH_ROWS" in over.json()["error"]
        huge = client.post("/v2/models/default/infer", content=b" " * (9 << 20), headers=key)
        assert huge.status_code == 413 and "error" in huge.json()
        assert client.post("/v2/models/default/infer", json={"inputs": [tensor([STATE])]},
                           headers=key).status_code == 200  # fmt: skip


def test_the_repository_index_load_and_unload(client_for: Client, model_root: Path) -> None:
    """index lists the model with its state (ready filter); load is a reload (a newer file
    is picked up); load with a config or files is refused, nothing loaded; unload: 400."""
    with client_for() as client:
        assert client.post("/v2/repository/index").json() == [
            {"name": "default", "version": "", "state": "UNAVAILABLE",
             "reason": "no model loaded yet"}
        ]  # fmt: skip
        assert client.post("/v2/repository/index", json={"ready": True}).json() == []
        assert client.post("/v2/repository/models/default/load").status_code == 503
        write_checkpoint(model_root, 4)
        loaded = client.post("/v2/repository/models/default/load", json={})
        assert loaded.status_code == 200 and loaded.json()["version"] == "4"
        assert client.post("/v2/repository/index", json={"ready": True}).json() == [
            {"name": "default", "version": "4", "state": "READY", "reason": ""}
        ]
        newer = write_checkpoint(model_root, 5)
        bump_mtime(newer.path)
        for parameters in ({"config": "{}"}, {"file:1/model.pt": "AAAA"}):
            refused = client.post("/v2/repository/models/default/load",
                                  json={"parameters": parameters})  # fmt: skip
            assert refused.status_code == 400 and "takes no parameters" in refused.json()["error"]
            assert client.get("/sac/ready").json()["version"] == 4
        lax: dict[str, Any]
        for lax in ({"parameters": []}, {"config": "{}"}, {"parameters": {}, "files": 1}):
            refused = client.post("/v2/repository/models/default/load", json=lax)
            assert refused.status_code == 400, (lax, refused.text)
            assert client.get("/sac/ready").json()["version"] == 4
        unload = client.post("/v2/repository/models/default/unload", json={})
        assert unload.status_code == 400 and "not supported" in unload.json()["error"]
        assert client.post("/v2/repository/models/x/load").status_code == 404


def test_mounted_v2_keeps_the_apps_own_errors(model_root: Path, tmp_path: Path) -> None:
    """mount() adds /v2 beside /sac; the app's own paths keep their own errors (FastAPI's
    {"detail": ...}, or the app's own handler), and /v2's refusals stay {"error": ...} even
    when the app has its own handler for HTTPException."""
    app = FastAPI()

    @app.exception_handler(HTTPException)
    async def own_errors(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"mine": exc.detail}, status_code=exc.status_code)

    @app.get("/mine")
    async def mine() -> dict[str, str]:
        return {"ok": "yes"}

    settings = Settings(model_dir=model_root, default_model_dir=tmp_path / "d",
                        redis_url="redis://127.0.0.1:1/0", api_key=SecretStr("k"))  # fmt: skip
    with TestClient(mount(app, settings)) as client:
        key = {"X-API-Key": "k"}
        none = client.post("/v2/models/default/infer", headers=key,
                           json={"inputs": [tensor([STATE])]})  # fmt: skip
        assert none.status_code == 503 and "no model" in none.json()["error"]
        assert client.get("/v2/models/default", headers=key).json()["error"]
        write_checkpoint(model_root, 1)
        assert client.post("/sac/model/reload", headers=key).status_code == 200
        assert client.get("/mine").json() == {"ok": "yes"}
        assert client.get("/elsewhere").json() == {"detail": "Not Found"}
        assert client.get("/v2/nothing", headers={"X-API-Key": "k"}).json() == {
            "error": "Not Found"
        }
        assert client.get("/v2/models/default").status_code == 401
        head, _ = split_answer(client.post("/v2/models/default/infer", headers={"X-API-Key": "k"},
                                           json={"inputs": [tensor([STATE])]}))  # fmt: skip
        assert head["model_version"] == "1"
