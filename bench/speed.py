"""Speed of the inner-loop engine: ``metabench bench`` (a benchmark command, never a timed test).

For MAML on Omniglot 5-way 1-shot (conv-4, 64 filters, strided: the registry's paper-profile model, see
:data:`MODEL`) with a meta-batch of 32 it measures,
for each engine path and for second- and first-order MAML: meta-iterations per second (from the median
iteration, which one slowed by the machine's other work does not move), the achieved
GFLOP/s (the FLOPs of one meta-iteration counted by ``torch.utils.flop_counter``, divided by its time)
as a fraction of the machine's float32 matmul rate measured in the same run, and the peak memory. (The
flop counter miscounts vmap'd convolutions, so both paths are credited with the per-task loop's count.) When
``learn2learn`` or ``higher`` is importable, their usual MAML loops run too (an optional comparison,
never a dependency). Each configuration runs in a fresh subprocess, so that peak memory (the process's
maximum resident set on a CPU, ``torch.cuda.max_memory_allocated`` on a GPU) is its own. The process
peak includes what its imports and model cost, which differs between libraries for reasons unrelated
to the inner loop, so each row also reports the memory before the first step and the rise above it
during the steps (``step_memory_mb``): that rise is what a meta-iteration itself needs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from metabench.reproduction import Reproduction

#: the registry's (paper, benchmark, profile) whose model the engine paths are timed on; the core builds it
#: from the spec's ``implementation``, as a run does, and imports no paper's module
MODEL = ("maml", "omniglot-5w1s", "paper")
CONFIGS = (
    "engine-loop/second",
    "engine-batched/second",
    "engine-loop/first",
    "engine-batched/first",
    "learn2learn/second",
    "learn2learn/first",
    "higher/second",
    "higher/first",
)


@dataclass(frozen=True)
class Setting:
    device: str = "cpu"
    meta_batch: int = 32
    ways: int = 5
    shots: int = 1
    iterations: int = 10
    warmup: int = 1
    #: rounds over every configuration; each configuration's row is its median round
    repeats: int = 3
    threads: int = 0


def matmul_rate(device: torch.device, size: int = 1024, seconds: float = 1.0) -> float:
    """The machine's float32 matmul rate (FLOP/s), from repeated ``size``-square products."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    _sync(device)
    return 2 * size**3 * count / (time.perf_counter() - started)


def _resident_bytes() -> int:
    """The process's resident set now (Linux ``/proc``; 0 where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * resource.getpagesize()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch(setting: Setting, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    n = setting.ways * setting.shots
    xs = torch.rand(setting.meta_batch, n, 1, 28, 28, generator=g).to(device)
    xq = torch.rand(setting.meta_batch, n, 1, 28, 28, generator=g).to(device)
    y = torch.arange(setting.ways).repeat_interleave(setting.shots).repeat(setting.meta_batch, 1).to(device)
    return xs, y, xq, y


def engine_model(path: str, first_order: bool, setting: Setting) -> Reproduction:
    """The model :data:`MODEL` names, built from its spec as the runner builds one, on engine ``path``."""
    from metabench.plan import Target, build_model
    from metabench.registry_loader import get_spec

    paper, bench_id, profile_name = MODEL
    spec = get_spec(paper)
    bench = spec.benchmark(bench_id)
    profile = bench.profiles[profile_name]
    model = {**profile.model, "first_order": first_order, "engine": path}
    target = Target(replace(bench, ways=setting.ways, shots=setting.shots), replace(profile, model=model))
    return build_model(spec, target)


def _engine_step(path: str, first_order: bool, setting: Setting, device: torch.device) -> Callable[[], None]:
    from metabench.episodes import EpisodeBatch

    model = engine_model(path, first_order, setting).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, y, xq, yq = _batch(setting, device)
    batch = EpisodeBatch(xs, y, xq, yq, setting.ways, setting.shots)

    def step() -> None:
        optimizer.zero_grad()
        model.start_batch(batch, 1)
        model.meta_loss(batch).loss.backward()
        optimizer.step()
        model.weights_changed()

    return step


def _native_conv4(setting: Setting) -> torch.nn.Module:
    """The same strided conv-4 with torch's own batch norm, as learn2learn and higher users write it."""
    from torch import nn

    layers: list[nn.Module] = []
    for a, b in ((1, 64), (64, 64), (64, 64), (64, 64)):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, setting.ways))


def _learn2learn_maml() -> Any:
    """learn2learn's ``MAML`` class (an optional comparison, never a dependency).

    Importing the ``learn2learn`` package also imports its vision and gym extras, which need torchvision
    and gym; torchvision has no CPU-only wheel on PyPI, and a CUDA one fails to import beside a CPU torch.
    The MAML loop itself needs neither (``learn2learn.algorithms.maml`` imports only torch and
    ``learn2learn.utils``), so where the package import fails that module is loaded on its own.
    """
    try:
        import learn2learn

        return learn2learn.algorithms.MAML
    except (ImportError, RuntimeError) as error:
        found = importlib.util.find_spec("learn2learn")
        if found is None or not found.submodule_search_locations:
            raise ImportError("learn2learn is not installed", name="learn2learn") from error
        root = Path(next(iter(found.submodule_search_locations)))
        for name, folder in (("learn2learn", root), ("learn2learn.algorithms", root / "algorithms")):
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
        return importlib.import_module("learn2learn.algorithms.maml").MAML


def _library_step(library: str, first_order: bool, setting: Setting, device: torch.device) -> Callable[[], None]:
    model = _native_conv4(setting).to(device)
    xs, y, xq, yq = _batch(setting, device)
    if library == "learn2learn":
        maml = _learn2learn_maml()(model, lr=0.4, first_order=first_order)
        optimizer = torch.optim.Adam(maml.parameters(), lr=1e-3)

        def step() -> None:
            optimizer.zero_grad()
            for i in range(setting.meta_batch):
                learner = maml.clone()
                learner.adapt(F.cross_entropy(learner(xs[i]), y[i]))
                (F.cross_entropy(learner(xq[i]), yq[i]) / setting.meta_batch).backward()
            optimizer.step()

        return step
    import higher  # optional comparison

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inner = torch.optim.SGD(model.parameters(), lr=0.4)

    def higher_step() -> None:
        optimizer.zero_grad()
        for i in range(setting.meta_batch):
            with higher.innerloop_ctx(model, inner, copy_initial_weights=False, track_higher_grads=not first_order) as (
                fmodel,
                diffopt,
            ):
                diffopt.step(F.cross_entropy(fmodel(xs[i]), y[i]))
                (F.cross_entropy(fmodel(xq[i]), yq[i]) / setting.meta_batch).backward()
        optimizer.step()

    return higher_step


def _step_of(config: str, setting: Setting, device: torch.device) -> Callable[[], None]:
    kind, order = config.split("/")
    if kind.startswith("engine-"):
        return _engine_step(kind.removeprefix("engine-"), order == "first", setting, device)
    return _library_step(kind, order == "first", setting, device)


def measure(config: str, setting: Setting) -> dict[str, Any]:
    """One configuration in this process: iterations/s, FLOPs per iteration, GFLOP/s and peak memory."""
    from torch.utils.flop_counter import FlopCounterMode

    if setting.threads:
        torch.set_num_threads(setting.threads)
    device = torch.device(setting.device)
    try:
        step = _step_of(config, setting, device)
    except ImportError as error:
        return {"config": config, "skipped": f"not installed ({error.name})"}
    _sync(device)
    before = torch.cuda.memory_allocated() if device.type == "cuda" else _resident_bytes()
    for _ in range(setting.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(setting.iterations):
        started = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - started)
    # The median iteration: a shared machine's other work slows some iterations by a lot, and a mean
    # lets one of them decide a comparison between configurations measured minutes apart.
    seconds = statistics.median(times)
    # The peak of the meta-iterations themselves, before the flop counter's own bookkeeping adds to it.
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        # ru_maxrss (kilobytes on Linux) is the kernel's high-water mark, which it updates lazily: right
        # after growth the current RSS can stand above it, so the peak is the larger of the two
        peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, _resident_bytes())
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    flops = counter.get_total_flops()
    return {
        "config": config,
        "iterations_per_second": 1.0 / seconds,
        "gflop_per_iteration": flops / 1e9,
        "gflops": flops / seconds / 1e9,
        "peak_memory_mb": peak / 2**20,
        "setup_memory_mb": before / 2**20,
        "step_memory_mb": max(peak - before, 0) / 2**20,
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
    }


def paired(configs: list[str], setting: Setting) -> dict[str, Any]:
    """Configurations timed in one process, one meta-iteration of each in turn, ``iterations`` rounds.

    Why: on a shared machine the speed of separate processes drifts by half or more between minutes,
    which decides a comparison of configurations that differ by a few percent. Alternating them puts
    each round's slow spells on all of them alike; the speed of ``configs[0]`` against each other is
    the median over rounds of their time ratio. (Memory is not measured here: see :func:`measure`.)
    """
    if setting.threads:
        torch.set_num_threads(setting.threads)
    device = torch.device(setting.device)
    steps = {config: _step_of(config, setting, device) for config in configs}
    for step in steps.values():
        for _ in range(setting.warmup):
            step()
    seconds: dict[str, list[float]] = {config: [] for config in configs}
    for _ in range(setting.iterations):
        for config, step in steps.items():
            _sync(device)
            started = time.perf_counter()
            step()
            _sync(device)
            seconds[config].append(time.perf_counter() - started)
    first = configs[0]
    ratios = {
        other: statistics.median(b / a for a, b in zip(seconds[first], seconds[other], strict=True))
        for other in configs[1:]
    }
    return {"configs": configs, "seconds": seconds, "speed_of_first": ratios}


def _measure_in_subprocess(config: str, setting: Setting, *, pair: bool = False) -> dict[str, Any]:
    """``measure`` (or, with ``pair``, :func:`paired` over the comma-separated ``config``) in a fresh process."""
    args = [sys.executable, "-m", "metabench.speed", "--paired" if pair else "--one", config]
    args += ["--device", setting.device, "--meta-batch", str(setting.meta_batch)]
    args += ["--iterations", str(setting.iterations), "--threads", str(setting.threads)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"config": config, "skipped": f"failed: {done.stderr.strip().splitlines()[-1:]}"}
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def _median_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's rounds as one row: the round of median speed, with the median peak memory and
    every round's rate kept (``rounds``)."""
    if "skipped" in runs[-1]:
        return runs[-1]
    rates = sorted(runs, key=lambda r: r["iterations_per_second"])
    row = dict(rates[(len(rates) - 1) // 2])
    for key in ("peak_memory_mb", "setup_memory_mb", "step_memory_mb"):
        row[key] = statistics.median(r[key] for r in runs)
    row["rounds"] = [r["iterations_per_second"] for r in runs]
    return row


def run_all(setting: Setting, configs: tuple[str, ...] = CONFIGS) -> dict[str, Any]:
    """Every configuration in its own subprocess, plus the matmul rate, as one report."""
    device = torch.device(setting.device)
    if setting.threads:
        torch.set_num_threads(setting.threads)
    rate = matmul_rate(device)
    measured: dict[str, list[dict[str, Any]]] = {config: [] for config in configs}
    for _ in range(setting.repeats):  # rounds over every configuration, so a slow spell hits all of them alike
        for config in configs:
            if measured[config] and "skipped" in measured[config][-1]:
                continue
            measured[config].append(_measure_in_subprocess(config, setting))
    rows = [_median_row(runs) for runs in measured.values()]
    # torch's flop counter miscounts convolutions under vmap (it reports more than the matmul peak), so the
    # batched path is credited with the FLOPs the per-task loop counts for the same computation.
    counted = {r["config"]: r for r in rows if "gflops" in r}
    for row in rows:
        loop = counted.get(row["config"].replace("engine-batched", "engine-loop"))
        if row["config"].startswith("engine-batched") and "gflops" in row and loop is not None:
            row["gflop_per_iteration"] = loop["gflop_per_iteration"]
            row["gflops"] = row["gflop_per_iteration"] * row["iterations_per_second"]
        if "gflops" in row:
            row["fraction_of_matmul"] = row["gflops"] * 1e9 / rate
    from metabench.inner import resolve_path

    report = {
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "matmul_gflops": rate / 1e9,
        "setting": setting.__dict__,
        "auto_path": resolve_path("auto", device),
        "rows": rows,
    }
    report["paired"] = {}
    for order in ("second", "first"):
        engine = f"engine-{report['auto_path']}/{order}"
        present = [r["config"] for r in rows if "skipped" not in r]
        libraries = [f"{library}/{order}" for library in ("learn2learn", "higher") if f"{library}/{order}" in present]
        if engine in present and libraries:
            report["paired"][order] = _measure_in_subprocess(",".join([engine, *libraries]), setting, pair=True)
    report["against_libraries"] = against_libraries(report)
    return report


def against_libraries(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The path ``auto`` picks against each library loop measured in the same run, per order: speed and
    peak memory as ratios (``speed > 1``: the engine is faster; ``memory < 1``: the engine peaks lower).

    Speed comes from the paired, alternating measurement where there is one (``speed_kind`` says which),
    else from the separate processes' rates; memory always from the separate processes.
    """
    rows = {r["config"]: r for r in report["rows"] if "skipped" not in r}
    out = []
    for order in ("second", "first"):
        engine = rows.get(f"engine-{report['auto_path']}/{order}")
        pair = report.get("paired", {}).get(order, {}).get("speed_of_first", {})
        for library in ("learn2learn", "higher"):
            other = rows.get(f"{library}/{order}")
            if engine is None or other is None:
                continue
            paired_speed = pair.get(f"{library}/{order}")
            out.append(
                {
                    "order": order,
                    "engine": f"engine-{report['auto_path']}",
                    "library": library,
                    "speed": paired_speed or engine["iterations_per_second"] / other["iterations_per_second"],
                    "speed_kind": "paired" if paired_speed else "separate",
                    "memory": engine["peak_memory_mb"] / other["peak_memory_mb"],
                }
            )
    return out


def main(argv: list[str] | None = None) -> None:
    """Subprocess entry: ``python -m metabench.speed --one CONFIG`` prints one JSON line."""
    parser = argparse.ArgumentParser()
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--one", choices=CONFIGS)
    which.add_argument("--paired", help="comma-separated configurations, timed in turn in this process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    options = parser.parse_args(argv)
    setting = Setting(
        device=options.device, meta_batch=options.meta_batch, iterations=options.iterations, threads=options.threads
    )
    if options.paired:
        configs = options.paired.split(",")
        unknown = [c for c in configs if c not in CONFIGS]
        if unknown:
            parser.error(f"unknown configuration {unknown[0]!r}")
        print(json.dumps(paired(configs, setting)))
    else:
        print(json.dumps(measure(options.one, setting)))


if __name__ == "__main__":
    main()
