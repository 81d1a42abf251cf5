"""Speed of a run's training step: ``metabench bench-steps`` (a benchmark command, never a timed test).

For ProtoNets (Omniglot 5w1s, 60-way 1-shot 5-query episodes, conv-4), MAML (Omniglot 5w1s, meta-batch
32, second order) and MANN (Omniglot 5 classes, 16 episodes of 50 steps) under their ``paper`` profiles,
it builds the run as ``metabench run`` does (plan, data, model, sampler, optimiser: the pieces
:mod:`metabench.estimate` times) and times the step the runner takes (sampling a batch, then one
optimiser step) under two allocator settings in one process, one step of each in turn:

``before``  glibc's starting settings (:func:`metabench.allocator.glibc_defaults`);
``after``   the settings every run trains under (:func:`metabench.allocator.tune_for_training`).

Time is this process's CPU time with one torch thread, which the other work of a shared machine barely
inflates (the wall clock is kept beside it); a configuration's rate is one over its median step, and the
paired ratio is the median over rounds of the before step's CPU time over the after step's that
followed it. FLOPs per step are counted once by ``torch.utils.flop_counter`` (as a step under the after
setting, which changes no arithmetic); GFLOP/s is that count over the median CPU seconds per step, and
is given as a share of the float32 matmul rate measured the same way (``size``-square products, CPU
time, one thread). Minor page faults and system CPU time per step come from ``getrusage`` around each
step, so they are each configuration's own; peak memory is the process's and so is common to both.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from metabench import allocator, training
from metabench.banks import Banks
from metabench.checkpoint import Checkpointer
from metabench.errors import MetabenchError
from metabench.plan import RunRequest, build_model, make_plan
from metabench.registry_loader import get_spec

#: method -> (paper, benchmark) whose training step is timed
METHODS: dict[str, tuple[str, str]] = {
    "protonet": ("protonet", "omniglot-5w1s"),
    "maml": ("maml", "omniglot-5w1s"),
    "mann": ("mann", "omniglot-5class"),
}
CONFIGS = ("before", "after")


@dataclass
class Clocks:
    """One configuration's steps: CPU and wall seconds, minor page faults and system seconds, per step."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    system: list[float] = field(default_factory=list)

    def add(self, cpu: float, wall: float, faults: int, system: float) -> None:
        self.cpu.append(cpu)
        self.wall.append(wall)
        self.faults.append(faults)
        self.system.append(system)


def apply(config: str) -> bool:
    """Set the allocator for ``config`` (``before`` or ``after``); False where the C library is not glibc."""
    if config == "before":
        return allocator.glibc_defaults()
    return allocator.set_allocator(0, allocator.TRIM_THRESHOLD)


def matmul_rate(size: int = 1024, seconds: float = 1.0) -> float:
    """float32 FLOP per second of CPU time of ``size``-square matmuls, on the current torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.process_time() - started)


@contextmanager
def trainer_for(method: str, profile: str, data_dir: Path | None, console: Console) -> Iterator[training.Trainer]:
    """The method's run at step 0, built as ``metabench run`` builds it (seed 0, CPU); nothing is written
    outside a scratch folder that is removed afterwards."""
    if method not in METHODS:
        raise MetabenchError(f"unknown method {method!r}", f"choose from {', '.join(METHODS)}")
    paper, benchmark = METHODS[method]
    request = RunRequest(
        paper=paper, benchmark=benchmark, profile=profile, device="cpu", data_dir=data_dir, progress=False
    )
    plan = make_plan(request, get_spec(paper), console)
    banks = Banks(plan.bench, request.data_dir, plan.device, download=request.download, progress=False)
    torch.manual_seed(request.seed)
    model = build_model(plan.spec, plan.targets[0]).to(plan.device)
    with tempfile.TemporaryDirectory() as scratch:
        ckpt = Checkpointer(Path(scratch) / "steps.pt", plan.fingerprint(request.seed))
        trainer = training.start(model, plan.profile, plan.bench, banks, request.seed, ckpt, None, console)
        model.train()
        yield trainer


def stepper(trainer: training.Trainer) -> Callable[[], None]:
    """One step as the runner takes it: a fresh batch at each batch boundary, then one optimiser step."""
    held: list[Any] = []

    def step() -> None:
        if not held or trainer.state.step % trainer.profile.steps_per_batch == 0:
            held[:] = [trainer.next_batch()]
        trainer.step(held[0])

    return step


def timed(step: Callable[[], None], clocks: Clocks) -> None:
    """Run ``step`` once and add its CPU, wall and system seconds and minor faults to ``clocks``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    clocks.add(cpu, wall, after.ru_minflt - usage.ru_minflt, after.ru_stime - usage.ru_stime)


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one step, as ``torch.utils.flop_counter`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def paired_steps(step: Callable[[], None], rounds: int, warmup: int) -> dict[str, Clocks]:
    """``warmup`` untimed then ``rounds`` timed rounds of one step under each configuration in turn."""
    clocks = {config: Clocks() for config in CONFIGS}
    for _ in range(warmup):
        for config in CONFIGS:
            apply(config)
            step()
    for _ in range(rounds):
        for config in CONFIGS:
            apply(config)
            timed(step, clocks[config])
    apply("after")
    return clocks


def summary(method: str, clocks: dict[str, Clocks], flops: int, rate: float) -> list[dict[str, Any]]:
    """The table's rows for one method: each configuration's rates, and the paired ratio on ``after``."""
    before, after = clocks["before"].cpu, clocks["after"].cpu
    ratio = statistics.median(b / a for b, a in zip(before, after, strict=True))
    rows = []
    for config in CONFIGS:
        c = clocks[config]
        cpu = statistics.median(c.cpu)
        rows.append(
            {
                "method": method,
                "config": config,
                "steps": len(c.cpu),
                "cpu_seconds_per_step": cpu,
                "steps_per_second": 1.0 / cpu,
                "wall_steps_per_second": 1.0 / statistics.median(c.wall),
                "gflop_per_step": flops / 1e9,
                "gflops": flops / cpu / 1e9,
                "fraction_of_matmul": flops / cpu / rate,
                "minor_faults_per_step": statistics.fmean(c.faults),
                "system_seconds_per_step": statistics.fmean(c.system),
                "speed_vs_before": ratio if config == "after" else 1.0,
            }
        )
    return rows


def measure(
    methods: list[str], profile: str, rounds: int, warmup: int, data_dir: Path | None, console: Console, **rate: Any
) -> dict[str, Any]:
    """Every method's paired before/after steps and the matmul rate (``rate``: :func:`matmul_rate`'s
    arguments), as one report; torch runs on one thread throughout (the previous count is put back)."""
    if allocator._libc() is None:
        raise MetabenchError("the allocator settings compared here exist only on glibc (Linux)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        apply("after")
        matmul = matmul_rate(**rate)
        rows = []
        for method in methods:
            with trainer_for(method, profile, data_dir, console) as trainer:
                step = stepper(trainer)
                clocks = paired_steps(step, rounds, warmup)
                rows += summary(method, clocks, step_flops(step), matmul)
    finally:
        torch.set_num_threads(threads)
        if not allocator.tune_for_training():
            allocator.glibc_defaults()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"profile": profile, "threads": 1, "matmul_gflops": matmul / 1e9, "peak_rss_mib": peak, "rows": rows}


def report_table(report: dict[str, Any]) -> Table:
    """``metabench bench-steps``'s table: one row per method and configuration."""
    table = Table(
        title=f"Training steps, {report['profile']} profiles, CPU time on 1 torch thread "
        f"(float32 matmul {report['matmul_gflops']:.1f} GFLOP/s)"
    )
    columns = ("method", "config", "steps/s", "wall/s", "GFLOP/s", "matmul", "faults", "sys ms", "x before")
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "config") else "right", no_wrap=True)
    for row in report["rows"]:
        table.add_row(
            row["method"],
            row["config"],
            f"{row['steps_per_second']:.3f}",
            f"{row['wall_steps_per_second']:.3f}",
            f"{row['gflops']:.1f}",
            f"{row['fraction_of_matmul']:.0%}",
            f"{row['minor_faults_per_step']:.0f}",
            f"{row['system_seconds_per_step'] * 1000:.0f}",
            f"{row['speed_vs_before']:.2f}",
        )
    return table
