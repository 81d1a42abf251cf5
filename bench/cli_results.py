"""``metabench compare``, ``check`` and ``report``: the commands that read results (registered on
:data:`metabench.cli.app` when the CLI module loads; its consoles are looked up at call time so that
a caller or a test can replace them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from metabench import cli
from metabench.cli import CurveAxis, DataFormat, Format, PaperFilter, ProfileName, ResultPaths
from metabench.errors import MetabenchError

if TYPE_CHECKING:
    import pandas as pd


@cli.app.command()
@cli._friendly
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
    plot_against: Annotated[
        CurveAxis,
        typer.Option(
            help="The --plot's x-axis: training time, or training examples seen (to compare runs and methods "
            "at equal budgets)."
        ),
    ] = CurveAxis.time,
    ladder: Annotated[
        Path | None,
        typer.Option(
            help="Also write a PNG of each benchmark's result against its training budget (runs at two or "
            "more budgets), with the paper's band."
        ),
    ] = None,
    by_seed: Annotated[
        bool | None,
        typer.Option(
            "--by-seed/--by-run",
            help="One row per benchmark and profile over its seeds (mean, t-interval across seeds); "
            "default: by seed when some benchmark has several seeds.",
            show_default=False,
        ),
    ] = None,
    seed_means: Annotated[bool, typer.Option("--seed-means", help="With --by-seed: each seed's mean too.")] = False,
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
    from metabench import aggregate, options
    from metabench import compare as comparing

    options.writable_file("--output", output)
    options.writable_file("--plot", plot)
    options.writable_file("--ladder", ladder)
    if paired is not None:
        text = comparing.paired_report(*paired)
        cli._emit(text, output)
        return
    frame = cli._selected(paths, paper, profile)
    chosen = None
    if columns is not None:
        chosen = comparing.choose_columns(frame, [c.strip() for c in columns.split(",") if c.strip()])
        if not chosen:
            raise MetabenchError("--columns names no column", "e.g. --columns paper,benchmark,verdict")
    if plot is not None:
        cli.err.print(f"wrote {comparing.plot_curves(frame, plot, plot_against.value)}")
    if ladder is not None:
        from metabench.ladder import plot_ladder

        cli.err.print(f"wrote {plot_ladder(frame, ladder)}")
    if aggregate.wanted(frame, by_seed):
        _emit_aggregate(frame, format, output, seed_means)
        return
    if format is Format.table and output is None:
        cli.out.print(comparing.rich_table(frame, width=cli.out.width, columns=chosen))
        return
    cli._emit(comparing.render(frame, format.value, chosen), output)


@cli.app.command()
@cli._friendly
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
    cli.err.print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)", highlight=False)
    cli.out.print(str(written), soft_wrap=True, highlight=False, markup=False)


def _emit_aggregate(frame: Any, format: Format, output: Path | None, seed_means: bool) -> None:
    """One row per benchmark and profile, over its seeds (see :mod:`metabench.aggregate`)."""
    from metabench import aggregate

    collapsed = aggregate.by_seed(frame)
    if format is Format.table and output is None:
        cli.out.print(aggregate.rich_table(collapsed, seed_means))
        return
    cli._emit(aggregate.render(collapsed, format.value, seed_means), output)


@cli.app.command()
@cli._friendly
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
    from metabench import aggregate, check_output, options
    from metabench import compare as comparing
    from metabench.errors import ResultError

    options.writable_file("--junit-xml", junit_xml)
    frame = cli._selected(paths, paper, profile)
    if frame.empty:
        if allow_empty:
            empty = comparing.check(frame).assign(passed=[], reason=[], tested=[], known=[])
            if junit_xml is not None:
                check_output.write_junit(empty, junit_xml)
            if format is DataFormat.json:
                cli._emit(check_output.to_json(empty), None)
            else:
                cli.out.print("[yellow]no results selected[/] (--allow-empty)")
            return
        where = ", ".join(str(p) for p in paths or [Path("results")])
        filters = "".join(f" with --{k} {v}" for k, v in (("paper", paper), ("profile", profile)) if v)
        raise ResultError(
            f"no results found under {where}{filters}",
            "check the path and filters, or pass --allow-empty when an empty selection is expected",
        )
    # Several seeds of one benchmark and profile are judged together, on their mean over seeds.
    outcome = comparing.check(aggregate.by_seed(frame) if aggregate.wanted(frame, None) else frame)
    if junit_xml is not None:
        cli.err.print(f"wrote {check_output.write_junit(outcome, junit_xml)}", highlight=False)
    if format is DataFormat.json:
        cli._emit(check_output.to_json(outcome), None)
        if not outcome["passed"].all():
            raise typer.Exit(1)
        return
    if not _print_check(outcome):
        raise typer.Exit(1)


def _print_check(outcome: pd.DataFrame) -> bool:
    """Print ``check``'s table, then the untested rows and either the tally of passes or each failure;
    returns whether every row passed. Apart from ``check`` so that choosing and judging the results reads
    apart from how the verdicts are worded on the terminal."""
    from metabench import compare as comparing

    cli.out.print(comparing.check_table(outcome))
    known = outcome[outcome["known"]]
    untested = outcome[outcome["passed"] & ~outcome["tested"] & ~outcome["known"]]
    _print_rows("[yellow]known[/]", known)
    _print_rows("[yellow]untested[/]", untested)
    failures = outcome[~outcome["passed"]]
    if failures.empty:
        checks = f" ({len(outcome)} checks: components and competitors are checked one by one)"
        files = len({p for paths in outcome["path"] for p in str(paths).split(";")})  # seeds aggregated: joined
        noun = "result passes" if files == 1 else f"{files} results pass"
        judged = outcome["path"].nunique()  # results, or groups of seeds judged together
        cli.out.print(f"[green]{'the' if files == 1 else 'all'} {noun}[/]" + (checks if len(outcome) != judged else ""))
        experiments = int(untested["experiment"].fillna("").astype(bool).sum()) if "experiment" in untested else 0
        if len(untested) > experiments:
            cli.out.print(
                f"[yellow]{len(untested) - experiments} of the checks are not regression-tested[/]: their floor "
                "does not beat the trivial baseline by the margin (docs/verdicts.md)"
            )
        if experiments:
            cli.out.print(f"[yellow]{experiments} experiments (--set)[/] are labelled and held to nothing")
        if not known.empty:
            cli.out.print(
                f"[yellow]{len(known)} known shortfall{'s' if len(known) != 1 else ''}[/]: paper runs that fall short, "
                "each named in its spec's known_shortfalls with the page that diagnoses it (docs/verdicts.md)"
            )
        return True
    _print_rows("[red]FAIL[/]", failures)
    return False


def _print_rows(mark: str, rows: pd.DataFrame) -> None:
    """One line per checked row on stderr: the mark, which result (and component), and why."""
    from metabench.spec import component_label

    for row in rows.itertuples():
        part = f" ({component_label(row.component)})" if row.component else ""
        cli.err.print(
            f"{mark} {row.paper} {row.benchmark}{part} ({row.profile}): {row.reason}", highlight=False, soft_wrap=True
        )
