"""No refactoring of the task sources may move a frozen test set: digests are what results cite.

``tests/data/golden_digests.json`` (written by ``python -m tests.golden``) holds the digest of every
benchmark's quick and paper test episodes, and of every count a committed result records. Each case
recomputes its own dataset's digests and is gated on that dataset's archive only; generated sources
and the synthetic miniImageNet folder always run. Committed results are checked against the golden
file, so that test needs no data at all.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import archive_folder, needs_archive
from tests.golden import GOLDEN, RESULTS, PartCache, cases, digest


def _golden() -> dict[str, dict[str, str]]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


def _params() -> list[object]:
    """One case per dataset (its benchmarks share loaded parts), marked ``data`` when it reads an archive."""
    datasets = sorted({bench.dataset for _, bench, _ in cases()})
    marks = {d: [pytest.mark.data] if needs_archive(d) else [] for d in datasets}
    return [pytest.param(d, marks=marks[d], id=d) for d in datasets]


@pytest.mark.parametrize("dataset", _params())
def test_frozen_digests_match_the_golden_file(dataset: str, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue("mini_root") if dataset == "miniimagenet" else archive_folder(dataset)
    parts = PartCache(lambda _: folder)
    golden = _golden()
    mismatched = []
    for paper, bench, counts in cases():
        if bench.dataset != dataset:
            continue
        name = f"{paper}/{bench.id}"
        assert name in golden, f"{name} has no golden digests: run python -m tests.golden and commit them"
        for count in counts:
            label = f"{count}@{bench.test_seed}"
            if golden[name].get(label) != digest(parts, bench, count):
                mismatched.append(f"{name} {label}")
    assert not mismatched, f"frozen test episodes moved: {mismatched}"


def test_every_committed_result_records_its_benchmarks_current_digest() -> None:
    """A committed result whose benchmark still exists cites the digest its episodes have now (miniImageNet's
    golden digests are of the synthetic folder, so no committed result may be on it unchecked)."""
    golden = _golden()
    checked = 0
    for path in sorted(RESULTS.rglob("*.json")):
        stored = json.loads(path.read_text(encoding="utf-8"))
        name = f"{stored['paper']}/{stored['benchmark']}"
        if name not in golden:
            continue  # a benchmark since removed from the registry
        assert stored["protocol"]["dataset"] != "miniimagenet", f"{path}: no golden digest of real miniImageNet"
        episodes = stored["test_episodes"]
        label = f"{episodes['count']}@{episodes['seed']}"
        assert golden[name].get(label) == episodes["digest"], f"{path} cites another digest than {name} {label}"
        checked += 1
    assert checked > 0
