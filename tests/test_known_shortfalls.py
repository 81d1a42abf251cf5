"""A paper run that falls short fails ``check`` unless its spec names that very file as diagnosed.

CI runs ``metabench check results/`` as a regression check against the reported numbers, so a committed
paper result that falls short would fail it for good. A spec's ``known_shortfalls`` lets the one file
whose shortfall is written up pass as ``known``; these tests hold that the acknowledgement is that narrow:
another run of the same benchmark (a rerun is a new file) still fails, and an acknowledgement of a file
that no longer falls short fails too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from metabench import check_output, compare
from metabench.cli import app
from metabench.registry_loader import all_specs
from metabench.spec import Benchmark, KnownShortfall

REPO = Path(__file__).resolve().parents[1]
#: a committed paper result that reproduces its paper (HyperNetworks, MNIST without the hypernetwork)
REPRODUCED = sorted((REPO / "results" / "hypernetwork").glob("mnist-plain__paper__*.json"))[0]


def _paper_row(verdict: str, known: str = "") -> pd.Series:
    return pd.Series(
        {
            "paper": "p",
            "benchmark": "b",
            "component": "",
            "role": "",
            "profile": "paper",
            "experiment": "",
            "seed": 0,
            "verdict": verdict,
            "direction": "higher",
            "mean": 90.0,
            "reported": 98.0,
            "difference": -8.0,
            "band": 1.0,
            "claim": "",
            "claim_expect": "",
            "integrity": "",
            "floor": None,
            "chance": 20.0,
            "metric": "accuracy",
            "path": "results/p/b__paper__seed0__T.json",
            "known_shortfall": known,
        }
    )


def _check(*rows: pd.Series) -> pd.DataFrame:
    return compare.check(pd.DataFrame(rows))


def test_a_shortfall_fails_unless_named_and_then_says_where_it_is_diagnosed() -> None:
    checked = _check(_paper_row("below"), _paper_row("below", known="docs/papers/p.md#why"))
    unnamed, named = checked.iloc[0], checked.iloc[1]
    assert not unnamed["passed"] and "below the paper's 98" in unnamed["reason"]
    assert named["passed"] and named["known"] and not named["tested"]
    assert "docs/papers/p.md#why" in named["reason"] and "below the paper's 98" in named["reason"]
    assert check_output.status(named) == "known"
    assert json.loads(check_output.to_json(checked))["known"] == 1
    assert 'skipped message="known shortfall' in check_output.to_junit(checked)


def test_an_acknowledgement_of_a_result_that_does_not_fall_short_fails() -> None:
    checked = _check(_paper_row("reproduced", known="docs/papers/p.md#why")).iloc[0]
    assert not checked["passed"] and "remove it from the benchmark's known_shortfalls" in checked["reason"]


def _acknowledge(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    def known_shortfall(self: Benchmark, result_name: str) -> KnownShortfall | None:
        return KnownShortfall(name, "docs/papers/hypernetwork.md") if result_name == name else None

    monkeypatch.setattr(Benchmark, "known_shortfall", known_shortfall)


def test_compare_takes_the_acknowledgement_from_the_registry_by_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The named file is marked (and, reproducing, fails as a stale acknowledgement); the same result
    under another name, as a rerun would be, is judged as any paper run."""
    named = tmp_path / REPRODUCED.name
    rerun = tmp_path / REPRODUCED.name.replace("__seed0__", "__seed0__rerun")
    shutil.copy(REPRODUCED, named)
    shutil.copy(REPRODUCED, rerun)
    _acknowledge(monkeypatch, REPRODUCED.name)
    frame = compare.load_frame([tmp_path])
    marks = dict(zip(frame["path"].map(lambda p: Path(p).name), frame["known_shortfall"], strict=True))
    assert marks == {named.name: "docs/papers/hypernetwork.md", rerun.name: ""}
    checked = compare.check(frame).set_index(frame["path"].map(lambda p: Path(p).name))
    assert not checked.loc[named.name, "passed"] and checked.loc[rerun.name, "passed"]
    result = CliRunner().invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1 and "remove it from the benchmark's known_shortfalls" in result.output


KNOWN = [
    (spec.key, bench.id, known)
    for spec in all_specs().values()
    for bench in spec.benchmarks
    for known in bench.known_shortfalls
]


@pytest.mark.parametrize(("paper", "benchmark", "known"), KNOWN, ids=[k.result for _, _, k in KNOWN])
def test_every_acknowledged_shortfall_is_a_committed_result_that_falls_short(
    paper: str, benchmark: str, known: KnownShortfall
) -> None:
    """The registry's acknowledgements name committed files that do fall short, and pages that exist."""
    path = REPO / "results" / paper / known.result
    assert path.is_file(), f"{paper} {benchmark}: known_shortfalls names {known.result}, not in results/{paper}/"
    checked = compare.check(compare.load_frame([path]))
    method = checked[checked["role"] != "competitor"]
    assert method["known"].all(), method["reason"].tolist()
    page = REPO / known.finding.split("#")[0]
    assert page.is_file(), f"{known.finding}: no such page"


def test_a_vector_result_is_acknowledged_as_one_file() -> None:
    """MANN's instances are rows of one file: the acknowledgement holds while any of them falls short,
    and a component that reproduces passes as it would anyway."""
    short = _paper_row("below", known="docs/papers/p.md#why")
    fine = _paper_row("reproduced", known="docs/papers/p.md#why")
    short["component"], fine["component"] = "1st", "2nd"
    checked = _check(short, fine)
    assert checked["passed"].all()
    assert checked["known"].tolist() == [True, False]
    assert check_output.status(checked.iloc[1]) == "pass"
