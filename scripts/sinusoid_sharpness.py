"""Why some sinusoid tasks diverge after a few of MAML's inner steps: the curvature of each task's
support loss at the meta-learned initialisation, against the step size.

Gradient descent with step size a on a loss whose Hessian's largest eigenvalue is L overshoots and
grows along that direction when a * L > 2. This script takes a trained MAML sinusoid model (the
weights a run saves beside its result), draws fresh *validation* functions (never the frozen test
tasks), and prints for each inner step count the mean and median MSE and how many tasks diverge,
split by whether a * L > 2 at the initialisation (L by power iteration on Hessian-vector products,
per task, in float64).

    python scripts/sinusoid_sharpness.py results/maml/sinusoid-5shot__paper__seed0__STAMP.json --tasks 300
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import cast

import torch

from metabench.api import load_model
from metabench.data.sinusoid import load_parts
from metabench.episodes import EpisodeShape
from metabench.inner import batched_forward


def largest_eigenvalues(
    model: torch.nn.Module, support_x: torch.Tensor, support_y: torch.Tensor, iterations: int = 100
) -> torch.Tensor:
    """The largest-magnitude eigenvalue of each task's support-loss Hessian at the initialisation, by
    power iteration on Hessian-vector products: one double backward through all tasks at once (each
    task has its own copy of the parameters, so the sum of their losses has a block-diagonal Hessian)."""
    net = cast(torch.nn.Module, model.net).double()
    tasks = support_x.shape[0]
    params = {name: p.detach().expand(tasks, *p.shape).clone().requires_grad_() for name, p in net.named_parameters()}
    outputs = batched_forward(net, params, support_x.double())
    total = (outputs - support_y.double()).pow(2).mean(dim=(1, 2)).sum()
    grads = torch.autograd.grad(total, list(params.values()), create_graph=True)

    def per_task(parts: list[torch.Tensor]) -> torch.Tensor:
        return sum(t.reshape(tasks, -1).sum(1) for t in parts)  # type: ignore[return-value]

    generator = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params.values()]
    value = torch.zeros(tasks, dtype=torch.float64)
    for _ in range(iterations):
        length = per_task([t.pow(2) for t in v]).sqrt()
        v = [t / length.view(-1, *[1] * (t.dim() - 1)) for t in v]
        hv = torch.autograd.grad(grads, list(params.values()), grad_outputs=v, retain_graph=True)
        value = per_task([a * b for a, b in zip(v, hv, strict=True)])
        v = list(hv)
    net.float()
    return value.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a MAML sinusoid result whose weights are beside it")
    parser.add_argument("--tasks", type=int, default=300, help="validation functions to draw")
    parser.add_argument("--seed", type=int, default=20261202, help="seed of the validation draw")
    parser.add_argument("--steps", type=int, default=10, help="inner steps to score up to")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    model = load_model(args.result)
    step_size = float(model.hparams.inner_lr)
    shape = EpisodeShape(ways=1, shots=5, queries=100)
    family = load_parts("maml")["val"]
    generator = torch.Generator().manual_seed(args.seed)
    batch = family.batch(family.draw(args.tasks, shape, generator), shape)

    sharpness = largest_eigenvalues(model, batch.support_x, batch.support_y)
    sharp = step_size * sharpness > 2
    by_steps = {}
    for steps in range(args.steps + 1):
        mse = (model.predict_after(batch, steps) - batch.query_y).pow(2).mean(dim=(1, 2))
        by_steps[steps] = mse
    before = by_steps[0]
    rows: list[dict[str, float | int]] = []
    report: dict[str, object] = {
        "result": str(args.result),
        "inner_lr": step_size,
        "tasks": args.tasks,
        "seed": args.seed,
        "sharp_tasks": int(sharp.sum()),
        "sharpness_quantiles": {q: float(sharpness.quantile(q)) for q in (0.5, 0.9, 0.99)},
        "rows": rows,
    }
    print(f"{args.result.name}: inner step {step_size:g}, {args.tasks} validation functions (seed {args.seed})")
    print(
        f"largest Hessian eigenvalue of the support loss at the initialisation: median {sharpness.median():.0f}, "
        f"90% {sharpness.quantile(0.9):.0f}, max {sharpness.max():.0f}; step * L > 2 on {int(sharp.sum())} tasks"
    )
    print("steps  mean MSE  median  diverged (MSE > start)  of them sharp  mean MSE without the sharp tasks")
    for steps, mse in by_steps.items():
        worse = mse > before if steps else torch.zeros_like(mse, dtype=torch.bool)
        row = {
            "steps": steps,
            "mean": float(mse.mean()),
            "median": float(mse.median()),
            "worse_than_start": int(worse.sum()),
            "worse_and_sharp": int((worse & sharp).sum()),
            "mean_without_sharp": float(mse[~sharp].mean()),
        }
        rows.append(row)
        print(
            f"{steps:>5}  {row['mean']:>8.3f}  {row['median']:>6.3f}  {row['worse_than_start']:>22}  "
            f"{row['worse_and_sharp']:>13}  {row['mean_without_sharp']:>8.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
