"""The kind strategies own what is done with a stored result of their kind: its ``compare`` rows, the
integrity problems ``check`` recomputes, and the lines ``run`` prints (issue 17, requirement 2).

Each strategy is tested on a small synthetic result, judged by the strategy itself as the runner does and
stored as the writer stores it; the readers (``compare``, ``verify``, ``printout``, ``api``) are then
checked to pick the strategy and never to branch on a kind themselves, so a new kind touches
``metabench.kinds`` only.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from metabench import compare, printout, verify
from metabench.kinds import Claim, Evaluation, Kind, Scalar, Vector, kind_of, kind_of_result, scored
from metabench.registry_loader import get_spec
from metabench.result_schema import Result
from metabench.spec import Benchmark

EPISODES = 8
ROOT = Path(__file__).resolve().parents[1]


def _scores(offset: float, spread: float = 4.0) -> torch.Tensor:
    """Eight distinct per-episode scores around ``offset``."""
    return offset + spread * torch.tensor([-1.0, 0.5, 1.0, -0.5, 0.25, -0.25, 0.75, -0.75], dtype=torch.float64)


def _stored(bench: Benchmark, evaluation: Evaluation, profile_name: str = "quick") -> Result:
    """A result of ``bench`` as the writer stores it, with the verdict the benchmark's strategy gives."""
    profile = bench.profiles[profile_name]
    judged = kind_of(bench).judge(profile, evaluation)
    floor = list(profile.floor) if isinstance(profile.floor, tuple) else profile.floor
    data: dict[str, Any] = {
        "schema_version": 3,
        "paper": "synthetic",
        "title": "A synthetic result",
        "benchmark": bench.id,
        "profile": profile_name,
        "spec_file": "registry/synthetic.toml",
        "spec_sha256": "0" * 64,
        "protocol": {
            "dataset": bench.dataset,
            "split": bench.split,
            "image_size": bench.image_size,
            "ways": bench.ways,
            "shots": bench.shots,
            "queries": bench.queries,
            "metric": bench.metric,
            "direction": bench.direction,
            "transductive": False,
            "test_part": "test",
        },
        "hyperparameters": {},
        "seed": 0,
        "test_episodes": {"count": EPISODES, "seed": 1, "digest": "d" * 64},
        **scored(evaluation.scores, judged.summary, bench.reported, judged.judgement),
        "targets": {"chance": bench.chance, "floor": floor, "min_above_chance": profile.min_above_chance},
        "curve": [],
        "timing": {
            "train_seconds": 12.0,
            "eval_seconds": 3.0,
            "wall_seconds": 15.0,
            "train_episodes_per_second": 10.0,
            "eval_episodes_per_second": 2.0,
            "train_steps": 20,
        },
        **judged.fields,
        "environment": {"device": "cpu", "torch": torch.__version__, "python": "3", "cpu": "test"},
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "command": "metabench run synthetic",
        "created": "2026-01-01T00:00:00Z",
    }
    return Result.from_json(json.loads(json.dumps(data)), "synthetic")  # as read back from its file


def _bench(paper: str, benchmark: str) -> Benchmark:
    return get_spec(paper).benchmark(benchmark)


@pytest.fixture(scope="module")
def scalar() -> Result:
    bench = _bench("protonet", "omniglot-5w1s")
    return _stored(bench, Evaluation(_scores(bench.reported.value if bench.reported else 90.0)))


@pytest.fixture(scope="module")
def scalar_with_also() -> Result:
    bench = _bench("cnp", "gp-regression")
    return _stored(bench, Evaluation(_scores(0.5, 0.1), also={"mse": _scores(0.2, 0.01)}))


@pytest.fixture(scope="module")
def vector() -> Result:
    bench = _bench("mann", "omniglot-5class")
    columns = [_scores(30.0 + 10.0 * k) for k in range(len(bench.components))]
    return _stored(bench, Evaluation(_scores(40.0), by_component=torch.stack(columns, dim=1)))


@pytest.fixture(scope="module")
def claim() -> Result:
    bench = _bench("learned-optimizer", "quadratic-10d")
    assert bench.claim is not None
    # A lower loss than the first competitor's on every episode; the others' the same on average.
    competitors = {
        name: _scores(0.5, 0.12) if index == 0 else _scores(0.3, 0.11) for index, name in enumerate(bench.claim.against)
    }
    return _stored(bench, Evaluation(_scores(0.3, 0.1), competitors=competitors))


def _forged(result: Result, change: Any) -> Result:
    data = result.to_json()
    copy = json.loads(json.dumps(data))
    change(copy)
    return Result.from_json(copy, "forged")


# --------------------------------------------------------------------------- which strategy


def test_a_stored_result_gets_the_strategy_of_its_kind(scalar, scalar_with_also, vector, claim) -> None:
    assert kind_of_result(scalar) is Scalar and kind_of_result(scalar_with_also) is Scalar
    assert kind_of_result(vector) is Vector
    assert kind_of_result(claim) is Claim


def test_committed_results_of_every_schema_get_a_strategy() -> None:
    kinds = set()
    for path in sorted((ROOT / "results").rglob("*.json")):
        result = Result.read(path)
        kinds.add(kind_of_result(result))
        assert kind_of_result(result).rows(result, {})  # every stored result has at least its own row
    assert kinds == {Scalar, Vector, Claim}


# --------------------------------------------------------------------------- compare rows


def test_scalar_rows_one_row_with_its_judgement(scalar, scalar_with_also) -> None:
    (row,) = Scalar.rows(scalar, {"paper": "synthetic"})
    assert row["paper"] == "synthetic" and row["component"] == "" and row["role"] == ""
    assert row["mean"] == scalar.summary["mean"] and row["ci95"] == scalar.summary["ci95"]
    assert row["verdict"] == scalar.verdict["verdict"] and row["difference"] == scalar.verdict["difference"]
    assert scalar.reported is not None and row["reported"] == scalar.reported["value"]
    assert row["floor"] == scalar.targets["floor"] and row["also"] == "" and row["claim"] == ""
    (beside,) = Scalar.rows(scalar_with_also, {})
    mse = scalar_with_also.also["mse"]["summary"]
    assert beside["also"] == f"mse {mse['mean']:.4f} ± {mse['ci95']:.4f}"
    assert math.isnan(beside["reported"]) or beside["reported"] == scalar_with_also.reported["value"]


def test_vector_rows_one_row_per_component(vector) -> None:
    rows = Vector.rows(vector, {"paper": "synthetic"})
    components = vector.components or []
    assert [row["component"] for row in rows] == [part["name"] for part in components]
    assert {row["role"] for row in rows} == {"component"} and {row["paper"] for row in rows} == {"synthetic"}
    for row, part in zip(rows, components, strict=True):
        assert row["mean"] == part["summary"]["mean"] and row["verdict"] == part["verdict"]["verdict"]
        assert row["floor"] == part["floor"] and row["also"] == ""
    assert rows[0]["mean"] < rows[-1]["mean"]  # the synthetic components grow by ten points each


def test_claim_rows_the_method_then_one_row_per_competitor(claim) -> None:
    assert claim.claim is not None
    method, *competitors = Claim.rows(claim, {"paper": "synthetic", "figures": "a.png"})
    assert method["role"] == "" and method["claim"] == claim.claim["statement"]
    assert method["claim_expect"] == claim.claim.get("expect", "holds") and method["figures"] == "a.png"
    assert method["verdict"] == claim.claim["verdict"]
    assert [row["component"] for row in competitors] == list(claim.claim["comparisons"])
    for row in competitors:
        comparison = claim.claim["comparisons"][row["component"]]
        assert row["role"] == "competitor" and row["claim"] == method["claim"] and row["figures"] == ""
        assert row["mean"] == claim.competitors[row["component"]]["summary"]["mean"]
        assert row["difference"] == comparison["mean_difference"] and row["verdict"] == comparison["verdict"]
        assert math.isnan(row["floor"])


@pytest.mark.parametrize("which", ["scalar", "scalar_with_also", "vector", "claim"])
def test_the_common_and_the_kind_columns_fill_the_frame(which: str, request: pytest.FixtureRequest) -> None:
    """compare fills the columns every kind shares and the strategy the rest: together, every column."""
    result = request.getfixturevalue(which)
    rows = compare._rows(result, Path("synthetic.json"))
    assert rows and all(set(row) == set(compare.COLUMNS) for row in rows)
    assert {row["integrity"] for row in rows} == {""}


# --------------------------------------------------------------------------- integrity problems


@pytest.mark.parametrize("which", ["scalar", "scalar_with_also", "vector", "claim"])
def test_an_honest_synthetic_result_has_no_problems(which: str, request: pytest.FixtureRequest) -> None:
    result = request.getfixturevalue(which)
    assert kind_of_result(result).problems(result) == []
    assert verify.problems(result) == []


def test_scalar_problems_a_forged_verdict(scalar) -> None:
    assert scalar.verdict["verdict"] == "reproduced"  # the synthetic scores centre on the paper's number
    forged = _forged(scalar, lambda d: d["verdict"].update(verdict="above"))
    assert Scalar.problems(forged) == ["verdict is 'above', but its summary gives 'reproduced'"]


def test_vector_problems_a_forged_component_and_whole(vector) -> None:
    component = _forged(vector, lambda d: d["components"][1]["summary"].update(mean=99.0))
    assert any(p.startswith("components[1].summary.mean") for p in Vector.problems(component))
    whole = _forged(vector, lambda d: d["verdict"].update(verdict="reproduced"))
    assert any("but its components give" in p for p in Vector.problems(whole))


def test_claim_problems_a_forged_comparison_and_verdict(claim) -> None:
    first = claim.claim["against"][0]
    comparison = _forged(claim, lambda d: d["claim"]["comparisons"][first].update(p_value=0.5))
    assert any(p.startswith(f"claim.comparisons.{first}.p_value") for p in Claim.problems(comparison))
    competitor = _forged(claim, lambda d: d["competitors"][first]["summary"].update(mean=0.0))
    assert any(p.startswith(f"competitors.{first}.summary.mean") for p in Claim.problems(competitor))
    other = "holds" if claim.claim["verdict"] != "holds" else "fails"

    def verdict(d: dict) -> None:
        d["claim"]["verdict"] = d["verdict"]["verdict"] = other

    assert any("but its comparisons give" in p for p in Claim.problems(_forged(claim, verdict)))


def test_verify_checks_what_every_kind_shares(vector, claim) -> None:
    """The summary, the training steps and the also metrics are verify's, whatever the kind."""
    for result in (vector, claim):
        untrained = _forged(result, lambda d: d["timing"].update(train_steps=0))
        assert any("never trained" in p for p in verify.problems(untrained))
        assert not any("never trained" in p for p in kind_of_result(untrained).problems(untrained))


# --------------------------------------------------------------------------- run's printout


def _printed(result: Result) -> str:
    out = Console(width=400, record=True, color_system=None)  # no line wrapped
    printout.print_outcome(result, Path("synthetic.json"), out)
    return out.export_text()


def _plain(markup: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup).plain


def test_scalar_lines_are_the_also_metrics(scalar, scalar_with_also) -> None:
    assert Scalar.lines(scalar) == []
    ((name, text),) = Scalar.lines(scalar_with_also)
    assert name == "mse" and text.endswith("(reported beside, no verdict)")


def test_vector_lines_one_per_component(vector) -> None:
    lines = Vector.lines(vector)
    assert [name for name, _ in lines] == [f"{part['name']} instance" for part in vector.components or []]
    first = vector.components[0]
    assert _plain(lines[0][1]).startswith(f"{first['summary']['mean']:.2f} ± {first['summary']['ci95']:.2f}")
    assert f"floor {first['floor']:g}" in lines[0][1]  # a quick result shows each component's floor


def test_claim_lines_the_statement_then_each_comparison(claim) -> None:
    lines = Claim.lines(claim)
    assert lines[0] == ("claim", f"{claim.claim['statement']} ({claim.claim['confidence']}; {claim.claim['source']})")
    assert [name for name, _ in lines[1:]] == [f"vs {name}" for name in claim.claim["comparisons"]]
    for (_, text), comparison in zip(lines[1:], claim.claim["comparisons"].values(), strict=True):
        assert _plain(text).endswith(comparison["verdict"]) and "method - " in text


@pytest.mark.parametrize("which", ["scalar", "scalar_with_also", "vector", "claim"])
def test_the_printout_shows_the_strategy_lines_between_reproduced_and_verdict(
    which: str, request: pytest.FixtureRequest
) -> None:
    result = request.getfixturevalue(which)
    printed = [line.strip() for line in _printed(result).splitlines()]
    labels = [line.split("  ")[0] for line in printed]
    reproduced, verdict = labels.index("reproduced"), labels.index("verdict")
    expected = [(name, _plain(text)) for name, text in kind_of_result(result).lines(result)]
    between = [line for line in printed[reproduced + 1 : verdict] if not line.startswith("difference")]
    assert len(between) == len(expected)
    for line, (name, text) in zip(between, expected, strict=True):
        assert line.startswith(name) and line.endswith(text.strip())


# --------------------------------------------------------------------------- no kind branches in the readers

#: what a reader would test to tell the kinds apart: the keys only one kind stores, the spec's kind flags
KIND_KEYS = {"claim", "components", "competitors"}
KIND_ATTRIBUTES = KIND_KEYS | {"is_vector"}
READERS = ["bench/compare.py", "bench/verify.py", "bench/printout.py", "bench/api.py"]


def _kind_branches(source: str) -> list[str]:
    """Where ``source`` looks at a kind's own keys: ``"claim" in data``, ``data["components"]``,
    ``data.get("competitors")``, ``result.claim``, ``bench.is_vector``."""

    def kind_key(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in KIND_KEYS

    def get_of_kind_key(node: ast.Call) -> bool:
        method = node.func
        return isinstance(method, ast.Attribute) and method.attr == "get" and bool(node.args) and kind_key(node.args[0])

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in KIND_ATTRIBUTES:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Subscript) and kind_key(node.slice):
            found.append(f"line {node.lineno}: [{ast.unparse(node.slice)}]")
        elif (isinstance(node, ast.Compare) and kind_key(node.left)) or (
            isinstance(node, ast.Call) and get_of_kind_key(node)
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_branch_finder_finds_the_old_readers_branches() -> None:
    """The readers as they were before the strategies owned rows, checks and printout."""
    old = (
        'parts = data.get("components") or [None]\n'
        'if "claim" in data:\n    x = data["claim"]["statement"]\n'
        'for name in data["competitors"]:\n    pass\n'
        "if bench.claim is not None or bench.is_vector:\n    pass\n"
    )
    assert len(_kind_branches(old)) == 6
    assert _kind_branches('COLUMNS = ["claim", "component"]\nrow.get("role", "") == "competitor"\n') == []


@pytest.mark.parametrize("reader", READERS)
def test_readers_never_branch_on_a_kind(reader: str) -> None:
    """A new kind is a module in metabench.kinds: compare, check, run's printout and the API ask the
    strategy of the result and never test for a kind's own keys themselves."""
    assert _kind_branches((ROOT / reader).read_text(encoding="utf-8")) == []


def test_every_kind_implements_what_the_readers_ask() -> None:
    for kind in (Scalar, Vector, Claim):
        for method in ("evaluate", "judge", "rows", "problems"):
            own = inspect.getattr_static(kind, method)
            assert own is not inspect.getattr_static(Kind, method), f"{kind.__name__}.{method}"
