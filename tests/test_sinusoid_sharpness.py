"""The sharpness diagnosis of MAML's sinusoid tail (scripts/sinusoid_sharpness.py, quoted in
docs/papers/maml.md) finds each task's largest Hessian eigenvalue: checked on a linear model, whose
support-loss Hessian is known in closed form."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "sinusoid_sharpness.py"


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("sinusoid_sharpness", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_power_iteration_finds_each_tasks_largest_hessian_eigenvalue() -> None:
    torch.manual_seed(0)
    model = SimpleNamespace(net=torch.nn.Linear(1, 1))
    x = torch.rand(3, 5, 1) * 10 - 5
    y = torch.randn(3, 5, 1)
    found = _script().largest_eigenvalues(model, x, y, iterations=300)
    # mean((w x + b - y)^2) has Hessian (2/n) [[sum x^2, sum x], [sum x, n]] in (w, b), whatever w, b, y
    for task, value in zip(x.double(), found, strict=True):
        design = torch.cat([task, torch.ones_like(task)], dim=1)
        expected = torch.linalg.eigvalsh(2 * design.T @ design / len(task))[-1]
        assert torch.isclose(value, expected, rtol=1e-9), (value, expected)
    assert model.net.weight.dtype == torch.float32  # the network is handed back in its own precision
