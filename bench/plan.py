"""The plan of a run: which paper, benchmark, profile and device, with the request's overrides applied,
and which other benchmarks the same training serves.

Everything here is decided before any data loads or any weight is built, so that a request that cannot
run fails in a second and the terminal says, before training starts, which benchmarks the run will score.

One training, every test shape it serves: benchmarks of a spec whose training is the same (dataset,
split, image size, episode kind, every training setting of the resolved profile and the model's
settings other than its ``eval_*`` keys) differ only in how they are tested, so one run trains once and
scores each of them on its own frozen episodes (ProtoNets' 60-way 1-shot model gives the 5-way and the
20-way 1-shot rows). ``metabench run`` does so unless ``--only-this-benchmark``; in Python,
``RunRequest(share_training=True)`` or :func:`metabench.api.run_benchmarks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from metabench import checkpoint, provenance, results
from metabench import overrides as overrides_module
from metabench.data import channels as dataset_channels
from metabench.errors import MetabenchError, UnknownNameError, did_you_mean
from metabench.registry_loader import implementation
from metabench.reproduction import Reproduction, TaskInfo
from metabench.spec import Benchmark, Profile, Spec, minimum_test_episodes

#: profile fields that decide only how a trained model is tested or judged, never how it is trained
TEST_ONLY_FIELDS = frozenset(
    {"name", "test_episodes", "eval_batch", "floor", "floor_note", "min_above_chance", "learning_part", "model"}
)
#: model keys starting with this prefix change only the test-time procedure (MAML's ``eval_inner_steps``)
EVAL_ONLY_PREFIX = "eval_"


@dataclass
class RunRequest:
    """Everything a run needs; the CLI and the Python API both build one."""

    paper: str
    benchmark: str | None = None
    profile: str = "quick"
    seed: int = 0
    device: str = "auto"
    shots: int | None = None
    ways: int | None = None
    dataset: str | None = None
    variant: str | None = None
    test_episodes: int | None = None
    train_episodes: int | None = None
    #: ``--set`` changes to the profile (see :mod:`metabench.overrides`), already parsed
    settings: dict[str, Any] = field(default_factory=dict)
    data_dir: Path | None = None
    output: Path = Path("results")
    resume: bool = False
    fresh: bool = False
    stop_after: int | None = None
    download: bool = True
    progress: bool = True
    #: also score every other benchmark the same training serves; the CLI sets it unless
    #: ``--only-this-benchmark``, the Python API only when asked (``run_benchmarks``)
    share_training: bool = False
    command: str = field(default_factory=provenance.command_line)
    #: ``--images FOLDER``: the benchmark's method and profile on the user's own classes
    images: Path | None = None
    #: called with every point of the learning curve as it is recorded (``--tracker``, or a caller's own)
    on_point: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class Target:
    """One benchmark a run scores, with its own resolved profile (test episodes, floor)."""

    bench: Benchmark
    profile: Profile


@dataclass(frozen=True)
class Plan:
    """What a run will do, resolved from its request: the trained benchmark first, then the benchmarks
    its training also serves."""

    spec: Spec
    targets: tuple[Target, ...]
    overrides: dict[str, Any]
    device: torch.device
    why: str

    @property
    def bench(self) -> Benchmark:
        """The benchmark the run trains for (the one asked)."""
        return self.targets[0].bench

    @property
    def profile(self) -> Profile:
        return self.targets[0].profile

    @property
    def label(self) -> str:
        """The profile's name, or ``quick+set-1a2b3c4d`` for an experiment, in checkpoint and result names."""
        settings = self.overrides.get("set")
        return f"{self.profile.name}+set-{overrides_module.digest(settings)}" if settings else self.profile.name

    def fingerprint(self, seed: int) -> str:
        """What a checkpoint must have been trained with to be resumed by this plan."""
        settings = {"paper": self.spec.key, "benchmark": self.bench.id, "profile": self.profile.hyperparameters()}
        return checkpoint.fingerprint({**settings, "seed": seed})


def checkpoint_path(output: Path, paper: str, bench: str, profile: str, seed: int) -> Path:
    return Path(output) / results.CHECKPOINT_FOLDER / f"{paper}__{bench}__{profile}__seed{seed}.pt"


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA, then Apple's MPS, then the CPU; an unavailable explicit choice is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MetabenchError(
            "--device cuda: no CUDA device is visible to this torch build",
            f"torch {torch.__version__}; use --device cpu or install a CUDA build of torch",
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MetabenchError("--device mps: Apple's MPS backend is not available here", "use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UnknownNameError(f"unknown device {name!r}", did_you_mean(name, ["auto", "cpu", "cuda", "mps"]))
    return torch.device(name)


def resolve_benchmark(
    spec: Spec,
    benchmark: str | None,
    *,
    shots: int | None,
    ways: int | None,
    dataset: str | None,
    variant: str | None = None,
) -> tuple[Benchmark, str]:
    """The benchmark a request names, or the paper's default for its shots/ways/dataset, and why.

    Without ``variant`` only a paper's main benchmarks are candidates; ``variant`` (e.g. MANN's
    ``lstm`` baseline) picks among the benchmarks that reproduce that row of the paper instead.
    """
    if benchmark is not None:
        chosen = spec.benchmark(benchmark)
        clashes = [
            f"--{n} {v}"
            for n, v, b in (
                ("shots", shots, chosen.shots),
                ("ways", ways, chosen.ways),
                ("dataset", dataset, chosen.dataset),
                ("variant", variant, chosen.variant),
            )
            if v is not None and v != b
        ]
        if clashes:
            raise MetabenchError(
                f"{', '.join(clashes)} contradicts benchmark {chosen.id!r}",
                "give either --benchmark or the filters, not both",
            )
        return chosen, f"benchmark {chosen.id} (as asked)"
    variants = sorted({b.variant for b in spec.benchmarks if b.variant})
    if variant is not None and variant not in variants:
        raise UnknownNameError(
            f"{spec.key} has no variant {variant!r}",
            did_you_mean(variant, variants) if variants else "this paper has no variants",
        )
    matching = [
        b
        for b in spec.benchmarks
        if (shots is None or b.shots == shots)
        and (ways is None or b.ways == ways)
        and (dataset is None or b.dataset == dataset)
        and b.variant == (variant or "")
    ]
    if not matching:
        offered = ", ".join(f"{b.id} ({b.ways}-way {b.shots}-shot {b.dataset})" for b in spec.benchmarks)
        asked = " ".join(
            f"--{n} {v}"
            for n, v in (("ways", ways), ("shots", shots), ("dataset", dataset), ("variant", variant))
            if v is not None
        )
        raise MetabenchError(f"{spec.key} has no benchmark matching {asked or 'the request'}", f"it has: {offered}")
    chosen = next((b for b in matching if b.default), None)
    if chosen is None:
        chosen = min(matching, key=lambda b: (b.ways, b.shots))
    why = "the paper's default" if chosen.default else "the smallest matching setting"
    setting = f"{chosen.ways}-way {chosen.shots}-shot" if chosen.shots else f"supervised, {chosen.ways} classes"
    return chosen, f"benchmark {chosen.id} ({setting} {chosen.dataset}; {why})"


def resolved_profile(request: RunRequest, spec: Spec, bench: Benchmark) -> tuple[Profile, dict[str, Any]]:
    """``bench``'s profile with the request's ``--train-episodes``, ``--episodes`` and ``--set`` applied,
    and those overrides as a result records them."""
    profile = bench.profile(request.profile)
    overrides: dict[str, Any] = {}
    if request.train_episodes is not None:
        if request.train_episodes % profile.steps_per_batch:
            raise MetabenchError(
                f"--train-episodes {request.train_episodes} is not a multiple of the profile's steps_per_batch "
                f"({profile.steps_per_batch})",
                "training ends on a batch boundary; round it to a multiple",
            )
        overrides["train_episodes"] = request.train_episodes
    if request.test_episodes is not None:
        minimum = minimum_test_episodes(profile.name, bench.first_reported)
        if request.test_episodes < minimum:
            raise MetabenchError(
                f"--episodes {request.test_episodes} is too few for the {profile.name} profile",
                f"use at least {minimum} (600; a paper run also the paper's own count when larger)",
            )
        overrides["test_episodes"] = request.test_episodes
    profile = replace(profile, **overrides)
    if request.settings:
        model_keys = [f.name for f in dataclasses.fields(implementation(spec).Hyperparameters)]
        profile = overrides_module.apply(profile, request.settings, bench.first_reported, model_keys)
        overrides["set"] = dict(request.settings)
    return profile, overrides


def training_key(bench: Benchmark, profile: Profile) -> dict[str, Any]:
    """Everything that decides how a model of ``bench`` is trained under ``profile``; two benchmarks with
    equal keys can be served by one training.

    Validation decides the tested weights only under early stopping, so only then is the benchmark's
    test shape (at which validation episodes are drawn) part of the key.
    """
    settings = {k: v for k, v in profile.hyperparameters().items() if k not in TEST_ONLY_FIELDS}
    model = {k: v for k, v in profile.model.items() if not k.startswith(EVAL_ONLY_PREFIX)}
    data = (bench.dataset, bench.split, bench.image_size, bench.sequence)
    shape = (bench.ways, bench.shots, bench.queries) if profile.early_stopping else None
    return {"data": data, "settings": settings, "model": model, "validation": shape}


def shared_targets(request: RunRequest, spec: Spec, trained: Target) -> tuple[Target, ...]:
    """The other benchmarks of ``spec`` whose training under this request is the trained one's."""
    key = training_key(trained.bench, trained.profile)
    found = []
    for bench in spec.benchmarks:
        if bench.id == trained.bench.id or request.profile not in bench.profiles:
            continue
        profile, _ = resolved_profile(request, spec, bench)
        if training_key(bench, profile) == key and same_weights(spec, trained, Target(bench, profile)):
            found.append(Target(bench, profile))
    return tuple(found)


def make_plan(request: RunRequest, spec: Spec, console: Console) -> Plan:
    """Resolve the request against its spec: benchmark, profile with overrides, device, shared targets."""
    bench, why = resolve_benchmark(
        spec,
        request.benchmark,
        shots=request.shots,
        ways=request.ways,
        dataset=request.dataset,
        variant=request.variant,
    )
    if request.images is not None:
        from metabench.data import imagefolder

        bench = imagefolder.user_benchmark(bench, request.images)
        why += f", on your images in {bench.split} (no paper verdict)"
    profile, overrides = resolved_profile(request, spec, bench)
    if request.settings:
        console.print(f"Experiment, not the paper's profile: --set {overrides_module.label(request.settings)}")
    device = pick_device(request.device)
    if request.images is not None:
        imagefolder.check_fits(
            imagefolder.load(Path(bench.split), bench.image_size, imagefolder.mode_for(bench)), bench, profile
        )
    trained = Target(bench, profile)
    # a user's folder is scored as asked: the registry's other test shapes are not its benchmarks
    shared = shared_targets(request, spec, trained) if request.share_training and request.images is None else ()
    return Plan(spec, (trained, *shared), overrides, device, why)


def task_info(bench: Benchmark) -> TaskInfo:
    """What a model of ``bench`` is built for: its images and its test shape."""
    return TaskInfo(
        channels=dataset_channels(bench.dataset), image_size=bench.image_size, ways=bench.ways, shots=bench.shots
    )


def build_model(spec: Spec, target: Target) -> Reproduction:
    """A fresh model of ``spec``'s implementation for ``target`` (drawing its initial weights)."""
    where = f"{spec.source.name}.benchmarks[{target.bench.id}].profiles.{target.profile.name}.model"
    return implementation(spec).build(target.profile.model, task_info(target.bench), where=where)


def same_weights(spec: Spec, trained: Target, other: Target) -> bool:
    """Whether the weights of a model built for ``trained`` load into one built for ``other`` (same names and
    shapes: a head sized by the test ways would differ). Built aside, leaving the random generators be."""
    with torch.random.fork_rng(devices=[]):
        first, second = build_model(spec, trained).state_dict(), build_model(spec, other).state_dict()
    return first.keys() == second.keys() and all(first[k].shape == second[k].shape for k in first)
