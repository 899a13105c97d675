"""Fuzzed .safetensors checkpoints (issue 13): no unexpected exception, nothing unverified served.

A seeded generator mutates one real checkpoint ``FKS_FUZZ_FILES`` times (default 3,000; seed
``FKS_FUZZ_SEED``, default 13, ``random`` for a fresh one; one seed makes the same files):
byte flips in the length, the header or the data, truncations, appended and overwritten
spans, edits of the header's JSON (dtypes, shapes, offsets, names, fields, metadata) and
header lengths that lie.

What "nothing unverified is served" means here, precisely. Without an announced sha256 a flip
inside the weights makes another valid checkpoint (a float with one bit changed is still a
finite float), and a flip in the header's padding or in a metadata string leaves a valid file
too: both may load. So a mutated file may be accepted only if

- safetensors itself (the reference parser) reads it, to the same tensors bit for bit;
- its tensors are finite and have exactly the names and shapes its config declares;
- and, if the mutation touched header bytes only, its weights are the original's bit for
  bit: a header mutation may hit padding or a metadata value, never change a weight.

A node (a real ModelHolder judging forced notifications through the Decider) serves a file
only if ``load_checkpoint`` accepted it, and serves exactly those bytes (its sha256); with the
original's sha256 announced it serves no mutated file at all. Every failure is a
CheckpointError with a reason, and ``load_error`` (an exception nobody foresaw) never occurs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from common import CheckpointError, CheckpointNotification, Settings
from common.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from common.policy import PolicyConfig, SACActor, state_shapes
from subscriber import ModelHolder
from subscriber.pipeline.decider import Decider
from tests.reliability.harness import record

FILES = int(os.environ.get("FKS_FUZZ_FILES", "3000"))
_SEED = os.environ.get("FKS_FUZZ_SEED", "13")
SEED = random.SystemRandom().randrange(2**32) if _SEED == "random" else int(_SEED)
CONFIG = PolicyConfig(hidden=(16,))
DTYPES = ["F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64",
          "BOOL", "F8_E4M3", "F8_E5M2", "C64", "X", "", 4, None]  # fmt: skip
NUMBERS = [0, 1, -1, 3, 2**31, 2**62, 2**63, 2**64, 2**70, 1.5, "2", None, True]
TEXTS = ["", "x", "2", "-1", "9" * 30, "{}", "[]", '{"k":1}', '{"k":"v"}', "NaN", "\ud800",
         "2024-05-01T12:00:00Z", "fks.checkpoint", "sac_actor", "dqn", "1", "\xe9",
         "\x00"]  # fmt: skip
Bytes = bytearray


def header_end(data: bytes | bytearray, fallback: int) -> int:
    """Where the data section starts, if the length field is plausible; else ``fallback``."""
    (length,) = struct.unpack_from("<Q", data) if len(data) >= 8 else (fallback,)
    return 8 + length if 8 + length <= len(data) else fallback


def edit_header(data: Bytes, rng: random.Random) -> Bytes:
    """One edit of the header's JSON, written back with its true length (or a lie, sometimes)."""
    end = header_end(data, 0)
    try:
        header: Any = json.loads(data[8:end])
    except ValueError:
        return data
    if not isinstance(header, dict):
        return data
    names = [k for k in header if k != "__metadata__" and isinstance(header[k], dict)]
    name = rng.choice(names) if names else "x"
    entry: Any = header.get(name, {})
    meta: Any = header.get("__metadata__", {})
    choice = rng.randrange(12)
    if choice == 0:
        entry["dtype"] = rng.choice(DTYPES)
    elif choice == 1 and isinstance(entry.get("shape"), list) and entry["shape"]:
        entry["shape"][rng.randrange(len(entry["shape"]))] = rng.choice(NUMBERS)
    elif choice == 2:
        entry["shape"] = rng.choice([[], [1] * rng.randrange(1, 12), [0, 2**62], "2"])
    elif choice == 3 and isinstance(entry.get("data_offsets"), list):
        offsets = entry["data_offsets"]
        i = rng.randrange(len(offsets)) if offsets else 0
        base = offsets[i] if offsets and isinstance(offsets[i], int) else 0
        value = rng.choice([base + rng.choice([-8, -4, -1, 1, 4, 8]), *NUMBERS])
        offsets[i:i + 1] = [value]  # fmt: skip
    elif choice == 4:
        header.pop(name, None)
    elif choice == 5:
        header[name + rng.choice(["x", ".", "0"])] = header.pop(name, {})
    elif choice == 6 and isinstance(entry, dict):
        entry[rng.choice(["note", "dtype", "offsets"])] = rng.choice(NUMBERS)
    elif choice in (7, 8) and isinstance(meta, dict):
        keys = [*meta, "extra", "format", "config", "version"]
        meta[rng.choice(keys)] = rng.choice(TEXTS + [3])
    elif choice == 9 and isinstance(meta, dict) and meta:
        meta.pop(rng.choice(list(meta)))
    elif choice == 10:
        header["__metadata__"] = rng.choice([[], 5, "x", None, {"format": 1}])
    else:
        header = rng.choice([[], {}, "x", {name: entry}])
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * rng.choice([0, (8 - len(raw) % 8) % 8, rng.randrange(16)])
    if isinstance(header, dict) and rng.random() < 0.3:  # the same key twice, raw
        raw = raw.replace(b"{", b'{"' + name.encode() + b'":{},', 1)
    return Bytes(struct.pack("<Q", len(raw)) + raw + data[end:])


def mutate(base: bytes, rng: random.Random) -> bytes:
    data = Bytes(base)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        end = header_end(data, len(data))
        kind = rng.choices(
            ["edit", "flip_header", "flip_length", "flip_data", "truncate", "extend", "splice",
             "relength"],
            weights=[30, 20, 5, 15, 10, 5, 5, 10],
        )[0]  # fmt: skip
        if kind == "edit":
            data = edit_header(data, rng)
        elif kind == "flip_length" or (kind == "flip_header" and end > 8):
            where = rng.randrange(0, 8) if kind == "flip_length" else rng.randrange(8, end)
            data[where] ^= rng.randrange(1, 256)
        elif kind == "flip_data" and end < len(data):
            data[rng.randrange(end, len(data))] ^= 1 << rng.randrange(8)
        elif kind == "truncate" and data:
            del data[rng.randrange(len(data)) :]
        elif kind == "extend":
            data += rng.randbytes(rng.randrange(1, 64))
        elif kind == "splice" and data:
            at = rng.randrange(len(data))
            data[at : at + rng.randrange(1, 16)] = rng.randbytes(rng.randrange(1, 16))
        elif kind == "relength" and len(data) >= 8:
            lie = rng.choice([0, 1, end - 9, end - 7, len(data), 2**60, 2**63, 2**64 - 1,
                              rng.randrange(2**64)])  # fmt: skip
            data[:8] = struct.pack("<Q", max(lie, 0))
    return bytes(data)


def verify(loaded: LoadedCheckpoint, data: bytes, header_only: bool, original: Any) -> None:
    """An accepted file is one the reference parser reads the same, finite, of the declared
    shapes; a header-only mutation kept every weight."""
    reference = safetensors.torch.load(data)
    tensors = loaded.state_dict
    assert reference.keys() == tensors.keys(), (SEED, "names")
    for name, tensor in tensors.items():
        assert tensor.dtype == reference[name].dtype and torch.equal(tensor, reference[name])
        assert bool(torch.isfinite(tensor).all()), (SEED, name)
    assert isinstance(loaded.config, PolicyConfig)
    assert {k: tuple(t.shape) for k, t in tensors.items()} == state_shapes(loaded.config)
    if header_only:
        assert all(torch.equal(tensors[k], original[k]) for k in original), (SEED, "weights")


def test_1000_mutated_safetensors_files(
    tmp_path: Path, model_root: Path, settings_for: Callable[..., Settings]
) -> None:
    torch.manual_seed(SEED)
    base_path = save_checkpoint(
        tmp_path / "base.safetensors", SACActor(CONFIG), model_name="fuzz", version=1,
        training_step=10, metadata={"loss": 0.5}, saved_at=datetime(2026, 5, 1, tzinfo=UTC),
    ).path  # fmt: skip
    base = base_path.read_bytes()
    original = load_checkpoint(base_path).state_dict
    end = header_end(base, 0)
    rng = random.Random(SEED)
    reasons: Counter[str] = Counter()
    accepted: Counter[str] = Counter()
    unexpected: list[str] = []
    verdicts: dict[Path, bool] = {}
    started = time.monotonic()
    for i in range(FILES):
        data = mutate(base, rng)
        path = model_root / f"model_{i}.safetensors"
        path.write_bytes(data)
        header_only = len(data) == len(base) and data[end:] == base[end:]
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            reasons[exc.reason] += 1
            verdicts[path] = False
            if exc.reason == "load_error":
                unexpected.append(f"{i}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - counted and asserted below
            unexpected.append(f"{i}: {type(exc).__name__}: {exc}")
            continue
        verdicts[path] = True
        verify(loaded, data, header_only, original)
        kind = "identical" if data == base else "header_only" if header_only else "other"
        accepted[kind] += 1
    loaded_seconds = time.monotonic() - started

    holder = ModelHolder(settings_for())
    decider = Decider(holder)
    sha = hashlib.sha256(base).hexdigest()
    node: Counter[str] = Counter()
    for i, path in enumerate(sorted(verdicts)):
        if i % 10 not in (0, 5):
            continue
        with_sha = i % 10 == 5
        data = path.read_bytes()
        note = CheckpointNotification(
            model_path=str(path), version=i + 2, force=True, sha256=sha if with_sha else None
        )
        try:
            outcome = decider.apply(note)
        except Exception as exc:  # noqa: BLE001 - counted and asserted below
            unexpected.append(f"node {path.name}: {type(exc).__name__}: {exc}")
            continue
        label = "with_sha256" if with_sha else "no_sha256"
        node[f"{label}_sent"] += 1
        if outcome.applied:
            node[f"{label}_served"] += 1
            served = holder.current()
            assert served is not None and served.sha256 == hashlib.sha256(data).hexdigest()
            assert verdicts[path], (SEED, path.name, "served what load_checkpoint refused")
            assert not with_sha or data == base, (SEED, path.name, "served against its sha256")
        elif outcome.reason == "load_error":
            unexpected.append(f"node {path.name}: {outcome.detail}")

    record(
        "bad input: fuzzed .safetensors files",
        seed=SEED, files=FILES, rejected=sum(reasons.values()),
        accepted_header_only=accepted["header_only"], accepted_weights_changed=accepted["other"],
        accepted_identical=accepted["identical"], unexpected=len(unexpected),
        seconds=time.monotonic() - started, load_seconds=loaded_seconds,
        **{f"reason_{k}": v for k, v in sorted(reasons.items())},
        **{f"node_{k}": v for k, v in sorted(node.items())},
    )  # fmt: skip
    assert unexpected == [], (SEED, unexpected[:5])
    assert sum(reasons.values()) + sum(accepted.values()) == FILES >= 1000
    assert node["with_sha256_served"] <= accepted["identical"]
    assert node["no_sha256_sent"] >= 100 and node["with_sha256_sent"] >= 100
