"""Accuracy by instance, a vector metric: spec, scoring, result schema, compare, check and --variant."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from metabench import compare, results
from metabench.episodes import EpisodeBatch, EpisodeShape, as_sequence, freeze, instance_numbers
from metabench.errors import MetabenchError, ResultError, SpecError
from metabench.evaluate import evaluate, evaluate_by_instance
from metabench.registry_loader import get_spec
from metabench.reproduction import Reproduction, TaskInfo
from metabench.runner import resolve_benchmark
from metabench.spec import parse_spec
from tests.test_episodes import labelled_bank
from tests.test_results import minimal

MANN_TOML = Path(__file__).resolve().parents[1] / "registry" / "mann.toml"


def mann_data() -> dict[str, Any]:
    return tomllib.loads(MANN_TOML.read_text())


def parse_bench(change: dict[str, Any]) -> None:
    data = mann_data()
    floor = change.pop("quick_floor", None)
    data["benchmarks"][0].update(change)
    if floor is not None:
        data["benchmarks"][0]["profiles"]["quick"]["floor"] = floor
    parse_spec(data, Path("mann.toml"))


def test_the_mann_spec_reports_table_1_by_instance() -> None:
    bench = get_spec("mann").benchmark("omniglot-5class")
    assert bench.is_vector and bench.sequence
    assert [c.name for c in bench.components] == ["1st", "2nd", "3rd", "4th", "5th", "10th"]
    assert [c.reported.value for c in bench.components if c.reported] == [36.4, 82.8, 91.0, 92.6, 94.9, 98.1]
    assert bench.reported is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"instances": []}, "instances: missing"),
        ({"sequence": False}, "sequence: metric 'accuracy-by-instance' needs sequence episodes"),
        ({"instances": [1, 2, 11, 4, 5, 10]}, "instance 11 never occurs"),
        ({"reported": {"values": [1.0, 2.0], "plus_minus_kind": "none", "decimals": 1, "table": "T",
                       "row": "r", "confidence": "HIGH"}}, "reported.values: expected 6 numbers"),
        ({"reported": {"value": 1.0, "values": [1.0] * 6, "plus_minus_kind": "none", "decimals": 1,
                       "table": "T", "row": "r", "confidence": "HIGH"}}, "reported.value: a vector benchmark"),
        ({"quick_floor": 50.0}, "quick.floor: a vector benchmark states one floor per instance"),
        ({"quick_floor": [1.0, 2.0]}, "quick.floor: expected 6 numbers"),
    ],
)  # fmt: skip
def test_malformed_vector_benchmarks_name_the_key(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_bench(change)


def test_scalar_benchmarks_refuse_instances_and_floor_lists() -> None:
    data = mann_data()
    data["benchmarks"][0].update(metric="accuracy", reported=None)
    data["benchmarks"][0].pop("reported")
    with pytest.raises(SpecError, match="only vector metrics"):
        parse_spec(data, Path("mann.toml"))
    data["benchmarks"][0].pop("instances")
    data["benchmarks"][0]["profiles"]["quick"]["floor"] = [1.0]
    with pytest.raises(SpecError, match="a list of floors is for vector benchmarks"):
        parse_spec(data, Path("mann.toml"))


class Oracle(Reproduction):
    """Right about a class from its second presentation on; at the first it always answers label 0."""

    Hyperparameters = dict

    def predict(self, batch: EpisodeBatch) -> Tensor:
        _, labels = as_sequence(batch)
        answer = torch.where(instance_numbers(labels, batch.ways) > 1, labels, torch.zeros_like(labels))
        return torch.nn.functional.one_hot(answer, batch.ways).float()


def test_accuracy_by_instance_on_a_model_whose_answers_are_known() -> None:
    frozen = freeze(labelled_bank(), EpisodeShape(5, 1, 9, sequence=True), 7, 0, {"dataset": "synthetic"})
    oracle = Oracle({}, TaskInfo(1, 4, 5, 1))
    overall, by_instance = evaluate_by_instance(oracle, frozen, labelled_bank(), 3, (1, 2, 10))
    # one class in five has label 0, so the first presentation is right 20% of the time; later ones always
    assert torch.allclose(by_instance, torch.tensor([[20.0, 100.0, 100.0]] * 7, dtype=torch.float64))
    assert torch.allclose(overall, torch.full((7,), 100.0 * 46 / 50, dtype=torch.float64))
    assert torch.equal(evaluate(oracle, frozen, labelled_bank(), 3), overall)


def vector_result(profile: str = "paper", means: list[float] | None = None) -> dict[str, Any]:
    data = minimal()
    bench = get_spec("mann").benchmark("omniglot-5class")
    data.update(paper="mann", benchmark="omniglot-5class", profile=profile)
    data["protocol"].update(split="santoro", image_size=20, queries=9, metric="accuracy-by-instance")
    means = means or [36.4, 82.8, 91.0, 92.6, 94.9, 98.1]
    data["components"] = [
        {
            "name": c.name,
            "instance": c.instance,
            "scores": [m, m],
            "summary": {"mean": m, "ci95": 0.0, "std": 0.0, "n": 2},  # what check recomputes from the scores
            "reported": None,
            "verdict": {"verdict": "no target", "difference": math.nan, "band": math.nan, "rule": ""},
            "floor": None,
        }
        for c, m in zip(bench.components, means, strict=True)
    ]
    return data


def test_schema_1_results_stay_valid_and_vector_results_need_components() -> None:
    old = minimal()
    old["schema_version"] = 1
    results.validate(old)
    results.validate(vector_result())
    bare = vector_result()
    del bare["components"]
    with pytest.raises(ResultError, match="missing key 'components'"):
        results.validate(bare)
    short = vector_result()
    short["components"][2]["scores"] = [1.0]
    with pytest.raises(ResultError, match=r"components\[2\] has 1 scores"):
        results.validate(short)
    in_v1 = vector_result()
    in_v1["schema_version"] = 1
    with pytest.raises(ResultError, match="only in schema 2"):
        results.validate(in_v1)


def write(tmp_path: Path, data: dict[str, Any], name: str) -> Path:
    return results.write_atomic(data, tmp_path / "mann" / f"{name}.json")


def test_compare_gives_one_row_per_instance_judged_against_the_registry(tmp_path: Path) -> None:
    write(tmp_path, vector_result(means=[36.4, 82.8, 91.0, 92.6, 94.9, 98.1]), "a")
    frame = compare.load_frame([tmp_path])
    assert frame["component"].tolist() == ["1st", "2nd", "3rd", "4th", "5th", "10th"]
    assert frame["reported"].tolist() == [36.4, 82.8, 91.0, 92.6, 94.9, 98.1]
    assert set(frame["verdict"]) == {"reproduced"}
    assert "omniglot-5class (2nd instance)" in compare.render(frame, "markdown")
    assert compare.check(frame)["passed"].all()


def test_check_fails_the_instance_that_falls_short(tmp_path: Path) -> None:
    write(tmp_path, vector_result(means=[36.4, 70.0, 91.0, 92.6, 94.9, 98.1]), "b")
    checked = compare.check(compare.load_frame([tmp_path]))
    failed = checked[~checked["passed"]]
    assert failed["component"].tolist() == ["2nd"]
    assert "below the paper's 82.8" in failed["reason"].iloc[0]


def test_quick_floors_are_per_instance(tmp_path: Path) -> None:
    bench = get_spec("mann").benchmark("omniglot-5class")
    floors = bench.profile("quick").floor
    data = vector_result(profile="quick", means=[0.0] * 6)
    write(tmp_path, data, "c")
    checked = compare.check(compare.load_frame([tmp_path]))
    if isinstance(floors, tuple):
        assert checked["floor"].tolist() == list(floors)
        tested = checked[checked["tested"]]
        assert len(tested) and not tested["passed"].any(), "every floor that means something catches a zero"
        assert checked.loc[~checked["tested"], "reason"].str.contains("not regression-tested").all()
    else:  # no floor measured: the check says so instead of passing silently on a number
        assert checked["reason"].str.contains("no floor measured").all()


def test_variant_picks_the_papers_lstm_row() -> None:
    spec = get_spec("mann")
    main, _ = resolve_benchmark(spec, None, shots=None, ways=None, dataset=None)
    lstm, _ = resolve_benchmark(spec, None, shots=None, ways=None, dataset=None, variant="lstm")
    assert (main.id, lstm.id) == ("omniglot-5class", "omniglot-5class-lstm")
    assert [c.reported.value for c in lstm.components if c.reported][:2] == [24.4, 49.5]
    with pytest.raises(MetabenchError, match="no variant 'lstn'") as error:
        resolve_benchmark(spec, None, shots=None, ways=None, dataset=None, variant="lstn")
    assert "lstm" in (error.value.hint or "")
    with pytest.raises(MetabenchError, match="contradicts"):
        resolve_benchmark(spec, "omniglot-5class", shots=None, ways=None, dataset=None, variant="lstm")
    with pytest.raises(MetabenchError, match="no variant"):
        resolve_benchmark(get_spec("metanet"), None, shots=1, ways=None, dataset=None, variant="lstm")


def test_a_copy_of_a_vector_result_is_not_shared_state() -> None:
    first = vector_result()
    second = copy.deepcopy(first)
    second["components"][0]["summary"]["mean"] = 0.0
    assert first["components"][0]["summary"]["mean"] == 36.4


def test_list_and_show_print_the_instances_and_the_variant() -> None:
    from typer.testing import CliRunner

    from metabench.cli import app

    listed = CliRunner().invoke(app, ["list"], catch_exceptions=False).output
    assert "1st 36.4" in listed and "--variant lstm" in listed
    shown = CliRunner().invoke(app, ["show", "mann"], catch_exceptions=False).output
    assert "10th 98.1" in shown and "variant: lstm" in shown and "sequence episodes" in shown
