"""``run --tracker tensorboard|wandb``: stream the training curve and the final numbers to the tracker
researchers already use. Neither is a dependency of metabench: a tracker that is not installed is a
one-line error saying what to install.

The runner calls :attr:`~metabench.runner.RunRequest.on_point` with every point of the learning curve
it records (step, episodes, seconds, training loss and metric, validation score); a tracker logs each
against the step. When the run ends, :meth:`Tracking.finish` logs the test mean and its interval, the
reported value and difference, the verdict, the budget and every hyperparameter.

TensorBoard event files go to ``OUTPUT/.tensorboard/RUN/`` (``tensorboard --logdir OUTPUT/.tensorboard``).
Weights & Biases logs to the project ``metabench`` (``$WANDB_PROJECT`` overrides it) in whatever mode
``$WANDB_MODE`` says (``offline`` keeps it on the machine, under ``OUTPUT/.wandb``; ``wandb sync`` uploads
it later).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from metabench.errors import MetabenchError, UnknownNameError, did_you_mean

TRACKERS = ("tensorboard", "wandb")


class Tracker(Protocol):
    def log_point(self, point: Mapping[str, float]) -> None: ...

    def finish(self, summary: Mapping[str, Any], config: Mapping[str, Any]) -> None: ...


def _numbers(point: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in point.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
    }


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, int | float | str | bool) else str(value)
    return out


class TensorBoard:
    """Scalars under ``train/…``, ``val/…`` and ``test/…``; hyperparameters as an ``hparams`` entry."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise MetabenchError(
                "--tracker tensorboard needs the tensorboard package", "pip install tensorboard"
            ) from None
        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))
        self.last_step = 0

    def log_point(self, point: Mapping[str, float]) -> None:
        step = int(point["step"])
        self.last_step = step
        for key, value in _numbers(point).items():
            group, _, name = key.partition("_")
            tag = f"{group}/{name}" if group in ("train", "val") else f"progress/{key}"
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, summary: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        numbers = _numbers(summary)
        for key, value in numbers.items():
            self.writer.add_scalar(f"test/{key}", value, self.last_step)
        self.writer.add_text("result", "\n".join(f"{k}: {v}" for k, v in summary.items()), self.last_step)
        hparams = {k: v for k, v in _flat(config).items() if isinstance(v, int | float | str | bool)}
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in numbers.items()}, run_name=".")
        self.writer.close()


class WandB:
    """One W&B run: the curve by step, the final numbers in its summary, the settings in its config."""

    def __init__(self, folder: Path, name: str) -> None:
        try:
            import wandb
        except ImportError:
            raise MetabenchError("--tracker wandb needs the wandb package", "pip install wandb") from None
        folder.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "metabench"), name=name, dir=str(folder), reinit=True
        )

    def log_point(self, point: Mapping[str, float]) -> None:
        self.run.log(_numbers(point), step=int(point["step"]))

    def finish(self, summary: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        self.run.config.update(_flat(config), allow_val_change=True)
        for key, value in summary.items():
            self.run.summary[f"test/{key}"] = value
        self.run.finish()


class Tracking:
    """The trackers of one run, fed by the runner's curve points and closed with the result."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def log_point(self, point: Mapping[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log_point(point)

    def finish(self, result: Mapping[str, Any], path: Path) -> None:
        summary = {
            "mean": result["summary"]["mean"],
            "ci95": result["summary"]["ci95"],
            "episodes": result["summary"]["n"],
            "verdict": result["verdict"]["verdict"],
            "difference": result["verdict"]["difference"],
            "reported": (result.get("reported") or {}).get("value", float("nan")),
            "budget_share": (result.get("budget") or {}).get("share", float("nan")),
            "result": str(path),
        }
        config = {
            "paper": result["paper"],
            "benchmark": result["benchmark"],
            "profile": result["profile"],
            "seed": result["seed"],
            "digest": result["test_episodes"]["digest"],
            "hyperparameters": result["hyperparameters"],
        }
        for tracker in self.trackers:
            tracker.finish(summary, config)


def open_trackers(names: Iterable[str], output: Path, run_name: str) -> Tracking:
    """The named trackers for one run, writing under ``output`` (``.tensorboard/``, ``.wandb/``)."""
    trackers: list[Tracker] = []
    for name in dict.fromkeys(names):
        if name not in TRACKERS:
            raise UnknownNameError(f"unknown tracker {name!r}", did_you_mean(name, list(TRACKERS)))
        if name == "tensorboard":
            trackers.append(TensorBoard(Path(output) / ".tensorboard" / run_name))
        else:
            trackers.append(WandB(Path(output) / ".wandb", run_name))
    return Tracking(trackers)
