"""What an interrupted-and-resumed run must reproduce of the uninterrupted one, bit for bit: shared by the
checkpoint tests and the contract suite's resume cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

#: the parts of a result besides its scores that hold per-episode numbers or training decisions
_ALSO_COMPARED = ("competitors", "components", "also", "early_stopping")


def numbers(result: dict[str, Any], weights: Path) -> tuple[Any, ...]:
    """The per-episode scores, the learning curve (less its wall-clock seconds), every weight, and the
    claim's competitors', the components' and the beside-metrics' scores and the early-stopping choice
    where the result has them."""
    curve = [{k: v for k, v in point.items() if k != "seconds"} for point in result["curve"]]
    state = torch.load(weights, weights_only=True)["state_dict"]
    others = {key: result[key] for key in _ALSO_COMPARED if key in result}
    return result["scores"], curve, {k: v.tolist() for k, v in state.items()}, others


def result_numbers(output: Path) -> list[tuple[Any, ...]]:
    """:func:`numbers` of every result under ``output``, in file-name order."""
    found = sorted(output.rglob("*.json"))
    return [numbers(json.loads(p.read_text()), p.with_suffix(".pt")) for p in found]
