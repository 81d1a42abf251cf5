"""Spec validation: malformed specs name their file and key; the registry resolves names or suggests."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from metabench.errors import SpecError, UnknownNameError
from metabench.registry_loader import all_specs, get_spec, implementation, spec_files
from metabench.spec import load_spec_file, parse_spec

PROTONET = Path(__file__).resolve().parents[1] / "registry" / "protonet.toml"


def valid() -> dict[str, Any]:
    return tomllib.loads(PROTONET.read_text())


def parse(data: dict[str, Any], name: str = "protonet.toml") -> None:
    parse_spec(data, Path(name))


def test_packaged_registry_loads_every_spec() -> None:
    specs = all_specs()
    assert "protonet" in specs
    assert {p.stem for p in spec_files()} == set(specs)
    for spec in specs.values():
        assert spec.benchmarks and implementation(spec)


def test_profiles_inherit_spec_defaults_and_benchmark_overrides() -> None:
    bench = get_spec("protonet").benchmark("omniglot-20w5s")
    paper = bench.profile("paper")
    assert (paper.train_ways, paper.train_shots, paper.train_queries) == (60, 5, 5)
    assert paper.test_episodes == 1000 and paper.lr == 0.001 and paper.lr_decay_every == 2000
    assert bench.profile("smoke").min_above_chance == 15.0


def mutate(path: list[Any], value: Any = None, delete: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(valid())
    target = data
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (mutate(["title"], delete=True), "protonet.toml.title: missing"),
        (mutate(["year"], "2017"), "protonet.toml.year: expected an integer, found str"),
        (mutate(["colour"], "blue"), "protonet.toml.colour: unknown key"),
        (mutate(["implementation"], "no_colon"), "protonet.toml.implementation"),
        (mutate(["benchmarks", 0, "ways"], delete=True), "benchmarks[omniglot-5w1s].ways: missing"),
        (mutate(["benchmarks", 0, "ways"], 1), "benchmarks[omniglot-5w1s].ways: an episode needs at least 2"),
        (mutate(["benchmarks", 0, "shots"], -1), "benchmarks[omniglot-5w1s].shots: must be a non-negative"),
        (mutate(["benchmarks", 0, "transductive"], "no"), "transductive: expected true/false"),
        (mutate(["benchmarks", 0, "metric"], "f1"), "metric: 'f1' is not one of"),
        (mutate(["benchmarks", 0, "reported", "plus_minus_kind"], "sd"), "reported.plus_minus_kind"),
        (mutate(["benchmarks", 0, "reported", "decimals"], delete=True), "reported.decimals: missing"),
        (mutate(["benchmarks", 0, "reported", "plus_minus"], 0.4), "reported.plus_minus: is set but"),
        (mutate(["benchmarks", 0, "reported", "confidence"], "LOW"), "reported.confidence"),
        (mutate(["benchmarks", 0, "profiles", "quick", "lr"], "fast"), "profiles.quick.lr: expected a number"),
        (mutate(["benchmarks", 0, "profiles", "quick", "test_episodes"], 100), "test_episodes: 100 is too few"),
        (mutate(["benchmarks", 0, "profiles", "quick", "tset_episodes"], 600), "quick.tset_episodes: unknown key"),
        (mutate(["benchmarks", 0, "profiles", "turbo"], {}), "profiles.turbo: unknown profile"),
        (mutate(["profiles", "smoke", "min_above_chance"], delete=True), "smoke.min_above_chance: missing"),
        (mutate(["benchmarks", 0, "profiles", "quick", "learning_part"], "train"), "quick.learning_part: only a smoke"),
        (mutate(["profiles", "paper", "optimizer"], "lbfgs"), "paper.optimizer: 'lbfgs' is not one of"),
        (mutate(["benchmarks"], []), "protonet.toml.benchmarks: empty"),
        (mutate(["key"], "protonets"), "differs from the file name"),
        (mutate(["benchmarks", 0, "paper_estimate"], {"hours": 0, "measured": "x"}), "paper_estimate.hours: must be"),
        (mutate(["profiles", "paper", "momentum"], 0.9), "paper.momentum: 0.9 needs 0 <= momentum < 1 and the sgd"),
        (mutate(["profiles", "quick", "momentum"], 1.0), "quick.momentum: 1.0 needs"),
        (mutate(["benchmarks", 0, "paper_estimate"], {"hours": 2.0}), "paper_estimate.measured: missing"),
        (mutate(["benchmarks", 0, "paper_estimate"], {"hours": 2, "measured": "x", "on": 1}), "estimate.on: unknown"),
        (mutate(["benchmarks", 0, "known_shortfalls"], ["x.json"]), "known_shortfalls: each entry is"),
        (
            mutate(
                ["benchmarks", 0, "known_shortfalls"],
                [{"result": "omniglot-5w1s__quick__seed0__T.json", "finding": "d"}],
            ),
            "known_shortfalls[0].result: names a paper result of this benchmark",
        ),
        (
            mutate(
                ["benchmarks", 0, "known_shortfalls"],
                [{"result": "omniglot-20w1s__paper__seed0__T.json", "finding": "d"}],
            ),
            "known_shortfalls[0].result: names a paper result",
        ),
        (
            mutate(
                ["benchmarks", 0, "known_shortfalls"],
                [{"result": "omniglot-5w1s__paper__seed0__T.json", "finding": " "}],
            ),
            "known_shortfalls[0].finding: says where",
        ),
        (
            mutate(["benchmarks", 0, "known_shortfalls"], [{"result": "omniglot-5w1s__paper__seed0__T.json"}]),
            "known_shortfalls[0].finding: missing",
        ),
    ],
)
def test_malformed_spec_names_file_and_key(data: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse(data)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("protonet.toml")


@pytest.mark.parametrize(("name", "kind"), [("adam", "Adam"), ("sgd", "SGD"), ("rmsprop", "RMSprop")])
def test_the_profiles_optimiser_is_built_with_its_momentum(name: str, kind: str) -> None:
    import dataclasses

    import torch

    from metabench.training import make_optimizer

    profile = get_spec("protonet").benchmark("omniglot-5w1s").profile("smoke")
    profile = dataclasses.replace(profile, optimizer=name, momentum=0.0 if name == "adam" else 0.9)
    optimizer, _ = make_optimizer(torch.nn.Linear(2, 2), profile)  # type: ignore[arg-type]
    assert type(optimizer).__name__ == kind
    if name != "adam":
        assert optimizer.param_groups[0]["momentum"] == 0.9


def test_a_paper_estimate_is_read_with_what_it_was_measured_on() -> None:
    data = mutate(["benchmarks", 0, "paper_estimate"], {"hours": 2, "measured": "10 steps, 2-core CPU"})
    data["benchmarks"][1].pop("paper_estimate", None)  # a benchmark that states none
    spec = parse_spec(data, Path("protonet.toml"))
    estimate = spec.benchmarks[0].paper_estimate
    assert estimate is not None and (estimate.hours, estimate.measured) == (2.0, "10 steps, 2-core CPU")
    assert spec.benchmarks[1].paper_estimate is None


def test_quick_profile_needs_a_floor_or_a_note_saying_why_none_was_measured() -> None:
    data = mutate(["benchmarks", 0, "profiles", "quick", "floor"], delete=True)
    del data["benchmarks"][0]["profiles"]["quick"]["floor_note"]
    with pytest.raises(SpecError, match=r"protonet.toml.*profiles.quick.floor: missing"):
        parse(data)
    data["benchmarks"][0]["profiles"]["quick"]["floor_note"] = "miniImageNet is user-supplied"
    parse(data)


def test_duplicate_benchmark_ids_are_refused() -> None:
    data = valid()
    data["benchmarks"].append(copy.deepcopy(data["benchmarks"][0]))
    with pytest.raises(SpecError, match="duplicate id 'omniglot-5w1s'"):
        parse(data)


def test_paper_count_of_test_episodes_is_the_paper_profiles_minimum_when_larger_than_600() -> None:
    data = mutate(["benchmarks", 0, "profiles", "paper", "test_episodes"], 800)
    with pytest.raises(SpecError, match="at least 1000"):
        parse(data)
    quick = parse_spec(mutate(["benchmarks", 0, "profiles", "quick", "test_episodes"], 800), Path("protonet.toml"))
    assert quick.benchmarks[0].profile("quick").test_episodes == 800, "a quick budget needs 600, not the paper's count"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("key = \n")
    with pytest.raises(SpecError, match=r"broken.toml: not valid TOML"):
        load_spec_file(broken)


def test_unknown_paper_suggests_the_closest(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownNameError) as caught:
        get_spec("protonets")
    assert "did you mean 'protonet'" in str(caught.value)


def test_unknown_benchmark_and_profile_suggest() -> None:
    spec = get_spec("protonet")
    with pytest.raises(UnknownNameError, match="did you mean 'omniglot-5w1s'"):
        spec.benchmark("omniglot-5w1")
    with pytest.raises(UnknownNameError, match="quick"):
        spec.benchmark("omniglot-5w1s").profile("quik")


def test_extra_registry_folder_adds_specs_and_refuses_duplicates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = PROTONET.read_text().replace('key = "protonet"', 'key = "myprotonet"')
    (tmp_path / "myprotonet.toml").write_text(text)
    monkeypatch.setenv("METABENCH_REGISTRY", str(tmp_path))
    assert get_spec("myprotonet").benchmark("omniglot-5w1s").ways == 5
    (tmp_path / "protonet.toml").write_text(PROTONET.read_text())
    with pytest.raises(SpecError, match="already defined"):
        all_specs()


def test_model_table_is_checked_against_the_reproductions_settings() -> None:
    from metabench.reproduction import TaskInfo

    cls = implementation(get_spec("protonet"))
    with pytest.raises(SpecError, match=r"model.hiden: PrototypicalNetwork has no such setting"):
        cls.build({"hiden": 64}, TaskInfo(1, 28, 5, 1))
