"""``metabench run`` past its typer signature: the options checked, turned into a :class:`RunRequest`,
and the trackers opened.

Kept apart from :mod:`metabench.cli` so that the command function reads as its options plus three
steps (request, run, print), and so that every check of a run's options sits in one place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from metabench.errors import MetabenchError

if TYPE_CHECKING:
    from metabench.runner import RunRequest
    from metabench.trackers import Tracking


def build_request(
    *,
    paper: str,
    benchmark: str | None,
    profile: str,
    seed: int,
    device: str,
    shots: int | None,
    ways: int | None,
    dataset: str | None,
    variant: str | None,
    episodes: int | None,
    train_episodes: int | None,
    set_: list[str] | None,
    data_dir: Path | None,
    output: Path,
    resume: bool,
    fresh: bool,
    stop_after: int | None,
    no_download: bool,
    no_progress: bool,
    only_this_benchmark: bool,
    images: Path | None,
) -> RunRequest:
    """Check the options in the order the command always has (so the first error a user sees is the
    same), then build the request; ``--set`` is parsed last, after every plain option passed."""
    from metabench import options, overrides
    from metabench.runner import RunRequest

    if resume and fresh:
        raise MetabenchError("--resume and --fresh contradict each other", "pick one")
    options.seed(seed)
    options.positive("--ways", ways, "--ways picks the benchmark with that many classes (see `metabench show`)")
    options.at_least("--shots", shots, 0)  # 0 shots: the supervised benchmarks
    options.positive("--episodes", episodes)
    options.positive("--train-episodes", train_episodes)
    options.positive("--stop-after", stop_after)
    options.existing_folder("--data-dir", data_dir)
    options.writable_folder("--output", output)
    return RunRequest(
        paper=paper,
        benchmark=benchmark,
        profile=profile,
        seed=seed,
        device=device,
        shots=shots,
        ways=ways,
        dataset=dataset,
        variant=variant,
        test_episodes=episodes,
        train_episodes=train_episodes,
        settings=overrides.parse_assignments(set_ or []),
        data_dir=data_dir,
        output=output,
        resume=resume,
        fresh=fresh,
        stop_after=stop_after,
        download=not no_download,
        progress=not no_progress and sys.stderr.isatty(),
        share_training=not only_this_benchmark,
        images=images,
    )


def open_tracking(tracker: list[str] | None, request: RunRequest) -> Tracking | None:
    """Open the ``--tracker`` backends (none asked: ``None``) under a name that tells runs apart, and
    route the run's learning-curve points to them."""
    if not tracker:
        return None
    from datetime import UTC, datetime

    from metabench.trackers import open_trackers

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{request.paper}-{request.benchmark or 'default'}-{request.profile}-seed{request.seed}-{stamp}"
    tracking = open_trackers(tracker, request.output, name)
    request.on_point = tracking.log_point
    return tracking
