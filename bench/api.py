"""The Python API: the same operations as the command line, returning Python objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from metabench.episodes import ClassBank, EpisodeShape, freeze
from metabench.errors import MetabenchError
from metabench.evaluate import evaluate
from metabench.registry_loader import get_spec, implementation
from metabench.reproduction import Reproduction, TaskInfo
from metabench.result_schema import Result
from metabench.spec import Spec
from metabench.stats import Interval, mean_interval


def load_spec(paper: str) -> Spec:
    """A paper's validated spec (citation, benchmarks, reported numbers, profiles)."""
    return get_spec(paper)


def run_benchmark(paper: str, **options: Any) -> tuple[dict[str, Any], Path]:
    """Run a benchmark as ``metabench run`` does; options are :class:`~metabench.runner.RunRequest` fields.

    Returns the result dictionary and the path of its JSON file.
    """
    from metabench.runner import run

    return run(_request(paper, "run_benchmark", options))


def run_benchmarks(paper: str, **options: Any) -> list[tuple[dict[str, Any], Path]]:
    """Like :func:`run_benchmark`, scoring every benchmark the same training serves (as ``metabench run``
    does): one result per benchmark, the asked one first."""
    from metabench.runner import run_all

    options.setdefault("share_training", True)
    return run_all(_request(paper, "run_benchmarks", options))


def _request(paper: str, caller: str, options: dict[str, Any]) -> Any:
    """The :class:`~metabench.runner.RunRequest` both run functions build: no progress bars, the call
    recorded as the result's command, paths as ``Path``."""
    from metabench.runner import RunRequest

    options.setdefault("progress", False)
    options.setdefault("command", f"metabench.{caller}({paper!r}, **{options!r})")
    for key in ("output", "data_dir"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return RunRequest(paper=paper, **options)


def load_results(*paths: str | Path) -> pd.DataFrame:
    """Every result under the given files or folders (default ``results/``) as one DataFrame."""
    from metabench.compare import load_frame

    return load_frame([Path(p) for p in paths] or [Path("results")])


def load_model(result_path: str | Path, device: str = "cpu") -> Reproduction:
    """The trained model a run saved beside its result JSON, in evaluation mode."""
    result = Result.read(Path(result_path))
    weights = Path(result_path).with_name(result.weights or "no-weights-recorded")
    if not weights.is_file():
        raise MetabenchError(
            f"{result_path}: the run's weights ({weights.name}) are not beside it",
            "weights stay on the machine that ran it; re-run the recorded command",
        )
    saved = torch.load(weights, map_location=device, weights_only=True)
    cls = implementation(get_spec(result.paper))
    model = cls.build(saved["model"], TaskInfo(**saved["task"]))
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval()


@dataclass(frozen=True)
class ImageEvaluation:
    scores: Tensor
    summary: Interval
    digest: str


def evaluate_on_images(
    model: Reproduction,
    images: Tensor,
    *,
    ways: int,
    shots: int,
    queries: int,
    episodes: int = 600,
    seed: int = 0,
    batch_size: int = 50,
) -> ImageEvaluation:
    """Score ``model`` on frozen episodes drawn from the caller's images.

    ``images`` is ``[classes, examples, H, W]`` (or with a channel axis of 1) for a grayscale model, ink
    bright on a dark background as in metabench's Omniglot, or ``[classes, examples, C, H, W]`` for a
    model of ``C`` channels (RGB for miniImageNet); ``uint8`` 0-255, or float in [0, 1], at the model's
    image size.
    """
    channels = model.task.channels
    if channels == 1 and images.dim() == 5 and images.shape[2] == 1:
        images = images.squeeze(2)
    if channels == 1 and images.dim() != 4:
        raise MetabenchError(f"images must be [classes, examples, H, W], got shape {tuple(images.shape)}")
    if channels != 1 and (images.dim() != 5 or images.shape[2] != channels):
        raise MetabenchError(
            f"images must be [classes, examples, {channels}, H, W] for this {channels}-channel model, "
            f"got shape {tuple(images.shape)}"
        )
    size = model.task.image_size
    if tuple(images.shape[-2:]) != (size, size):
        raise MetabenchError(
            f"images are {tuple(images.shape[-2:])} but the model expects {size}x{size}",
            "resize them first, e.g. with torch.nn.functional.interpolate",
        )
    if images.dtype != torch.uint8:
        images = images.float().clamp(0, 1).mul(255).round().to(torch.uint8)
    device = next(model.parameters()).device
    bank = ClassBank(images.to(device), "caller's images")
    frozen = freeze(bank, EpisodeShape(ways, shots, queries), episodes, seed, {"dataset": "caller"})
    scores = evaluate(model, frozen, bank, batch_size)
    return ImageEvaluation(scores, mean_interval(scores), frozen.digest)


def list_benchmarks() -> pd.DataFrame:
    """What ``metabench list`` shows, one row per benchmark, as a DataFrame (``list --format json`` too).

    Scripts that sweep over the registry read it here instead of reaching into internal modules.
    """
    from metabench.listing import list_benchmarks as rows

    return rows()


def sweep(
    papers: list[str] | str | None = None,
    benchmarks: list[str] | str | None = None,
    *,
    everything: bool = False,
    profiles: list[str] | str = "quick",
    seeds: list[int] | str | int = 0,
    output: str | Path = "results/sweep",
    executor: str = "local",
    wait: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run a sweep as ``metabench sweep`` does and return its manifest (``OUTPUT/.sweep/manifest.json``).

    ``seeds`` is a list or ``"0-4"``; other options are :class:`~metabench.sweeps.SweepRequest` fields
    (``jobs``, ``cpus_per_job``, ``device``, ``slurm=SlurmOptions(...)``). The local executor always
    waits; on SLURM ``wait=False`` returns once the job array is queued, and
    ``metabench.sweep_status(output)`` reports later.
    """
    from metabench import sweeps as sweeping

    def listed(value: list[str] | str | None) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    seed_list = sweeping.parse_seeds(seeds) if isinstance(seeds, str) else [seeds] if isinstance(seeds, int) else seeds
    request = sweeping.SweepRequest(
        papers=listed(papers),
        benchmarks=listed(benchmarks),
        everything=everything,
        profiles=listed(profiles),
        seeds=list(seed_list),
        output=Path(output),
        executor=executor,
        wait=wait,
        **options,
    )
    return sweeping.sweep(request)


def sweep_status(output: str | Path) -> pd.DataFrame:
    """Each job of the sweep in ``output`` and its state, as ``metabench sweep status`` shows it."""
    from metabench import sweeps as sweeping

    return pd.DataFrame(sweeping.status(Path(output)))
