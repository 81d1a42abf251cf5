"""The frozen test episodes of every benchmark, as digests: what ``tests/data/golden_digests.json`` records.

A frozen set's digest is what a result cites to prove which tasks it was scored on, so a refactoring
of the task sources must leave every digest as it was. The golden file is written once from the code
that produced the committed results (``python -m tests.golden``) and
:mod:`tests.test_golden_digests` recomputes it. Only the index draws and the bank's digest are needed,
so loading each split once and freezing is all the work; no model is built.

miniImageNet cannot be shipped: its digests are those of the synthetic folder of ``conftest``
(``mini_root``), which still pins the draws and the loader's pixels of that folder.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from metabench.data import load_parts
from metabench.episodes import EpisodeShape
from metabench.registry_loader import all_specs
from metabench.spec import Benchmark
from metabench.tasks import TaskSource

GOLDEN = Path(__file__).parent / "data" / "golden_digests.json"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def committed_counts() -> dict[tuple[str, str], set[int]]:
    """The test-episode counts committed results under ``results/`` were scored on, per benchmark."""
    counts: dict[tuple[str, str], set[int]] = {}
    for path in sorted(RESULTS.rglob("*.json")):
        stored = json.loads(path.read_text(encoding="utf-8"))
        counts.setdefault((stored["paper"], stored["benchmark"]), set()).add(int(stored["test_episodes"]["count"]))
    return counts


def cases() -> list[tuple[str, Benchmark, list[int]]]:
    """Every benchmark of every spec with the counts to freeze: its quick and paper profiles' and any a
    committed result of it records."""
    extra = committed_counts()
    found = []
    for spec in all_specs().values():
        for bench in spec.benchmarks:
            counts = {bench.profile(p).test_episodes for p in ("quick", "paper")} | extra.get(
                (spec.key, bench.id), set()
            )
            found.append((spec.key, bench, sorted(counts)))
    return found


class PartCache:
    """Each (dataset, split, image size) loaded once, whichever benchmarks share it."""

    def __init__(self, folder_for: Callable[[str], Path | None]) -> None:
        self.folder_for = folder_for
        self.loaded: dict[tuple[str, str, int], dict[str, TaskSource]] = {}

    def part(self, bench: Benchmark) -> TaskSource:
        key = (bench.dataset, bench.split, bench.image_size)
        if key not in self.loaded:
            folder = self.folder_for(bench.dataset)
            self.loaded[key] = load_parts(*key, data_dir=folder, download=False, progress=False)
        return self.loaded[key][bench.test_part]


def digest(parts: PartCache, bench: Benchmark, count: int) -> str:
    """The digest of ``bench``'s ``count`` frozen test episodes, keyed as the runner keys them (``banks.py``)."""
    shape = EpisodeShape(bench.ways, bench.shots, bench.queries, bench.sequence)
    key = {"dataset": bench.dataset, "split": bench.split, "part": bench.test_part, "image_size": bench.image_size}
    return parts.part(bench).freeze(shape, count, bench.test_seed, key).digest


def compute(folder_for: Callable[[str], Path | None]) -> dict[str, dict[str, str]]:
    """``{"paper/benchmark": {"count@seed": digest}}`` for every case."""
    parts = PartCache(folder_for)
    golden: dict[str, dict[str, str]] = {}
    for paper, bench, counts in cases():
        golden[f"{paper}/{bench.id}"] = {f"{n}@{bench.test_seed}": digest(parts, bench, n) for n in counts}
    return golden


def main() -> None:
    """Write the golden file: real archives from ``$METABENCH_DATA``, miniImageNet on the synthetic folder."""
    import os
    import tempfile

    from tests.conftest import MINI_SPLITS, write_mini_folder

    mini = Path(tempfile.mkdtemp(prefix="golden-mini-"))
    first = 0
    for dirname, split_parts in MINI_SPLITS.items():
        write_mini_folder(mini / dirname, split_parts, first=first)
        first += sum(split_parts.values())
    data = Path(os.environ["METABENCH_DATA"])
    golden = compute(lambda dataset: mini if dataset == "miniimagenet" else data)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {sum(len(v) for v in golden.values())} digests to {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":
    main()
