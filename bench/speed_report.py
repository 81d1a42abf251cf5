"""What ``metabench bench`` prints from a :func:`metabench.speed.run_all` report: the table and the lines
that compare the engine path ``auto`` picks with each installed library."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def report_table(report: dict[str, Any], meta_batch: int, repeats: int) -> Table:
    """``metabench bench``'s table: each configuration's speed, its ratio to the per-task loop, memory."""
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
    return table


def report_lines(report: dict[str, Any], iterations: int) -> list[str]:
    """The engine path ``auto`` takes and each comparison with an installed library, one line each."""
    lines = [f"engine path chosen by auto on {report['device']}: {report['auto_path']}"]
    for c in report["against_libraries"]:
        how = f"median of {iterations} alternating rounds" if c["speed_kind"] == "paired" else "separate processes"
        lines.append(
            f"{c['order']} order, {c['engine']} against {c['library']}: {c['speed']:.2f}x its speed ({how}), "
            f"{c['memory']:.2f}x its peak memory"
        )
    return lines
