"""Speed of a run's training step: ``metabench bench-steps`` (a benchmark command, never a timed test).

For ProtoNets (Omniglot 5w1s, 60-way 1-shot 5-query episodes, conv-4), MAML (Omniglot 5w1s, meta-batch
32, second order) and MANN (Omniglot 5 classes, 16 episodes of 50 steps) under their ``paper`` profiles,
it builds the run as ``metabench run`` does (plan, data, model, sampler, optimiser: the pieces
:mod:`metabench.estimate` times) and times the step the runner takes (sampling a batch, then one
optimiser step) under two allocator settings, one step of each in turn:

``before``  glibc's own settings;
``after``   the settings every run trains under (:func:`metabench.allocator.tune_for_training`).

Two pairings. ``lockstep`` (the default) runs each setting in its own fresh process and has them take
one step each in turn, so that a slow spell of the machine falls on both; ``before`` there calls no
``mallopt`` at all, which is glibc exactly as a run met it. ``in-process`` switches one process between
:func:`metabench.allocator.glibc_defaults` and the tuned settings before every step. That is not
exact: any ``mallopt`` call turns off glibc's dynamic mmap threshold (which a fresh process raises to
each mapped block it frees, up to 32 MiB), so its ``before`` maps more blocks than glibc would; and each
step inherits the heap the other setting left (a ``before`` step trims the heap top, which the next
``after`` step faults back in), so the two settings' costs bleed into each other.

Time is CPU time with one torch thread, which the other work of a shared machine barely inflates (the
wall clock is kept beside it); a configuration's rate is one over its median step, and the paired ratio
is the median over rounds of the before step's CPU time over the after step's that followed it. FLOPs
per step are counted once by ``torch.utils.flop_counter`` (on the after side; the setting changes no
arithmetic); GFLOP/s is that count over the median CPU seconds per step, and is given as a share of the
float32 matmul rate measured the same way (``size``-square products, CPU time, one thread). Minor page
faults and system CPU time per step come from ``getrusage`` around each step; the peak resident set is
each process's (``lockstep``) or the one process's (``in-process``).
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from metabench import allocator, training
from metabench.errors import MetabenchError
from metabench.estimate import scratch_run
from metabench.plan import RunRequest

#: method -> (paper, benchmark) whose training step is timed
METHODS: dict[str, tuple[str, str]] = {
    "protonet": ("protonet", "omniglot-5w1s"),
    "maml": ("maml", "omniglot-5w1s"),
    "mann": ("mann", "omniglot-5class"),
}
CONFIGS = ("before", "after")
PAIRINGS = ("lockstep", "in-process")


@dataclass
class Clocks:
    """One configuration's steps: CPU and wall seconds, minor page faults and system seconds, per step."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    system: list[float] = field(default_factory=list)
    #: the peak resident set of the process that took the steps (MiB)
    peak_rss_mib: float = 0.0

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
    with scratch_run(request, console) as (_, _, trainer):
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


def in_process(step: Callable[[], None], rounds: int, warmup: int) -> dict[str, Clocks]:
    """``warmup`` untimed then ``rounds`` timed rounds of one step under each configuration in turn, in
    this process, switching the allocator with ``mallopt`` before every step (see the module notes)."""
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
    for config in CONFIGS:
        clocks[config].peak_rss_mib = _peak_rss_mib()
    return clocks


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(link: Connection, config: str, method: str, profile: str, data_dir: Path | None) -> None:
    """One side of :func:`lockstep`: a fresh process under ``config`` (``before`` calls no ``mallopt``
    at all) that takes one step per ``step`` or ``warm`` message and answers ``finish`` with its clocks,
    the FLOPs of one more step and its peak memory."""
    try:
        torch.set_num_threads(1)
        if config == "after":
            apply(config)
        with trainer_for(method, profile, data_dir, Console(quiet=True)) as trainer:
            step, clocks = stepper(trainer), Clocks()
            link.send(("ready", None))
            while (message := link.recv()) != "finish":
                if message == "step":
                    timed(step, clocks)
                else:
                    step()
                link.send(("done", None))
            clocks.peak_rss_mib = _peak_rss_mib()
            link.send(("result", (clocks, step_flops(step))))
    except Exception as error:  # the parent turns it into one line
        link.send(("error", f"{type(error).__name__}: {error}"))


def lockstep(
    method: str, profile: str, rounds: int, warmup: int, data_dir: Path | None
) -> tuple[dict[str, Clocks], int]:
    """Each configuration in its own fresh process, one step of each in turn (``before``, ``after``),
    ``warmup`` untimed rounds first: paired like :func:`in_process`, but each process keeps its own
    allocator state, and ``before`` is glibc exactly as a process starts (its dynamic threshold too)."""
    context = multiprocessing.get_context("spawn")
    links: dict[str, Connection] = {}
    workers = []
    try:
        for config in CONFIGS:
            parent, child = context.Pipe()
            worker = context.Process(target=_worker, args=(child, config, method, profile, data_dir), daemon=True)
            worker.start()
            links[config] = parent
            workers.append(worker)
        for link in links.values():
            _answer(link, "ready")
        for index in range(warmup + rounds):
            for link in links.values():
                link.send("step" if index >= warmup else "warm")
                _answer(link, "done")
        results = {}
        for config, link in links.items():
            link.send("finish")
            results[config] = _answer(link, "result")
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
    return {config: clocks for config, (clocks, _) in results.items()}, results["after"][1]


def _answer(link: Connection, expected: str) -> Any:
    """The worker's answer to the last message, or its error as a :class:`MetabenchError`."""
    try:
        kind, payload = link.recv()
    except EOFError:
        raise MetabenchError("a timing process ended without answering (out of memory?)") from None
    if kind == "error":
        raise MetabenchError(f"timing process failed: {payload}")
    if kind != expected:
        raise MetabenchError(f"timing process answered {kind!r}, expected {expected!r}")
    return payload


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
                "peak_rss_mib": c.peak_rss_mib,
            }
        )
    return rows


def measure(
    methods: list[str],
    profile: str,
    rounds: int,
    warmup: int,
    data_dir: Path | None,
    console: Console,
    pairing: str = "lockstep",
    **rate: Any,
) -> dict[str, Any]:
    """Every method's paired before/after steps (``pairing``: ``lockstep`` in two fresh processes, or
    ``in-process``) and the matmul rate (``rate``: :func:`matmul_rate`'s arguments), as one report; torch
    runs on one thread throughout (this process's count is put back)."""
    if allocator._libc() is None:
        raise MetabenchError("the allocator settings compared here exist only on glibc (Linux)")
    if pairing not in PAIRINGS:
        raise MetabenchError(f"unknown pairing {pairing!r}", f"choose from {', '.join(PAIRINGS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        matmul = matmul_rate(**rate)
        rows = []
        for method in methods:
            if pairing == "lockstep":
                clocks, flops = lockstep(method, profile, rounds, warmup, data_dir)
            else:
                with trainer_for(method, profile, data_dir, console) as trainer:
                    step = stepper(trainer)
                    clocks = in_process(step, rounds, warmup)
                    flops = step_flops(step)
            rows += summary(method, clocks, flops, matmul)
    finally:
        torch.set_num_threads(threads)
        if pairing == "in-process" and not allocator.tune_for_training():
            allocator.glibc_defaults()
    return {"profile": profile, "pairing": pairing, "threads": 1, "matmul_gflops": matmul / 1e9, "rows": rows}


def report_table(report: dict[str, Any]) -> Table:
    """``metabench bench-steps``'s table: one row per method and configuration."""
    table = Table(
        title=f"Training steps, {report['profile']} profiles, paired {report['pairing']}, CPU time on 1 torch "
        f"thread (float32 matmul {report['matmul_gflops']:.1f} GFLOP/s)"
    )
    columns = ("method", "config", "steps/s", "wall/s", "GFLOP/s", "matmul", "faults", "sys ms", "peak MiB", "x before")
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
            f"{row['peak_rss_mib']:.0f}",
            f"{row['speed_vs_before']:.2f}",
        )
    return table
