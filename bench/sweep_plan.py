"""What a sweep is asked for: the jobs (papers x benchmarks x profiles x seeds), their SLURM resources,
the manifest that records them, and the ``metabench run`` command each job is.

Split from :mod:`metabench.sweeps` so that choosing and recording jobs reads apart from watching them
(:mod:`metabench.sweep_state`) and running them (:mod:`metabench.sweep_executors`); nothing here
touches a scheduler.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metabench.errors import MetabenchError, UnknownNameError, did_you_mean

STATE_FOLDER = ".sweep"
#: the manifest, hidden with the jobs' states and logs: a results folder holds only results as ``*.json``
MANIFEST = f"{STATE_FOLDER}/manifest.json"
SCHEMA = 1
PROFILES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class JobKey:
    """One run of a sweep: what ``metabench run`` is told."""

    paper: str
    benchmark: str
    profile: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.paper}__{self.benchmark}__{self.profile}__seed{self.seed}"


@dataclass
class SlurmOptions:
    """Per-job resources on SLURM; any left ``None`` is the cluster's default."""

    partition: str | None = None
    time: int = 240  # minutes; a SLURM job without one gets the partition's limit or submitit's 5 minutes
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)  # shell lines run before the job (module load ...)
    extra: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {"exclude": "n3"}


def slurm_options(config: Path | None, **flags: Any) -> SlurmOptions:
    """Options from the TOML file's ``[slurm]`` table (or its top level), then the flags given (not ``None``)."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise MetabenchError(f"{config}: {error}", "a TOML file with a [slurm] table") from None
        values = dict(data.get("slurm", data))
    known = set(SlurmOptions.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise UnknownNameError(
            f"{config}: unknown SLURM option {unknown[0]!r}", did_you_mean(unknown[0], sorted(known))
        )
    values.update({k: v for k, v in flags.items() if v is not None})
    return SlurmOptions(**values)


def parse_seeds(text: str) -> list[int]:
    """``0-4``, ``0,2,7`` or ``3`` (ranges inclusive, as people write them)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise MetabenchError(f"--seeds {text!r}: {part!r} is not a seed or a range", "e.g. --seeds 0-4 or 0,2,7")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        seeds.extend(s for s in range(low, high + 1) if s not in seeds)
    return seeds


def select(papers: list[str], benchmarks: list[str], everything: bool = False) -> list[tuple[str, str]]:
    """(paper, benchmark) pairs chosen by paper keys and benchmark ids, each a name or a glob.

    A benchmark pattern matches an id (``sinusoid-*``) or ``paper/id``; papers alone select all their
    benchmarks; ``everything`` is the whole registry. A plain name that matches nothing is an error
    with the closest names, so a typo never silently shrinks a sweep.
    """
    from metabench.registry_loader import all_specs

    specs = all_specs()
    if everything:
        return [(key, b.id) for key, spec in specs.items() for b in spec.benchmarks]
    if not papers and not benchmarks:
        raise MetabenchError("nothing selected", "name papers (--paper), benchmarks (--benchmark) or use --all")
    keys = list(specs)
    chosen_papers: list[str] = []
    for pattern in papers:
        matched = fnmatch.filter(keys, pattern)
        if not matched:
            raise UnknownNameError(f"no paper matches {pattern!r}", did_you_mean(pattern, keys))
        chosen_papers.extend(k for k in matched if k not in chosen_papers)
    pool = [(key, b.id) for key in (chosen_papers or keys) for b in specs[key].benchmarks]
    if not benchmarks:
        return pool
    picked: list[tuple[str, str]] = []
    for pattern in benchmarks:
        matched = [p for p in pool if fnmatch.fnmatch(p[1], pattern) or fnmatch.fnmatch(f"{p[0]}/{p[1]}", pattern)]
        if not matched:
            raise UnknownNameError(
                f"no benchmark matches {pattern!r}" + (f" in {', '.join(chosen_papers)}" if chosen_papers else ""),
                did_you_mean(pattern, sorted({b for _, b in pool})),
            )
        picked.extend(p for p in matched if p not in picked)
    return picked


def plan(pairs: list[tuple[str, str]], profiles: list[str], seeds: list[int]) -> list[JobKey]:
    for profile in profiles:
        if profile not in PROFILES:
            raise UnknownNameError(f"unknown profile {profile!r}", did_you_mean(profile, list(PROFILES)))
    return [JobKey(p, b, profile, s) for p, b in pairs for profile in profiles for s in seeds]


# --- the manifest -------------------------------------------------------------------------------------


def manifest_path(output: Path) -> Path:
    return Path(output) / MANIFEST


def read_manifest(output: Path) -> dict[str, Any]:
    path = manifest_path(output)
    if not path.is_file():
        raise MetabenchError(f"{output} holds no sweep ({MANIFEST} is missing)", "start one with metabench sweep")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise MetabenchError(f"{path}: not valid JSON ({error})") from None
    if data.get("schema") != SCHEMA or not isinstance(data.get("jobs"), dict):
        raise MetabenchError(f"{path}: not a metabench sweep manifest of schema {SCHEMA}")
    return data


def write_manifest(output: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    path = manifest_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def job_paths(output: Path, key: JobKey) -> tuple[Path, Path]:
    """The job's state file and log, inside the output folder so that they travel with it."""
    root = Path(output) / STATE_FOLDER
    return root / "state" / f"{key.name}.json", root / "logs" / f"{key.name}.log"


def command(key: JobKey, output: Path, device: str, extra: list[str]) -> list[str]:
    """The job's ``metabench run``; always ``--resume`` (from step 0 when there is no checkpoint), and
    ``--only-this-benchmark``: a job is one result, and the sweep runs a benchmark that shares another's
    training as a job of its own (sharing across jobs would write the same result twice)."""
    return [
        sys.executable,
        "-m",
        "metabench",
        "run",
        key.paper,
        "--benchmark",
        key.benchmark,
        "--profile",
        key.profile,
        "--seed",
        str(key.seed),
        "--device",
        device,
        "--output",
        str(Path(output).resolve()),
        "--resume",
        "--no-progress",
        "--only-this-benchmark",
        *extra,
    ]
