"""Figures of a regression meta-learner's fits: what MAML's Figure 2 shows for the sinusoid tasks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch


class StepPredictor(Protocol):
    def predict_after(self, batch: EpisodeBatch, steps: int) -> Tensor: ...


def sine_from_points(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` with ``y = a sin x + b cos x`` (i.e. ``A sin(x + phase)``), solved exactly by least squares."""
    design = torch.stack([torch.sin(x), torch.cos(x)], dim=-1).double()
    solution = torch.linalg.lstsq(design, y.double().unsqueeze(-1)).solution.squeeze(-1)
    return solution[..., 0], solution[..., 1]


def plot_sine_fits(
    model: StepPredictor, batch: EpisodeBatch, path: Path, steps: tuple[int, ...] = (0, 1, 10), tasks: int = 4
) -> Path:
    """One panel per task: the true function, the K support points, and the fit after each step count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(tasks, batch.size)
    grid = torch.linspace(-5, 5, 200, device=batch.query_x.device)
    dense = replace(
        batch,
        support_x=batch.support_x[:count],
        support_y=batch.support_y[:count],
        query_x=grid.view(1, -1, 1).expand(count, -1, -1).contiguous(),
        query_y=torch.zeros(count, grid.numel(), 1, device=grid.device),
    )
    fits = {s: model.predict_after(dense, s).squeeze(-1).cpu() for s in steps}
    sx, sy = batch.support_x[:count, :, 0].cpu(), batch.support_y[:count, :, 0].cpu()
    a, b = sine_from_points(sx, sy)
    g = grid.cpu()
    figure, axes = plt.subplots(1, count, figsize=(4 * count, 3.2), squeeze=False)
    for i, axis in enumerate(axes[0]):
        axis.plot(g, a[i] * torch.sin(g) + b[i] * torch.cos(g), color="black", label="true function")
        for s in steps:
            axis.plot(g, fits[s][i], label=f"after {s} step{'s' if s != 1 else ''}")
        axis.scatter(sx[i], sy[i], color="red", zorder=3, label=f"{sx.shape[1]} support points")
        axis.set_xlabel("x")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
