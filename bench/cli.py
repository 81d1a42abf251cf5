"""The ``metabench`` command line: list, show, run, compare, check, bench, data.

Every user error is a one-line message and exit code 2, never a traceback. An interrupted run that
``--resume`` can continue exits 130 (Ctrl-C, ``--stop-after``) or 143 (SIGTERM).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metabench.errors import MetabenchError

app = typer.Typer(
    help="Reproduce meta-learning papers and check their reported numbers.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def _friendly(command: F) -> F:
    """Turn a MetabenchError into one red line and its exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MetabenchError as error:
            # Escaped: a message is plain text (`pip install "metabench[cluster]"` is not markup).
            err.print(f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True)
            if error.hint:
                err.print(f"  {escape(error.hint)}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _print_version(value: bool) -> None:
    if value:
        from metabench import __version__

        out.print(f"metabench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Reproduce meta-learning papers and check their reported numbers."""


class ProfileName(StrEnum):
    smoke = "smoke"
    quick = "quick"
    paper = "paper"


class DeviceName(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Format(StrEnum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    json = "json"


class DataFormat(StrEnum):
    table = "table"
    json = "json"


class CurveAxis(StrEnum):
    """compare --plot's x-axis (:data:`metabench.compare_runs.CURVE_AXES`)."""

    time = "time"
    examples = "examples"


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder of downloaded archives (DATASET/FILE); else $METABENCH_DATA, else the cache, else download.",
        show_default=False,
    ),
]


ResultPaths = Annotated[
    list[Path] | None, typer.Argument(help="Result files or folders (default: results/).", show_default=False)
]
PaperFilter = Annotated[str | None, typer.Option(help="Only this paper.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Change a profile setting, KEY=VALUE (TOML value; dotted keys into its model table, e.g. "
        "model.scale=10); repeatable. The result is an experiment: labelled in compare, judged by nothing.",
    ),
]
OnlyThisBenchmark = Annotated[
    bool,
    typer.Option(
        "--only-this-benchmark",
        help="Score only the asked benchmark, not the others its training serves (same training, other test).",
    ),
]

#: how `run` and `estimate` pick a paper's benchmark
PaperArgument = Annotated[str, typer.Argument(help="Paper key, e.g. protonet (see `metabench list`).")]
ShotsOption = Annotated[int | None, typer.Option(help="Pick the paper's benchmark with this many shots.")]
WaysOption = Annotated[int | None, typer.Option(help="Pick the benchmark with this many ways.")]
DatasetOption = Annotated[str | None, typer.Option(help="Pick the benchmark on this dataset.")]
BenchmarkOption = Annotated[str | None, typer.Option(help="Benchmark id, e.g. omniglot-20w5s.")]

#: the longer options of `metabench run`, named so that its signature stays readable
VariantOption = Annotated[
    str | None, typer.Option(help="Run a variant the paper also reports, e.g. mann --variant lstm.")
]
ProfileOption = Annotated[
    ProfileName, typer.Option(help="smoke: seconds; quick: minutes on a CPU; paper: the paper's protocol.")
]
EpisodesOption = Annotated[
    int | None,
    typer.Option(
        help="Number of frozen test episodes (at least 600 outside smoke; a paper run also the paper's count)."
    ),
]
DeviceOption = Annotated[DeviceName, typer.Option(help="Where to run; auto takes CUDA, then MPS, then CPU.")]
ImagesOption = Annotated[
    Path | None,
    typer.Option(
        "--images",
        help="Run the benchmark's method on your own images: a folder of class subfolders (or train/, val/, "
        "test/ of class subfolders). The result has no paper verdict.",
        show_default=False,
    ),
]
StopAfterOption = Annotated[
    int | None, typer.Option(help="Stop after this many training steps, keeping a checkpoint to --resume from.")
]
TrackerOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tracker",
        help="Stream the learning curve and final numbers to tensorboard (OUTPUT/.tensorboard) or wandb "
        "($WANDB_MODE=offline keeps it local); repeatable. Needs that package installed.",
    ),
]


def _selected(paths: list[Path] | None, paper: str | None, profile: ProfileName | None) -> Any:
    from metabench import compare as comparing

    return comparing.load_frame(paths or [Path("results")], paper=paper, profile=profile.value if profile else None)


def _reported_text(reported: Any, bench: Any = None) -> str:
    if bench is not None and (bench.claim or bench.components):
        from metabench.listing import reported_text

        return reported_text(bench)  # a claim or a vector: the registry's one wording
    if reported is None:
        return "no target"
    if reported.plus_minus_kind == "none":
        return str(reported.printed())
    return f"{reported.printed()} ({reported.plus_minus_kind})"


def _protocol_text(bench: Any) -> str:
    from metabench.listing import protocol_text

    return protocol_text(bench)


def _source_text(bench: Any) -> str:
    reported = bench.first_reported
    return f"{reported.table}" if reported else ""


class ListFormat(StrEnum):
    table = "table"
    json = "json"


@app.command("list")
@_friendly
def list_papers(
    format: Annotated[
        DataFormat, typer.Option("--format", help="table, or json: one record per benchmark.")
    ] = DataFormat.table,
) -> None:
    """Every paper in the registry with its benchmarks and reported numbers."""
    from metabench.registry_loader import all_specs

    if format is DataFormat.json:
        import json

        from metabench.listing import list_benchmarks

        records = json.loads(list_benchmarks().to_json(orient="records"))
        _emit(json.dumps(records, indent=1, ensure_ascii=False) + "\n", None)
        return
    table = Table(title="metabench registry", show_lines=False)
    for column in ("paper", "benchmark", "protocol", "reported", "source"):
        table.add_column(column)
    for spec in all_specs().values():
        for index, bench in enumerate(spec.benchmarks):
            table.add_row(
                f"[bold]{spec.key}[/] ({spec.year})" if index == 0 else "",
                bench.id + (" *" if bench.default else "") + (f" (--variant {bench.variant})" if bench.variant else ""),
                _protocol_text(bench),
                _reported_text(bench.reported, bench),
                _source_text(bench),
            )
    out.print(table)
    out.print("* the benchmark `metabench run PAPER --shots K` picks for its shot count")


@app.command()
@_friendly
def show(
    paper: Annotated[str, typer.Argument(help="Paper key, e.g. protonet (see `metabench list`).")],
    format: Annotated[
        DataFormat, typer.Option("--format", help="table, or json: the whole spec as data.")
    ] = DataFormat.table,
) -> None:
    """One paper's spec in full: citation, benchmarks, reported numbers and every profile."""
    from metabench.registry_loader import get_spec

    spec = get_spec(paper)
    if format is DataFormat.json:
        import json

        from metabench.listing import spec_dict

        _emit(json.dumps(spec_dict(spec), indent=1, ensure_ascii=False) + "\n", None)
        return
    out.print(f"[bold]{spec.key}[/]: {spec.citation}")
    out.print(f"implementation: {spec.implementation}   spec: registry/{spec.source.name}")
    if spec.notes:
        out.print(spec.notes)
    for bench in spec.benchmarks:
        out.rule(f"{bench.id}{'  (default)' if bench.default else ''}")
        out.print(
            f"{bench.dataset}, split {bench.split!r}, test part {bench.test_part!r}, {bench.image_size}px; "
            + (
                f"supervised ({bench.ways} classes, no support set), {bench.queries} test example(s) per task; "
                if bench.shots == 0
                else f"{bench.ways}-way {bench.shots}-shot, {bench.queries} queries per class; "
            )
            + f"{'sequence episodes; ' if bench.sequence else ''}"
            f"{'transductive' if bench.transductive else 'not transductive'}; test seed {bench.test_seed}"
        )
        if bench.variant:
            out.print(f"variant: {bench.variant} (metabench run {spec.key} --variant {bench.variant})")
        if bench.paper_estimate:
            out.print(f"paper profile: about {bench.paper_estimate.hours:g} h ({bench.paper_estimate.measured})")
        if bench.components:
            first = bench.first_reported
            where = f" ({first.table}, {first.row}; confidence {first.confidence})" if first else ""
            out.print(f"reported {bench.metric}: {_reported_text(None, bench)}{where}")
        if bench.claim:
            c = bench.claim
            out.print(f"claim ({c.confidence}; {c.source}): {c.statement}; against {', '.join(c.against)}")
        if bench.reported:
            r = bench.reported
            out.print(
                f"reported: {_reported_text(r)} over {r.test_episodes or '?'} episodes "
                f"({r.table}, {r.row}{', ' + r.variant if r.variant else ''}; confidence {r.confidence})"
            )
        table = Table(show_header=True)
        table.add_column("setting")
        for name in bench.profiles:
            table.add_column(name)
        rows = bench.profiles["paper"].hyperparameters().keys() - {"name"}
        for key in sorted(rows):
            table.add_row(key, *(str(p.hyperparameters()[key]) for p in bench.profiles.values()))
        out.print(table)
        if bench.notes:
            out.print(bench.notes)


@app.command()
@_friendly
def run(
    paper: PaperArgument,
    shots: ShotsOption = None,
    ways: WaysOption = None,
    dataset: DatasetOption = None,
    variant: VariantOption = None,
    benchmark: BenchmarkOption = None,
    profile: ProfileOption = ProfileName.quick,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and training episodes.")] = 0,
    episodes: EpisodesOption = None,
    train_episodes: Annotated[int | None, typer.Option(help="Override the profile's meta-training steps.")] = None,
    set_: SetOption = None,
    device: DeviceOption = DeviceName.auto,
    data_dir: DataDir = None,
    images: ImagesOption = None,
    output: Annotated[Path, typer.Option(help="Folder for the result JSON (and its checkpoints).")] = Path("results"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoint.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard an interrupted run's checkpoint.")] = False,
    stop_after: StopAfterOption = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Fail instead of downloading data.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    only_this_benchmark: OnlyThisBenchmark = False,
    tracker: TrackerOption = None,
) -> None:
    """Reproduce one benchmark: train, evaluate on frozen test episodes, judge against the paper.

    Benchmarks of the paper that share every training setting and differ only in how they are tested are
    scored too, each on its own frozen episodes with its own result (the run says which).
    """
    from metabench.cli_run import build_request, open_tracking
    from metabench.runner import run_all

    request = build_request(
        paper=paper,
        benchmark=benchmark,
        profile=profile.value,
        seed=seed,
        device=device.value,
        shots=shots,
        ways=ways,
        dataset=dataset,
        variant=variant,
        episodes=episodes,
        train_episodes=train_episodes,
        set_=set_,
        data_dir=data_dir,
        output=output,
        resume=resume,
        fresh=fresh,
        stop_after=stop_after,
        no_download=no_download,
        no_progress=no_progress,
        only_this_benchmark=only_this_benchmark,
        images=images,
    )
    from metabench.printout import print_outcome
    from metabench.result_schema import Result

    tracking = open_tracking(tracker, request)
    outcomes = run_all(request, console=err)
    if tracking is not None:
        tracking.finish(*outcomes[0])
    for result, path in outcomes:
        print_outcome(Result.from_json(result, str(path)), path, out)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


@app.command("bench")
@_friendly
def bench_speed(
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    meta_batch: Annotated[int, typer.Option(help="Tasks per meta-iteration.")] = 32,
    iterations: Annotated[
        int, typer.Option(help="Timed meta-iterations per configuration (after 1 warm-up); the median one counts.")
    ] = 10,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
    repeats: Annotated[
        int, typer.Option(min=1, help="Rounds over every configuration; each row is its median round.")
    ] = 3,
    json_output: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Speed of MAML's inner loop (Omniglot 5w1s, conv-4): each engine path, first and second order, and
    learn2learn / higher when installed: meta-iterations/s, GFLOP/s as a share of the matmul rate, peak
    memory of the process and its rise during the meta-iterations (step MiB)."""
    import json

    from metabench.speed import Setting, run_all
    from metabench.speed_report import report_lines, report_table

    report = run_all(
        Setting(device=device, meta_batch=meta_batch, iterations=iterations, threads=threads, repeats=repeats)
    )
    out.print(report_table(report, meta_batch, repeats))
    for line in report_lines(report, iterations):
        out.print(line)
    if json_output is not None:
        json_output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


# The data commands live in their own module; imported last, as they use this module's options and consoles.
from metabench.cli_data import data_app  # noqa: E402

app.add_typer(data_app, name="data")

# The commands that read results (compare, check, report) and `metabench sweep` live in their own
# modules, which use the helpers above and register on `app` when imported.
from metabench import cli_estimate, cli_results, cli_steps, sweep_cli  # noqa: E402

app.add_typer(sweep_cli.app, name="sweep")
__all__ = ["app", "cli_estimate", "cli_results", "cli_steps"]
