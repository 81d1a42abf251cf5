"""``metabench data``: find, download and verify datasets (a sub-command group of :mod:`metabench.cli`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from metabench.cli import DataDir, _friendly, err, out
from metabench.errors import MetabenchError

data_app = typer.Typer(help="Find, download and verify datasets.", no_args_is_help=True)


def _archives_of(dataset: str) -> Any:
    from metabench.data import archives
    from metabench.errors import UnknownNameError, did_you_mean

    if dataset not in archives.CATALOGUE:
        raise UnknownNameError(f"unknown dataset {dataset!r}", did_you_mean(dataset, list(archives.CATALOGUE)))
    return archives.CATALOGUE[dataset]


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
