"""What a request costs is measured when a model is verified (issue 24): the bytes one pass
holds at once, per row and fixed, for any architecture; a model whose single row is over
FKS_MAX_ACTIVATION_BYTES is refused."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from common.checkpoint import CheckpointLimits, save_checkpoint
from common.errors import CheckpointRejected
from common.limits import DEFAULT_MAX_ACTIVATION_BYTES
from common.policy import build_architecture
from common.settings import Settings
from subscriber.fetching.roots import ModelRoots
from subscriber.model.activations import check_row_cost, measured_pass, peak_bytes
from subscriber.model.loader import LoadOptions, Prepared, prepare_checkpoint
from subscriber.model.model_io import ModelIO, RequestCost
from subscriber.model.module_runner import TorchRunner
from tests.helpers import AttendRows

STATES = np.random.default_rng(0).standard_normal((8, 28)).astype(np.float32)
ROW = 28 * 4  # the input row itself, float32


def prepared(root: Path, architecture: str, config: dict[str, Any], **options: Any) -> Prepared:
    torch.manual_seed(0)
    module = build_architecture(architecture, config)
    path = root / f"model_{architecture}.safetensors"
    save_checkpoint(path, module, architecture=architecture, config=config, version=1)
    roots = ModelRoots(Settings(model_dir=root, default_model_dir=root))
    return prepare_checkpoint(path, roots, LoadOptions(state_dim=None, **options))


def cost_of(forward: nn.Module, **limits: int) -> RequestCost:
    return measured_pass(TorchRunner(forward, ModelIO((28,), None)), STATES, **limits)[1]


def peak_at(forward: nn.Module, rows: int) -> int:
    """What a request of ``rows`` rows makes ``forward`` hold, measured."""
    states = np.random.default_rng(rows).standard_normal((rows, 28)).astype(np.float32)
    return peak_bytes(TorchRunner(forward, ModelIO((28,), None)), states)


class Lambda(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fn(x)
        return out


def test_a_windowed_dqn_costs_its_window_times_its_lstm_width_a_row(model_root: Path) -> None:
    """The LSTM's output is window x lstm_hidden floats a row: 32 more steps of window cost
    32 more outputs of 64 floats and 32 more input states of 2, to the byte."""
    small = prepared(model_root, "dqn", {"state_dim": 2, "window": 32, "lstm_hidden": 64})
    large = prepared(model_root, "dqn", {"state_dim": 2, "window": 64, "lstm_hidden": 64})
    assert small.io.cost.per_row >= 32 * 64 * 4
    assert large.io.cost.per_row - small.io.cost.per_row == 32 * (64 + 2) * 4
    assert large.io.cost.fixed < large.io.cost.per_row


@pytest.mark.parametrize(
    "options", [{}, {"jit": True}, {"backend": "torchscript"}], ids=["numpy", "jit", "torch"]
)
def test_the_default_actor_costs_about_two_kib_a_row_whichever_runner(
    model_root: Path, options: dict[str, Any]
) -> None:
    """28 -> 256 -> 256 -> 1: two hidden layers of floats and the input, however it is served,
    so 4,096 rows (FKS_MAX_BATCH_ROWS) fit the default budget with room to spare."""
    cost = prepared(model_root, "sac_actor", {}, **options).io.cost
    assert 2 * 256 * 4 <= cost.per_row <= 3 * 1024
    assert cost.max_rows(DEFAULT_MAX_ACTIVATION_BYTES) >= 4 * 4096


def test_a_user_module_is_measured_as_it_runs() -> None:
    """A module that expands each row 1000-fold costs what it holds: 1000 copies of a row."""
    cost = cost_of(Lambda(lambda x: x.repeat(1, 1000).sum(dim=1, keepdim=True)))
    assert 1000 * ROW <= cost.per_row <= 1000 * ROW + 1024


def test_what_does_not_grow_with_rows_is_fixed() -> None:
    """A 4 MiB buffer made on every call is the fixed part, not a cost per row."""
    cost = cost_of(Lambda(lambda x: x.sum(dim=1, keepdim=True) + torch.zeros(1 << 20).sum()))
    assert cost.fixed >= 4 << 20 and cost.per_row <= 2 * ROW


def test_views_and_in_place_results_cost_nothing_more() -> None:
    """One new tensor (x * 2), then a view, an in-place ReLU and a slice of it: one row of
    floats beside the input."""
    cost = cost_of(Lambda(lambda x: (x * 2).view(-1, 28).relu_()[:, :1]))
    assert cost == RequestCost(ROW + ROW, 0)


def test_the_peak_is_counted_not_the_sum_of_what_was_freed() -> None:
    """Ten 256-wide layers in a row hold two outputs at once, never ten."""
    layers = nn.Sequential(nn.Linear(28, 256), *(nn.Linear(256, 256) for _ in range(9)))
    cost = cost_of(layers)
    assert 2 * 1024 <= cost.per_row <= 2 * 1024 + ROW


def test_what_other_threads_hold_meanwhile_is_not_counted() -> None:
    """A probe runs on the load lane while requests are served: a thread making 4 MiB tensors
    all along adds nothing to the cost measured."""
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            torch.zeros(1 << 20).add_(1)

    alone = cost_of(Lambda(lambda x: x * 2))
    thread = threading.Thread(target=serve)
    thread.start()
    try:
        costs = [cost_of(Lambda(lambda x: x * 2)) for _ in range(50)]
    finally:
        stop.set()
        thread.join()
    assert set(costs) == {alone}


def test_a_model_whose_single_row_is_over_the_budget_is_refused(model_root: Path) -> None:
    """window 64 x lstm_hidden 64 floats is 16 KiB a row: over an 8 KiB budget it is refused
    as too_many_activations, naming the setting; within a 1 MiB one it is served."""
    config = {"state_dim": 2, "window": 64, "lstm_hidden": 64}
    with pytest.raises(CheckpointRejected, match="FKS_MAX_ACTIVATION_BYTES") as caught:
        prepared(model_root, "dqn", config, limits=CheckpointLimits(max_activation_bytes=8192))
    assert caught.value.reason == "too_many_activations"
    served = prepared(
        model_root, "dqn", config, limits=CheckpointLimits(max_activation_bytes=1 << 20)
    )
    assert served.io.cost.max_rows(1 << 20) < 64


def test_the_cost_of_rows_and_the_rows_a_budget_allows() -> None:
    """fixed + per_row x rows; the most rows within a budget; none when one row is over; no
    more than were measured of a cost that grows faster than rows, the smaller of two."""
    cost = RequestCost(per_row=1000, fixed=500)
    assert cost.bytes(4) == 4500
    assert cost.max_rows(4500) == 4 and cost.max_rows(4499) == 3 and cost.max_rows(1499) == 0
    assert RequestCost().max_rows(1) > 1 << 40  # not measured: no bound of its own
    growing = RequestCost(per_row=1000, fixed=500, measured_rows=3)
    assert growing.max_rows(4500) == 3 and growing.max_rows(1499) == 0
    assert cost.at_least(growing) == growing
    assert growing.at_least(RequestCost(2000, 0, 5)) == RequestCost(2000, 500, 3)


@pytest.mark.parametrize("heads", [1, 4])
def test_rows_that_attend_to_rows_are_held_to_a_batch_measured_within_the_budget(
    heads: int,
) -> None:
    """Attention across the rows of a batch holds heads x rows² scores: a few hundred bytes a
    row at 8 rows, 128 MiB at 4,096 for one head. The largest batch allowed under a 4 MiB
    budget holds, measured, at most 4 MiB, and twice as many rows would not fit."""
    budget = 4 << 20
    module = AttendRows(width=16, heads=heads)
    cost = cost_of(module, budget=budget, max_rows=4096)
    largest = cost.max_rows(budget)
    assert 0 < largest < 4096 and cost.measured_rows == largest
    assert peak_at(module, largest) <= budget < peak_at(module, 2 * largest)
    assert cost.bytes(largest) <= budget


def test_a_growing_part_that_a_wider_layer_hides_at_a_few_rows_still_bounds_the_batch() -> None:
    """A 512-wide first layer holds 4 KiB a row, more than the rows x rows scores up to 8
    rows, so the peak grows in proportion there; the scores still grow faster, and win at
    4,096 rows (128 MiB). The batch allowed under 16 MiB is measured within it."""
    budget = 16 << 20
    module = AttendRows(width=16, wide=512)
    cost = cost_of(module, budget=budget, max_rows=4096)
    largest = cost.max_rows(budget)
    assert 0 < largest < 4096
    assert peak_at(module, largest) <= budget < peak_at(module, 2 * largest)


def test_rows_that_attend_to_rows_within_the_row_limit_keep_it() -> None:
    """Under a budget the rows' scores never reach, the largest batch is FKS_MAX_BATCH_ROWS,
    measured."""
    module = AttendRows(width=16)
    cost = cost_of(module, budget=64 << 20, max_rows=256)
    assert cost.max_rows(64 << 20) == cost.measured_rows == 256
    assert peak_at(module, 256) <= cost.bytes(256)


def test_one_row_over_the_budget_is_refused_even_when_rows_attend_to_rows() -> None:
    """A cost that grows faster than rows is still refused when one row is over budget."""
    cost = cost_of(AttendRows(width=16), budget=256, max_rows=4096)
    assert cost.max_rows(256) == 0
    with pytest.raises(CheckpointRejected) as caught:
        check_row_cost(Path("model.pt"), cost, 256)
    assert caught.value.reason == "too_many_activations"


def test_a_cost_in_proportion_to_rows_is_measured_within_the_probes_rows() -> None:
    """A model whose rows do not interact pays for three passes at most, none of more rows
    than the probe's 8: a load measures no large batch of an ordinary model."""
    seen: list[int] = []
    runner = TorchRunner(nn.Sequential(nn.Linear(28, 256), nn.ReLU()), ModelIO((28,), None))

    def run(states: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        seen.append(len(states))
        return runner(states)

    cost = measured_pass(run, STATES, budget=1 << 30, max_rows=4096)[1]
    assert len(seen) <= 3 and max(seen) == 8 and cost.measured_rows == 0
