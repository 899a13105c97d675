"""What the Open Inference Protocol says of the server and of each model (SPEC §14).

A model is an instance; its versions are the served ``version`` and the one kept for
rollback, as strings. Its one input is ``state`` (FP32, ``[-1, *input_shape]``: rows of the
architecture's input); a continuous policy answers ``action`` (FP32, ``[-1, action_dim]``), a
discrete one ``action`` (INT64, ``[-1]``: the argmax) and ``q_values`` (FP32,
``[-1, n_actions]``). The platform is ``fks_<architecture>`` (e.g. ``fks_sac_actor``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from subscriber.model.snapshot import ServedModel

__all__ = [
    "EXTENSIONS",
    "INPUT",
    "SERVER_NAME",
    "model_metadata",
    "output_specs",
    "server_version",
    "versions",
]

SERVER_NAME = "fks-checkpoint-notify"
# Triton's names for the optional parts implemented (the repository's load, not its unload)
EXTENSIONS = ("binary_tensor_data", "model_repository")
INPUT = "state"


def server_version() -> str:
    try:
        return version(SERVER_NAME)
    except PackageNotFoundError:
        return "0"


def output_specs(model: ServedModel) -> list[dict[str, Any]]:
    """The outputs of ``model``: name, datatype and shape (-1: the batch)."""
    if model.discrete:
        return [
            {"name": "action", "datatype": "INT64", "shape": [-1]},
            {"name": "q_values", "datatype": "FP32", "shape": [-1, model.action_dim]},
        ]
    return [{"name": "action", "datatype": "FP32", "shape": [-1, model.action_dim]}]


def versions(served: ServedModel, previous: ServedModel | None) -> list[str]:
    """The versions a request may name: the served one, then the one kept for rollback."""
    named = [str(served.version)]
    if previous is not None and str(previous.version) not in named:
        named.append(str(previous.version))
    return named


def model_metadata(name: str, model: ServedModel, previous: ServedModel | None) -> dict[str, Any]:
    return {
        "name": name,
        "versions": versions(model, previous),
        "platform": f"fks_{model.architecture}",
        "inputs": [
            {"name": INPUT, "datatype": "FP32", "shape": [-1, *model.io.input_shape]},
        ],
        "outputs": output_specs(model),
    }
