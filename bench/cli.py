"""The ``metabench`` command line: list, show, run, compare, check, bench, data.

Every user error is a one-line message and exit code 2, never a traceback. An interrupted run that
``--resume`` can continue exits 130 (Ctrl-C, ``--stop-after``) or 143 (SIGTERM).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from metabench.errors import MetabenchError

app = typer.Typer(
    help="Reproduce meta-learning papers and check their reported numbers.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Find, download and verify datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

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
            err.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
            if error.hint:
                err.print(f"  {error.hint}", highlight=False, soft_wrap=True)
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


def _selected(paths: list[Path] | None, paper: str | None, profile: ProfileName | None) -> Any:
    from metabench import compare as comparing

    return comparing.load_frame(paths or [Path("results")], paper=paper, profile=profile.value if profile else None)


def _archives_of(dataset: str) -> Any:
    from metabench.data import archives
    from metabench.errors import UnknownNameError, did_you_mean

    if dataset not in archives.CATALOGUE:
        raise UnknownNameError(f"unknown dataset {dataset!r}", did_you_mean(dataset, list(archives.CATALOGUE)))
    return archives.CATALOGUE[dataset]


def _reported_text(reported: Any, bench: Any = None) -> str:
    if bench is not None and bench.claim:
        return f"claim: beats {', '.join(bench.claim.against)}"
    if bench is not None and bench.components:
        shown = [f"{c.name} {c.reported.printed() if c.reported else '—'}" for c in bench.components]
        return ("by instance: " if bench.metric == "accuracy-by-instance" else "by context: ") + " / ".join(shown)
    if reported is None:
        return "no target"
    if reported.plus_minus_kind == "none":
        return str(reported.printed())
    return f"{reported.printed()} ({reported.plus_minus_kind})"


def _protocol_text(bench: Any) -> str:
    if bench.sequence:
        return (
            f"{bench.dataset}/{bench.split} {bench.ways}-class sequences of "
            f"{bench.ways * (bench.shots + bench.queries)} steps"
        )
    if bench.shots == 0:
        return f"{bench.dataset}/{bench.split} supervised, {bench.ways} classes"
    return f"{bench.dataset}/{bench.split} {bench.ways}-way {bench.shots}-shot, {bench.queries} queries"


def _source_text(bench: Any) -> str:
    reported = bench.reported or next((c.reported for c in bench.components if c.reported), None)
    return f"{reported.table}" if reported else ""


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
        if bench.components:
            first = next((c.reported for c in bench.components if c.reported), None)
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
    paper: Annotated[str, typer.Argument(help="Paper key, e.g. protonet (see `metabench list`).")],
    shots: Annotated[int | None, typer.Option(help="Pick the paper's benchmark with this many shots.")] = None,
    ways: Annotated[int | None, typer.Option(help="Pick the benchmark with this many ways.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Pick the benchmark on this dataset.")] = None,
    variant: Annotated[
        str | None, typer.Option(help="Run a variant the paper also reports, e.g. mann --variant lstm.")
    ] = None,
    benchmark: Annotated[str | None, typer.Option(help="Benchmark id, e.g. omniglot-20w5s.")] = None,
    profile: Annotated[
        ProfileName, typer.Option(help="smoke: seconds; quick: minutes on a CPU; paper: the paper's protocol.")
    ] = ProfileName.quick,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and training episodes.")] = 0,
    episodes: Annotated[
        int | None,
        typer.Option(
            help="Number of frozen test episodes (at least 600 outside smoke; a paper run also the paper's count)."
        ),
    ] = None,
    train_episodes: Annotated[int | None, typer.Option(help="Override the profile's meta-training steps.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change a profile setting, KEY=VALUE (TOML value; dotted keys into its model table, e.g. "
            "model.scale=10); repeatable. The result is an experiment: labelled in compare, judged by nothing.",
        ),
    ] = None,
    device: Annotated[
        DeviceName, typer.Option(help="Where to run; auto takes CUDA, then MPS, then CPU.")
    ] = DeviceName.auto,
    data_dir: DataDir = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Run the benchmark's method on your own images: a folder of class subfolders (or train/, val/, "
            "test/ of class subfolders). The result has no paper verdict.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Folder for the result JSON (and its checkpoints).")] = Path("results"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoint.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard an interrupted run's checkpoint.")] = False,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after this many training steps, keeping a checkpoint to --resume from.")
    ] = None,
    no_download: Annotated[bool, typer.Option("--no-download", help="Fail instead of downloading data.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
    tracker: Annotated[
        list[str] | None,
        typer.Option(
            "--tracker",
            help="Stream the learning curve and final numbers to tensorboard (OUTPUT/.tensorboard) or wandb "
            "($WANDB_MODE=offline keeps it local); repeatable. Needs that package installed.",
        ),
    ] = None,
) -> None:
    """Reproduce one benchmark: train, evaluate on frozen test episodes, judge against the paper."""
    from metabench import options, overrides
    from metabench.runner import RunRequest
    from metabench.runner import run as run_benchmark

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
    request = RunRequest(
        paper=paper,
        benchmark=benchmark,
        profile=profile.value,
        seed=seed,
        device=device.value,
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
        images=images,
    )
    tracking = None
    if tracker:
        from datetime import UTC, datetime

        from metabench.trackers import open_trackers

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{paper}-{benchmark or 'default'}-{profile.value}-seed{seed}-{stamp}"
        tracking = open_trackers(tracker, output, name)
        request.on_point = tracking.log_point
    result, path = run_benchmark(request, console=err)
    if tracking is not None:
        tracking.finish(result, path)
    _print_outcome(result, path)


def _print_outcome(result: dict[str, Any], path: Path) -> None:
    from metabench.budget import format_share
    from metabench.compare import verdict_style
    from metabench.overrides import label
    from metabench.spec import component_label

    summary, reported, verdict = result["summary"], result["reported"], result["verdict"]
    table = Table(show_header=False, box=None)
    table.add_row("benchmark", f"{result['paper']} {result['benchmark']} ({result['profile']} profile)")
    if result.get("budget"):
        budget = result["budget"]
        table.add_row(
            "budget",
            f"{format_share(budget['share'])} of the paper profile's training "
            f"({budget['examples']:,} of {budget['paper_examples']:,} training examples)",
        )
    settings = (result.get("overrides") or {}).get("set")
    if settings:
        table.add_row("experiment", f"--set {label(settings)}: not the paper's profile, judged by nothing")
    if result.get("user_images"):
        mine = result["user_images"]
        parts = ", ".join(f"{len(p['classes'])} {name}" for name, p in mine["parts"].items())
        table.add_row("dataset", f"your images in {mine['path']} ({parts} classes): no paper number, no verdict")
    if reported:
        pm = "" if reported["plus_minus_kind"] == "none" else f" ± {reported['plus_minus']:g}"
        table.add_row("paper", f"{reported['value']:g}{pm}  ({reported['plus_minus_kind']}; {reported['table']})")
    table.add_row(
        "reproduced",
        f"{summary['mean']:.2f} ± {summary['ci95']:.2f}  (95% over {summary['n']} "
        f"frozen episodes, digest {result['test_episodes']['digest'][:12]})",
    )
    if reported:
        table.add_row("difference", f"{verdict['difference']:+.2f}  (band ±{verdict['band']:.2f})")
    for part in result.get("components", []):
        paper = part["reported"]["value"] if part["reported"] else None
        against = "  " if paper is None else f"  paper {paper:g}, {part['verdict']['difference']:+.2f}, "
        floor = "" if part["floor"] is None or result["profile"] != "quick" else f"  floor {part['floor']:g}"
        table.add_row(
            component_label(part["name"]),
            f"{part['summary']['mean']:.2f} ± {part['summary']['ci95']:.2f}{against}"
            f"[{verdict_style(part['verdict']['verdict'])}]{part['verdict']['verdict']}[/]{floor}",
        )
    for name, part in result.get("also", {}).items():
        table.add_row(
            name, f"{part['summary']['mean']:.4f} ± {part['summary']['ci95']:.4f}  (reported beside, no verdict)"
        )
    claim = result.get("claim")
    if claim:
        table.add_row("claim", f"{claim['statement']} ({claim['confidence']}; {claim['source']})")
        for name, comparison in claim["comparisons"].items():
            theirs = result["competitors"][name]["summary"]
            table.add_row(
                f"vs {name}",
                f"{theirs['mean']:.4g} ± {theirs['ci95']:.2g}; method - {name} = "
                f"{comparison['mean_difference']:+.4g} ± {comparison['ci95']:.2g} (p = {comparison['p_value']:.2g})  "
                f"[{verdict_style(comparison['verdict'])}]{comparison['verdict']}[/]",
            )
    style = verdict_style(verdict["verdict"])
    table.add_row("verdict", f"[{style}]{verdict['verdict']}[/]")
    targets = result["targets"]
    if result["profile"] == "quick" and isinstance(targets["floor"], int | float):
        lower = result["protocol"]["direction"] == "lower"
        met = summary["mean"] <= targets["floor"] if lower else summary["mean"] >= targets["floor"]
        table.add_row(f"quick {'ceiling' if lower else 'floor'}", f"{targets['floor']:g}: {'met' if met else 'MISSED'}")
    timing = result["timing"]
    table.add_row(
        "time",
        f"train {timing['train_seconds']:.0f}s ({timing['train_episodes_per_second']:.1f} ep/s), "
        f"test {timing['eval_seconds']:.0f}s on {result['environment']['device']}",
    )
    out.print(table)
    # The path on a line of its own, never wrapped or cut, so that it can be copied whole.
    out.print("result:", highlight=False)
    out.print(str(path), soft_wrap=True, highlight=False, markup=False)


@app.command()
@_friendly
def compare(
    paths: ResultPaths = None,
    paper: PaperFilter = None,
    profile: Annotated[ProfileName | None, typer.Option(help="Only this profile.")] = None,
    format: Annotated[Format, typer.Option("--format", help="table, markdown, csv or json.")] = Format.table,
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of the terminal.")] = None,
    paired: Annotated[
        tuple[Path, Path] | None,
        typer.Option(help="Compare two results on the same frozen episodes: --paired A.json B.json"),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Also write a PNG of validation accuracy against training time.")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated columns for table and markdown, e.g. paper,benchmark,verdict,seed,commit "
            "(default: those the terminal's width fits; a file gets every column)."
        ),
    ] = None,
) -> None:
    """Every result against its paper: reported, reproduced with interval, difference, verdict.

    At 80 columns the table shows paper, benchmark, reported, reproduced, difference and verdict; wider
    terminals add profile, budget, episodes, device, figures and notes."""
    from metabench import compare as comparing
    from metabench import options

    options.writable_file("--output", output)
    options.writable_file("--plot", plot)
    if paired is not None:
        text = comparing.paired_report(*paired)
        _emit(text, output)
        return
    frame = _selected(paths, paper, profile)
    chosen = None
    if columns is not None:
        chosen = comparing.choose_columns(frame, [c.strip() for c in columns.split(",") if c.strip()])
        if not chosen:
            raise MetabenchError("--columns names no column", "e.g. --columns paper,benchmark,verdict")
    if plot is not None:
        err.print(f"wrote {comparing.plot_curves(frame, plot)}")
    if format is Format.table and output is None:
        out.print(comparing.rich_table(frame, width=out.width, columns=chosen))
        return
    _emit(comparing.render(frame, format.value, chosen), output)


@app.command()
@_friendly
def report(
    paths: ResultPaths = None,
    output: Annotated[Path, typer.Option(help="The HTML file to write.")] = Path("report.html"),
    title: Annotated[str, typer.Option(help="The report's title.")] = "metabench report",
) -> None:
    """One self-contained HTML file (no network needed) of every result: the sortable, filterable table,
    each paper's reported table beside the reproduced one, and per result its learning curve, figures,
    protocol, hyperparameters and provenance."""
    from metabench import options
    from metabench import report as reporting

    options.writable_file("--output", output)
    written = reporting.write(paths or [Path("results")], output, title)
    err.print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)", highlight=False)
    out.print(str(written), soft_wrap=True, highlight=False, markup=False)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


@app.command()
@_friendly
def check(
    paths: ResultPaths = None,
    paper: PaperFilter = None,
    profile: Annotated[ProfileName | None, typer.Option(help="Only this profile.")] = None,
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Pass when no result is selected (else that is an error).")
    ] = False,
    format: Annotated[
        DataFormat, typer.Option("--format", help="table, or json: every checked row with its status and reason.")
    ] = DataFormat.table,
    junit_xml: Annotated[
        Path | None,
        typer.Option("--junit-xml", help="Also write JUnit XML here: one test case per checked row, for CI."),
    ] = None,
) -> None:
    """Exit 1 when a result falls short: paper runs below the reported band, quick runs below their floor,
    any result whose stored summary or verdict disagrees with its per-episode scores."""
    from metabench import check_output, options
    from metabench import compare as comparing
    from metabench.errors import ResultError
    from metabench.spec import component_label

    options.writable_file("--junit-xml", junit_xml)
    frame = _selected(paths, paper, profile)
    if frame.empty:
        if allow_empty:
            empty = comparing.check(frame).assign(passed=[], reason=[], tested=[])
            if junit_xml is not None:
                check_output.write_junit(empty, junit_xml)
            if format is DataFormat.json:
                _emit(check_output.to_json(empty), None)
            else:
                out.print("[yellow]no results selected[/] (--allow-empty)")
            return
        where = ", ".join(str(p) for p in paths or [Path("results")])
        filters = "".join(f" with --{k} {v}" for k, v in (("paper", paper), ("profile", profile)) if v)
        raise ResultError(
            f"no results found under {where}{filters}",
            "check the path and filters, or pass --allow-empty when an empty selection is expected",
        )
    outcome = comparing.check(frame)
    if junit_xml is not None:
        err.print(f"wrote {check_output.write_junit(outcome, junit_xml)}", highlight=False)
    if format is DataFormat.json:
        _emit(check_output.to_json(outcome), None)
        if not outcome["passed"].all():
            raise typer.Exit(1)
        return
    out.print(comparing.check_table(outcome))
    untested = outcome[outcome["passed"] & ~outcome["tested"]]
    for row in untested.itertuples():
        part = f" ({component_label(row.component)})" if row.component else ""
        err.print(
            f"[yellow]untested[/] {row.paper} {row.benchmark}{part} ({row.profile}): {row.reason}",
            highlight=False,
            soft_wrap=True,
        )
    failures = outcome[~outcome["passed"]]
    if failures.empty:
        checks = f" ({len(outcome)} checks: components and competitors are checked one by one)"
        files = outcome["path"].nunique()
        noun = "result passes" if files == 1 else f"{files} results pass"
        out.print(f"[green]{'the' if files == 1 else 'all'} {noun}[/]" + (checks if len(outcome) != files else ""))
        if len(untested):
            out.print(
                f"[yellow]{len(untested)} of the checks are not regression-tested[/]: their floor does not beat "
                "the trivial baseline by the margin (README, Verdicts)"
            )
        return
    for row in failures.itertuples():
        part = f" ({component_label(row.component)})" if row.component else ""
        err.print(
            f"[red]FAIL[/] {row.paper} {row.benchmark}{part} ({row.profile}): {row.reason}",
            highlight=False,
            soft_wrap=True,
        )
    raise typer.Exit(1)


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

    report = run_all(
        Setting(device=device, meta_batch=meta_batch, iterations=iterations, threads=threads, repeats=repeats)
    )
    rows = report["rows"]
    reference = next((r for r in rows if r["config"] == "engine-loop/second" and "skipped" not in r), None)
    table = Table(
        title=f"MAML Omniglot 5w1s, meta-batch {meta_batch}, on {report['device']} "
        f"({report['cpu_threads']} threads; float32 matmul {report['matmul_gflops']:.1f} GFLOP/s; "
        f"median of {repeats} rounds)"
    )
    columns = ("configuration", "meta-it/s", "x per-task loop", "GFLOP/s", "of matmul", "peak MiB", "step MiB")
    for column in columns:
        table.add_column(column, justify="left" if column == "configuration" else "right", no_wrap=True)
    for row in rows:
        if "skipped" in row:
            table.add_row(row["config"], f"[yellow]{row['skipped']}[/]", "", "", "", "", "")
            continue
        ratio = row["iterations_per_second"] / reference["iterations_per_second"] if reference else float("nan")
        table.add_row(
            row["config"],
            f"{row['iterations_per_second']:.3f}",
            f"{ratio:.2f}",
            f"{row['gflops']:.1f}",
            f"{row['fraction_of_matmul']:.0%}",
            f"{row['peak_memory_mb']:.0f}",
            f"{row['step_memory_mb']:.0f}",
        )
    out.print(table)
    out.print(f"engine path chosen by auto on {report['device']}: {report['auto_path']}")
    for c in report["against_libraries"]:
        how = f"median of {iterations} alternating rounds" if c["speed_kind"] == "paired" else "separate processes"
        out.print(
            f"{c['order']} order, {c['engine']} against {c['library']}: {c['speed']:.2f}x its speed ({how}), "
            f"{c['memory']:.2f}x its peak memory"
        )
    if json_output is not None:
        json_output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


@data_app.command("verify")
@_friendly
def data_verify(
    dataset: Annotated[str | None, typer.Argument(help="omniglot or mnist (default: all).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Check every archive found against its content digest (never downloads)."""
    from metabench import options
    from metabench.data import archives

    options.existing_folder("--data-dir", data_dir)
    names = [dataset] if dataset else list(archives.CATALOGUE)
    problems = found = 0
    for name in names:
        for archive in _archives_of(name):
            path = archives.locate(archive, data_dir)
            if path is None:
                out.print(f"[yellow]missing[/]  {name}/{archive.filename}")
                continue
            found += 1
            try:
                archives.verify(archive, path)
                out.print(f"[green]ok[/]       {path}")
            except MetabenchError as error:
                problems += 1
                out.print(f"[red]corrupt[/]  {path}: {error.message}")
    if not found:
        from metabench.paths import data_dirs

        searched = ", ".join(str(folder) for folder in data_dirs(data_dir))
        err.print(f"[red]no archive found[/]: nothing was verified (searched {searched})", soft_wrap=True)
    if problems or not found:
        raise typer.Exit(1)


@data_app.command("info")
@_friendly
def data_info(data_dir: DataDir = None) -> None:
    """Where each archive is, where downloads and preprocessed arrays go, and the official addresses."""
    from metabench import options
    from metabench.data import archives

    options.existing_folder("--data-dir", data_dir)
    from metabench.paths import cache_dir, data_dirs

    out.print("search order: " + ", ".join(str(p) for p in data_dirs(data_dir)))
    out.print(f"cache (downloads, preprocessed arrays): {cache_dir()}")
    table = Table()
    for column in ("dataset", "file", "found at", "official address"):
        table.add_column(column)
    for name, files in archives.CATALOGUE.items():
        for archive in files:
            path = archives.locate(archive, data_dir)
            table.add_row(name, archive.filename, str(path) if path else "[yellow]not found[/]", archive.url)
    out.print(table)
    processed = sorted((cache_dir()).glob("*/processed/*.pt"))
    for path in processed:
        out.print(f"preprocessed: {path} ({path.stat().st_size / 2**20:.1f} MiB)")


@data_app.command("download")
@_friendly
def data_download(
    dataset: Annotated[str, typer.Argument(help="omniglot or mnist.")],
    data_dir: DataDir = None,
) -> None:
    """Fetch a dataset's archives into the cache (skipping any already present and verified)."""
    from metabench import options
    from metabench.data import archives

    options.existing_folder("--data-dir", data_dir)
    for archive in _archives_of(dataset):
        out.print(f"[green]ok[/] {archives.fetch(archive, data_dir, download=True, progress=err.is_terminal)}")
