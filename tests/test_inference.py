"""Runners: a compiled runner is served only when it reproduces eager on the probe states."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from common.policy import SACActor
from subscriber.model.inference import COMPILE_ATOL, EagerRunner, compile_runner


@pytest.fixture
def actor() -> SACActor:
    torch.manual_seed(3)
    return SACActor().eval()


@pytest.mark.parametrize("backend", ["numpy", "torchscript"])
def test_compiled_runners_match_eager(actor: SACActor, backend: str) -> None:
    """Both backends compile and agree with eager within COMPILE_ATOL on fresh states."""
    runner = compile_runner(actor, backend)  # type: ignore[arg-type]
    assert runner.compiled and runner.backend == backend
    states = np.random.default_rng(0).standard_normal((32, 28)).astype(np.float32)
    assert np.abs(runner(states) - EagerRunner(actor)(states)).max() <= COMPILE_ATOL


def test_a_given_reference_is_what_the_compiled_runner_is_checked_against(
    actor: SACActor,
) -> None:
    """The loader's own probe actions are the reference: agreeing with them compiles."""
    probe = np.zeros((8, 28), dtype=np.float32)
    expected = EagerRunner(actor)(probe)
    runner = compile_runner(actor, probe=probe, expected=expected)
    assert runner.compiled


def test_a_runner_that_disagrees_is_not_served(
    actor: SACActor, caplog: pytest.LogCaptureFixture
) -> None:
    """Output off by more than COMPILE_ATOL: eager is served, and the reason is logged."""
    probe = np.zeros((8, 28), dtype=np.float32)
    wrong = EagerRunner(actor)(probe) + 1e-3
    with caplog.at_level(logging.WARNING):
        runner = compile_runner(actor, probe=probe, expected=wrong)
    assert not runner.compiled
    assert "differs from eager" in caplog.text


def test_a_runner_of_the_wrong_shape_is_not_served(
    actor: SACActor, caplog: pytest.LogCaptureFixture
) -> None:
    """A shape that would only broadcast against the reference is a disagreement too."""
    probe = np.zeros((8, 28), dtype=np.float32)
    flat = EagerRunner(actor)(probe).reshape(-1)
    with caplog.at_level(logging.WARNING):
        runner = compile_runner(actor, probe=probe, expected=flat)
    assert not runner.compiled
    assert "gives shape" in caplog.text
