"""Write the estimates of `scripts/estimate_all.py` into the specs as each benchmark's `paper_estimate`.

Usage: python scripts/write_estimates.py ESTIMATES.jsonl MACHINE

MACHINE names the machine the estimates were measured on (e.g. "2-core Xeon CPU"). The hours are the
CPU-time figure (a one-thread run's time on that machine when idle), to two significant digits; a
training that scores several benchmarks gives each of them the time of the whole run. The line goes
right after the benchmark's `id = ...` line, replacing an older `paper_estimate`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REGISTRY = Path(__file__).resolve().parent.parent / "registry"


def two_digits(hours: float) -> float:
    return float(f"{hours:.2g}")


def estimate_line(row: dict, machine: str) -> str:
    shared = row["scored"]
    serves = f"; one training scores {', '.join(shared)}, the time covers all" if len(shared) > 1 else ""
    measured = (
        f"CPU time of {row['steps_timed']} timed steps and {row['threads']} torch thread on the {machine}, "
        f"metabench estimate at {str(row.get('commit'))[:7]}{serves}"
    )
    return f'paper_estimate = {{ hours = {two_digits(row["cpu_total_hours"])}, measured = "{measured}" }}\n'


def write_into(spec: Path, benchmark: str, line: str) -> None:
    lines = spec.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, text in enumerate(lines) if re.fullmatch(rf'id\s*=\s*"{re.escape(benchmark)}"\s*', text))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[[")), len(lines))
    old = [i for i in range(start, end) if lines[i].startswith("paper_estimate")]
    if old:
        lines[old[0]] = line
    else:
        lines.insert(start + 1, line)
    spec.write_text("".join(lines), encoding="utf-8")


def main() -> None:
    source, machine = Path(sys.argv[1]), sys.argv[2]
    for text in source.read_text().splitlines():
        row = json.loads(text)
        if "error" in row:
            print(f"skipped {row['paper']} {row['benchmark']}: {row['error']}", file=sys.stderr)
            continue
        for benchmark in row["scored"]:
            write_into(REGISTRY / f"{row['paper']}.toml", benchmark, estimate_line(row, machine))


if __name__ == "__main__":
    main()
