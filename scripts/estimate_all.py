"""Time every paper profile once per training (`metabench estimate`), one JSON line per training.

Usage: OMP_NUM_THREADS=1 python scripts/estimate_all.py OUT.jsonl [--steps N] [--profile paper]

A training that serves several benchmarks is timed once (its estimate includes every test it scores);
benchmarks whose data is absent are skipped with a line saying so. Lines already in OUT are kept, so
an interrupted sweep continues where it stopped. `scripts/write_estimates.py` copies the results into
the specs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from metabench.errors import MetabenchError
from metabench.estimate import estimate
from metabench.plan import RunRequest
from metabench.provenance import code_state
from metabench.registry_loader import all_specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile", default="paper")
    args = parser.parse_args()
    done: set[tuple[str, str]] = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            done.update((row["paper"], b) for b in row.get("scored", [row["benchmark"]]))
    git, _ = code_state()
    quiet = Console(quiet=True)
    for spec in all_specs().values():
        for bench in spec.benchmarks:
            if (spec.key, bench.id) in done:
                continue
            request = RunRequest(
                paper=spec.key, benchmark=bench.id, profile=args.profile, share_training=True, progress=False
            )
            try:
                found = estimate(request, args.steps, 2, quiet)
                row = {**found.as_dict(), "commit": git.get("commit"), "dirty": git.get("dirty")}
            except MetabenchError as error:
                row = {"paper": spec.key, "benchmark": bench.id, "scored": [bench.id], "error": str(error)}
            done.update((spec.key, b) for b in row["scored"])
            with args.out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(spec.key, bench.id, row.get("cpu_total_hours", row.get("error")), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
