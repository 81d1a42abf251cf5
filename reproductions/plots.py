"""Figures of a regression meta-learner's fits: what MAML's Figure 2 shows for the sinusoid tasks, and
CNP's predicted means and uncertainties (1-D GP functions, MNIST completions)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from metabench.episodes import EpisodeBatch
from metabench.figures import save_figure


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
    return save_figure(figure, path, dpi=90)


def plot_gaussian_fits(
    predict: Callable[[EpisodeBatch], Tensor], batch: EpisodeBatch, path: Path, tasks: int = 4
) -> Path:
    """One panel per task of a 1-D regression batch whose targets are a dense grid (the GP test tasks): the
    true function, the context points, and the predicted mean with a band of two standard deviations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(tasks, batch.size)
    first = replace(
        batch,
        support_x=batch.support_x[:count],
        support_y=batch.support_y[:count],
        query_x=batch.query_x[:count],
        query_y=batch.query_y[:count],
    )
    predicted = predict(first).cpu().numpy()  # [count, targets, 1, 2]
    mean, std = predicted[:, :, 0, 0], predicted[:, :, 0, 1]
    x, y = first.query_x[:, :, 0].cpu().numpy(), first.query_y[:, :, 0].cpu().numpy()
    cx, cy = first.support_x[:, :, 0].cpu().numpy(), first.support_y[:, :, 0].cpu().numpy()
    figure, axes = plt.subplots(1, count, figsize=(4 * count, 3.2), squeeze=False)
    for i, axis in enumerate(axes[0]):
        order = x[i].argsort()
        xs = x[i][order]
        axis.plot(xs, y[i][order], color="black", linewidth=1, label="true function")
        axis.plot(xs, mean[i][order], color="tab:blue", label="predicted mean")
        low, high = mean[i][order] - 2 * std[i][order], mean[i][order] + 2 * std[i][order]
        axis.fill_between(xs, low, high, color="tab:blue", alpha=0.2, label="mean ± 2 std")
        axis.scatter(cx[i], cy[i], color="red", zorder=3, label=f"{cx.shape[1]} context points")
        axis.set_xlabel("x")
    axes[0][0].legend(fontsize=7)
    return save_figure(figure, path, dpi=90)


def plot_completions(
    predict: Callable[[EpisodeBatch], Tensor],
    batch: EpisodeBatch,
    path: Path,
    counts: tuple[int, ...] = (10, 100, 300, 784),
    tasks: int = 3,
) -> Path:
    """Image completion: for the first images of a batch whose targets are every pixel (coordinates in
    [-1, 1]), one row per number of context pixels: the context shown on blue, the predicted mean and the
    predicted standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(tasks, batch.size)
    coordinates = batch.query_x[:count].cpu()
    side = round(coordinates.shape[1] ** 0.5)
    cells = ((coordinates + 1) / 2 * (side - 1)).round().long()
    flat = cells[..., 0] * side + cells[..., 1]  # raster index of each target

    def image(values: Tensor, at: Tensor) -> Tensor:
        canvas = torch.full((side * side,), float("nan"))
        canvas[at] = values.float()
        return canvas.view(side, side)

    shown = [k for k in counts if k <= batch.support_x.shape[1]]
    figure, axes = plt.subplots(len(shown), 3 * count, figsize=(1.3 * 3 * count, 1.4 * len(shown)), squeeze=False)
    for row, k in enumerate(shown):
        fewer = replace(
            batch,
            support_x=batch.support_x[:count, :k],
            support_y=batch.support_y[:count, :k],
            query_x=batch.query_x[:count],
            query_y=batch.query_y[:count],
            shots=k,
        )
        predicted = predict(fewer).cpu()[:, :, 0]  # [count, targets, 2]
        context_cells = ((fewer.support_x.cpu() + 1) / 2 * (side - 1)).round().long()
        context_flat = context_cells[..., 0] * side + context_cells[..., 1]
        for task in range(count):
            panels = [
                (image(fewer.support_y[task, :, 0].cpu(), context_flat[task]), f"{k} context", 0.0, 1.0),
                (image(predicted[task, :, 0], flat[task]), "mean", 0.0, 1.0),
                (image(predicted[task, :, 1], flat[task]), "std", 0.0, None),
            ]
            for j, (picture, title, low, high) in enumerate(panels):
                axis = axes[row][3 * task + j]
                colours = plt.get_cmap("gray").with_extremes(bad="tab:blue")
                axis.imshow(picture.numpy(), cmap=colours, vmin=low, vmax=high)
                axis.set_xticks([])
                axis.set_yticks([])
                axis.set_title(title, fontsize=7)
    return save_figure(figure, path, dpi=90)
