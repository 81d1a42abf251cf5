"""What a CLI user expects: a compare table that fits the terminal, a result path that can be copied,
``--version``, shell completion, JSON from list, show and check, and JUnit XML for CI."""

from __future__ import annotations

import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from metabench import cli, compare, printout
from metabench.cli import app
from metabench.result_schema import Result

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results"
runner = CliRunner()


@pytest.fixture(scope="module")
def frame():
    return compare.load_frame([COMMITTED])


def _terminal(monkeypatch: pytest.MonkeyPatch, width: int) -> io.StringIO:
    """Give the CLI's console a terminal ``width`` columns wide; returns what it prints."""
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out", Console(file=buffer, width=width, color_system=None, force_terminal=False))
    return buffer


@pytest.mark.parametrize("width", [80, 120])
def test_compare_fits_the_terminal_without_cutting_a_required_column(
    monkeypatch: pytest.MonkeyPatch, frame, width: int
) -> None:
    buffer = _terminal(monkeypatch, width)
    result = runner.invoke(app, ["compare", str(COMMITTED)], catch_exceptions=False)
    assert result.exit_code == 0
    text = buffer.getvalue()
    lines = text.splitlines()
    assert "…" not in text
    assert all(cell_len(line.rstrip()) <= width for line in lines), max(lines, key=cell_len)
    header = next(line for line in lines if line.lstrip().startswith("paper"))
    for column in compare.REQUIRED_COLUMNS:
        assert column in header.split()
    if width >= 120:
        assert "profile" in header.split() and "budget" in header.split()
    else:
        assert "device" not in header.split()
    shown = compare.display_frame(frame)
    # every row's paper, reported value, reproduced number, difference and verdict appear whole on one line
    for row in shown.itertuples(index=False):
        assert any(
            line.startswith(row.paper)
            and row.reproduced in line
            and row.difference in line
            and row.verdict in line
            and (row.reported in line or " " in row.reported)  # a claim's note may wrap between words
            for line in lines
        ), row
        first_piece = compare.wrap_name(row.benchmark, 9).splitlines()[0]
        assert first_piece in text


def test_benchmark_names_wrap_after_hyphens_and_spaces_never_cut() -> None:
    assert compare.wrap_name("mnist-completion (10 context)", 14) == "mnist-\ncompletion (10\ncontext)"
    assert compare.wrap_name("omniglot-5w1s", 20) == "omniglot-5w1s"
    folded = compare.wrap_name("abcdefghijklmnop", 5)
    assert folded.replace("\n", "") == "abcdefghijklmnop" and all(len(p) <= 5 for p in folded.splitlines())


def test_narrow_terminal_prints_notes_under_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = _terminal(monkeypatch, 80)
    runner.invoke(app, ["compare", str(COMMITTED), "--paper", "mann"], catch_exceptions=False)
    assert "floor not regression-tested" in buffer.getvalue()


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_format_output_does_not_depend_on_the_terminal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmt: str
) -> None:
    written = []
    for width in (60, 80, 250):
        _terminal(monkeypatch, width)
        target = tmp_path / f"{width}.{fmt}"
        result = runner.invoke(
            app, ["compare", str(COMMITTED), "--format", fmt, "--output", str(target)], catch_exceptions=False
        )
        assert result.exit_code == 0
        written.append(target.read_text(encoding="utf-8"))
    assert written[0] == written[1] == written[2]
    assert "…" not in written[0] and "device" in written[0]


def test_columns_chooses_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = _terminal(monkeypatch, 200)
    result = runner.invoke(
        app, ["compare", str(COMMITTED), "--columns", "paper,benchmark,verdict,seed,commit"], catch_exceptions=False
    )
    assert result.exit_code == 0
    header = next(line for line in buffer.getvalue().splitlines() if line.lstrip().startswith("paper"))
    assert header.split() == ["paper", "benchmark", "verdict", "seed", "commit"]
    wrong = runner.invoke(app, ["compare", str(COMMITTED), "--columns", "paper,verdikt"])
    assert wrong.exit_code == 2 and "verdict" in wrong.output
    refused = runner.invoke(app, ["compare", str(COMMITTED), "--columns", "paper", "--format", "csv"])
    assert refused.exit_code == 2 and "--columns" in refused.output


def test_run_prints_the_result_path_whole_on_its_own_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = sorted((COMMITTED / "protonet").glob("omniglot-5w1s__quick__*.json"))[0]
    deep = tmp_path / ("a-very-long-folder-name-" * 4) / "protonet" / source.name
    buffer = _terminal(monkeypatch, 60)
    printout.print_outcome(Result.read(source), deep, cli.out)
    lines = buffer.getvalue().splitlines()
    assert lines[-2] == "result:" and lines[-1] == str(deep)


# --------------------------------------------------------------------------- conventions


def test_version_and_completion() -> None:
    from metabench import __version__

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"metabench {__version__}"
    helped = runner.invoke(app, ["--help"])
    assert "--install-completion" in helped.output and "--show-completion" in helped.output


def test_list_and_show_as_json() -> None:
    from metabench.listing import LIST_COLUMNS, list_benchmarks

    listed = runner.invoke(app, ["list", "--format", "json"], catch_exceptions=False)
    records = json.loads(listed.stdout)
    frame = list_benchmarks()
    assert len(records) == len(frame) > 20 and list(records[0]) == LIST_COLUMNS
    protonet = next(r for r in records if r["paper"] == "protonet" and r["benchmark"] == "omniglot-5w1s")
    assert protonet["reported_value"] == 98.8 and protonet["ways"] == 5 and protonet["default"] is True
    shown = json.loads(runner.invoke(app, ["show", "protonet", "--format", "json"], catch_exceptions=False).stdout)
    assert shown["key"] == "protonet" and shown["source"] == "registry/protonet.toml"
    bench = next(b for b in shown["benchmarks"] if b["id"] == "omniglot-5w1s")
    assert bench["reported"]["value"] == 98.8 and bench["profiles"]["quick"]["train_episodes"] > 0


def test_check_as_json_and_junit(tmp_path: Path) -> None:
    junit = tmp_path / "ci" / "check.xml"
    result = runner.invoke(app, ["check", str(COMMITTED), "--format", "json", "--junit-xml", str(junit)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    frame = compare.load_frame([COMMITTED])
    assert report["checks"] == len(frame) and report["passed"] is True
    assert {r["status"] for r in report["rows"]} <= {"pass", "untested", "known"}
    assert report["known"] == sum(r["status"] == "known" for r in report["rows"]) > 0
    suites = ET.parse(junit).getroot()
    cases = suites.findall("./testsuite/testcase")
    assert len(cases) == len(frame) == int(suites.get("tests"))
    assert int(suites.get("skipped")) == report["untested"] + report["known"] and suites.get("failures") == "0"


def test_check_junit_records_a_failure(tmp_path: Path) -> None:
    source = sorted((COMMITTED / "protonet").glob("omniglot-5w1s__quick__*.json"))[0]
    folder = tmp_path / "results" / "protonet"
    folder.mkdir(parents=True)
    data = json.loads(source.read_text(encoding="utf-8"))
    data["summary"]["mean"] += 1.0  # a stored number that its per-episode scores do not give
    (folder / source.name).write_text(json.dumps(data), encoding="utf-8")
    shutil.copy(source, folder / source.name.replace("seed0", "seed9"))
    junit = tmp_path / "check.xml"
    result = runner.invoke(app, ["check", str(tmp_path / "results"), "--format", "json", "--junit-xml", str(junit)])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["rows"]
    assert sorted(r["status"] for r in rows) == ["fail", "pass"]
    failures = ET.parse(junit).getroot().findall(".//failure")
    assert len(failures) == 1 and "disagree" in failures[0].get("message")
