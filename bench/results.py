"""Run results: one JSON file per run, written atomically, with a schema version.

A result holds everything needed to trust or re-run a number: the spec and profile, every
hyperparameter used, the seed, the frozen test episodes' digest, per-episode scores, the summary and
verdict, the learning curve, timings, the machine, the commit and the command line.

Schema versions: 1 is a scalar result; 2 adds ``components``, present when the benchmark's metric is a
vector (``accuracy-by-instance``): one entry per component with its own per-episode scores, summary,
reported value, verdict and floor, while the top level summarises the whole (for by-instance accuracy:
accuracy over every step of the sequence) with the worst component's verdict. Version 3 adds, for a
claim benchmark, ``competitors`` (each competitor's per-episode scores and summary on the same frozen
episodes) and ``claim`` (the statement, the paired comparison with each competitor and the claim's
verdict, which is also the top-level verdict); and, optionally, ``also``: metrics a benchmark reports
beside its own from the same predictions (``{"mse": {"scores": [...], "summary": {...}}}``), with no
reported value or verdict. Versions 1 and 2 stay valid.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

from metabench.errors import ResultError
from metabench.metrics import is_vector
from metabench.spec import PlusMinusKind

#: 4: ``budget`` (training examples against the paper profile's) and ``overrides.set`` (``--set``)
SCHEMA_VERSION = 4
SUPPORTED_VERSIONS = (1, 2, 3, 4)
CHECKPOINT_FOLDER = ".checkpoints"

# key -> accepted JSON types; nested tables list their own required keys.
_REQUIRED: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "paper": (str,),
    "title": (str,),
    "benchmark": (str,),
    "profile": (str,),
    "spec_file": (str,),
    "spec_sha256": (str,),
    "protocol": (dict,),
    "hyperparameters": (dict,),
    "seed": (int,),
    "test_episodes": (dict,),
    "scores": (list,),
    "summary": (dict,),
    "reported": (dict, type(None)),
    "verdict": (dict,),
    "targets": (dict,),
    "curve": (list,),
    "timing": (dict,),
    "environment": (dict,),
    "git": (dict,),
    "command": (str,),
    "created": (str,),
}
_NESTED: dict[str, tuple[str, ...]] = {
    "protocol": (
        "dataset",
        "split",
        "image_size",
        "ways",
        "shots",
        "queries",
        "metric",
        "direction",
        "transductive",
        "test_part",
    ),
    "test_episodes": ("count", "seed", "digest"),
    "summary": ("mean", "ci95", "std", "n"),
    "verdict": ("verdict", "difference", "band", "rule"),
    "targets": ("chance", "floor", "min_above_chance"),
    "timing": (
        "train_seconds",
        "eval_seconds",
        "wall_seconds",
        "train_episodes_per_second",
        "eval_episodes_per_second",
        "train_steps",
    ),
    "environment": ("device", "torch", "python", "cpu"),
    "git": ("commit", "dirty"),
}
_COMPONENT: tuple[str, ...] = ("name", "instance", "scores", "summary", "reported", "verdict", "floor")
_CLAIM: tuple[str, ...] = ("statement", "against", "confidence", "source", "verdict", "rule", "comparisons")
_COMPARISON: tuple[str, ...] = ("mean_difference", "ci95", "p_value", "n", "verdict")


_NUMBER = "number"
_NONE = type(None)
#: the type of every value ``check`` and ``compare`` compute with, by dotted key (``*`` any entry):
#: a wrong type must be a one-line error naming the key, not a traceback three modules later
_LEAVES: dict[str, tuple[Any, ...]] = {
    "protocol.metric": (str,),
    "protocol.ways": (int,),
    "protocol.shots": (int,),
    "test_episodes.count": (int,),
    "test_episodes.seed": (int,),
    "test_episodes.digest": (str,),
    "targets.chance": (_NUMBER,),
    "targets.floor": (_NUMBER, list, _NONE),
    "targets.min_above_chance": (_NUMBER, _NONE),
    "timing.train_seconds": (_NUMBER,),
    "timing.train_steps": (int,),
    "environment.device": (str,),
    "git.commit": (str,),
    "git.dirty": (bool, _NONE),
    "git.patch": (str, _NONE),
}
_SUMMARY_LEAVES: dict[str, tuple[Any, ...]] = {"mean": (_NUMBER,), "ci95": (_NUMBER,), "std": (_NUMBER,), "n": (int,)}
_VERDICT_LEAVES: dict[str, tuple[Any, ...]] = {
    "verdict": (str,),
    "difference": (_NUMBER,),
    "band": (_NUMBER,),
    "rule": (str,),
}
_REPORTED_LEAVES: dict[str, tuple[Any, ...]] = {
    "value": (_NUMBER,),
    "plus_minus": (_NUMBER,),
    "plus_minus_kind": (str,),
    "decimals": (int, _NONE),
}
_COMPARISON_LEAVES: dict[str, tuple[Any, ...]] = {
    "mean_difference": (_NUMBER,),
    "ci95": (_NUMBER,),
    "p_value": (_NUMBER,),
    "n": (int,),
    "verdict": (str,),
}
#: a float64 holds integers this large; a bigger one in a number field is damage, not a score
_LARGEST = 2.0**1000


def _is(value: Any, kinds: tuple[Any, ...]) -> bool:
    for kind in kinds:
        if kind == _NUMBER:
            if isinstance(value, float) or (
                isinstance(value, int) and not isinstance(value, bool) and abs(value) < _LARGEST
            ):
                return True
        elif kind is bool:
            if isinstance(value, bool):
                return True
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) < _LARGEST:
                return True
        elif isinstance(value, kind):
            return True
    return False


def _kind_names(kinds: tuple[Any, ...]) -> str:
    return " or ".join("null" if k is _NONE else k if isinstance(k, str) else k.__name__ for k in kinds)


def _leaves(table: Any, leaves: dict[str, tuple[Any, ...]], where: str, source: str, optional: bool = False) -> None:
    """Check the typed values of one table; ``where`` names it in the error (``components[2].summary``)."""
    if not isinstance(table, dict):
        raise ResultError(f"{source}: {where!r} is not a table ({type(table).__name__})")
    for key, kinds in leaves.items():
        if key not in table:
            if optional or _NONE in kinds:
                continue
            raise ResultError(f"{source}: missing key {where}.{key!r}")
        if not _is(table[key], kinds):
            raise ResultError(
                f"{source}: {where}.{key} is {table[key]!r:.40}, expected {_kind_names(kinds)}",
                "delete it or re-run the command recorded in it",
            )


def _scores(values: Any, where: str, source: str) -> None:
    if not isinstance(values, list) or not all(_is(v, (_NUMBER,)) for v in values):
        raise ResultError(f"{source}: {where} must be numbers, one per test episode")


def _reported(value: Any, where: str, source: str) -> None:
    if value is None:
        return
    _leaves(value, _REPORTED_LEAVES, where, source)
    if value["plus_minus_kind"] not in get_args(PlusMinusKind):
        raise ResultError(f"{source}: {where}.plus_minus_kind is {value['plus_minus_kind']!r:.40}")
    if value.get("decimals") is not None and not 0 <= value["decimals"] <= 15:
        raise ResultError(f"{source}: {where}.decimals is {value['decimals']}, expected 0 to 15")


def _typed(data: dict[str, Any], source: str) -> None:
    """Every value check and compare compute with has the type they expect."""
    for dotted, kinds in _LEAVES.items():
        table, key = dotted.split(".")
        _leaves(data[table], {key: kinds}, table, source)
    if data["protocol"]["direction"] not in ("higher", "lower"):
        raise ResultError(f"{source}: protocol.direction is {data['protocol']['direction']!r:.40}")
    floor = data["targets"]["floor"]
    if isinstance(floor, list) and not all(_is(v, (_NUMBER,)) for v in floor):
        raise ResultError(f"{source}: targets.floor must be a number or a list of numbers")
    _scores(data["scores"], "scores", source)
    _leaves(data["summary"], _SUMMARY_LEAVES, "summary", source)
    _leaves(data["verdict"], _VERDICT_LEAVES, "verdict", source)
    _reported(data["reported"], "reported", source)
    if not isinstance(data.get("figures", []), list) or not all(isinstance(f, str) for f in data.get("figures", [])):
        raise ResultError(f"{source}: figures must be a list of file names")


def validate(data: Any, source: str = "result") -> dict[str, Any]:
    """Check a loaded result against the schema; errors name the file and the key."""
    if not isinstance(data, dict):
        raise ResultError(f"{source}: not a JSON object")
    version = data.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        raise ResultError(
            f"{source}: schema_version {version!r} is not one of {SUPPORTED_VERSIONS}",
            "re-run it with this version of metabench",
        )
    for key, kinds in _REQUIRED.items():
        if key not in data:
            raise ResultError(f"{source}: missing key {key!r}")
        if not isinstance(data[key], kinds) or (isinstance(data[key], bool) and bool not in kinds):
            raise ResultError(f"{source}: {key!r} has the wrong type ({type(data[key]).__name__})")
    for key, inner in _NESTED.items():
        missing = [k for k in inner if k not in data[key]]
        if missing:
            raise ResultError(f"{source}: missing key {key}.{missing[0]!r}")
    _typed(data, source)
    if len(data["scores"]) != data["test_episodes"]["count"]:
        raise ResultError(f"{source}: {len(data['scores'])} scores for {data['test_episodes']['count']} episodes")
    _validate_components(data, source)
    _validate_claim(data, source)
    _validate_also(data, source)
    _validate_budget(data, source)
    _validate_overrides(data, source)
    return data


def _validate_overrides(data: dict[str, Any], source: str) -> None:
    """``overrides`` (optional before schema 4) is a table, and its ``set`` (``--set``) a table of changes."""
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ResultError(f"{source}: 'overrides' has the wrong type ({type(overrides).__name__})")
    if not isinstance(overrides.get("set", {}), dict):
        raise ResultError(f"{source}: 'overrides.set' has the wrong type ({type(overrides['set']).__name__})")


def _validate_budget(data: dict[str, Any], source: str) -> None:
    """Schema 4 records the budget; older results get it computed from their hyperparameters on read."""
    budget = data.get("budget")
    if budget is None:
        if data["schema_version"] >= 4:
            raise ResultError(f"{source}: missing key 'budget'")
        return
    if not isinstance(budget, dict):
        raise ResultError(f"{source}: 'budget' has the wrong type ({type(budget).__name__})")
    for key in ("examples", "paper_examples"):
        value = budget.get(key)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < 0
            or (key == "paper_examples" and not value)
        ):
            raise ResultError(f"{source}: budget.{key} is {value!r}, expected a positive integer")
    share = budget.get("share")
    if (
        not isinstance(share, int | float)
        or isinstance(share, bool)
        or share != budget["examples"] / budget["paper_examples"]
    ):
        raise ResultError(f"{source}: budget.share is {share!r}, not examples / paper_examples")


def _validate_claim(data: dict[str, Any], source: str) -> None:
    claim, competitors = data.get("claim"), data.get("competitors")
    if claim is None and competitors is None:
        return
    if data["schema_version"] < 3 or not isinstance(claim, dict) or not isinstance(competitors, dict):
        raise ResultError(f"{source}: 'claim' and 'competitors' come together, and only in schema 3")
    missing = [k for k in _CLAIM if k not in claim]
    if missing:
        raise ResultError(f"{source}: missing key claim.{missing[0]!r}")
    _leaves(
        claim, {"statement": (str,), "verdict": (str,), "against": (list,), "comparisons": (dict,)}, "claim", source
    )
    if not claim["against"] or not all(isinstance(name, str) for name in claim["against"]):
        raise ResultError(f"{source}: claim.against must be a non-empty list of competitor names")
    for name in claim["against"]:
        entry = competitors.get(name)
        if not isinstance(entry, dict) or "scores" not in entry or "summary" not in entry:
            raise ResultError(f"{source}: missing key competitors.{name!r} (scores and summary)")
        _scores(entry["scores"], f"competitors.{name}.scores", source)
        _leaves(entry["summary"], _SUMMARY_LEAVES, f"competitors.{name}.summary", source)
        if len(entry["scores"]) != data["test_episodes"]["count"]:
            raise ResultError(f"{source}: competitors.{name} has {len(entry['scores'])} scores")
        comparison = claim["comparisons"].get(name)
        absent = [k for k in _COMPARISON if not isinstance(comparison, dict) or k not in comparison]
        if absent:
            raise ResultError(f"{source}: missing key claim.comparisons.{name}.{absent[0]!r}")
        _leaves(comparison, _COMPARISON_LEAVES, f"claim.comparisons.{name}", source)
    if data["verdict"]["verdict"] != claim["verdict"]:
        raise ResultError(
            f"{source}: verdict {data['verdict']['verdict']!r} differs from the claim's {claim['verdict']!r}"
        )


def _validate_also(data: dict[str, Any], source: str) -> None:
    also = data.get("also")
    if also is None:
        return
    if not isinstance(also, dict) or not also:
        raise ResultError(f"{source}: 'also' is a non-empty table of metric name to scores and summary")
    for name, part in also.items():
        if not isinstance(part, dict) or not isinstance(part.get("scores"), list) or "summary" not in part:
            raise ResultError(f"{source}: missing key also.{name}.'scores' or 'summary'")
        if len(part["scores"]) != data["test_episodes"]["count"]:
            raise ResultError(f"{source}: also.{name} has {len(part['scores'])} scores")
        _scores(part["scores"], f"also.{name}.scores", source)
        _leaves(part["summary"], _SUMMARY_LEAVES, f"also.{name}.summary", source)


def _validate_components(data: dict[str, Any], source: str) -> None:
    components = data.get("components")
    if components is None:
        if data["schema_version"] >= 2 and is_vector(data["protocol"]["metric"]):
            raise ResultError(f"{source}: missing key 'components' for metric {data['protocol']['metric']!r}")
        return
    if data["schema_version"] < 2 or not isinstance(components, list) or not components:
        raise ResultError(f"{source}: 'components' is a non-empty list, and only in schema 2")
    for index, component in enumerate(components):
        missing = [k for k in _COMPONENT if not isinstance(component, dict) or k not in component]
        if missing:
            raise ResultError(f"{source}: missing key components[{index}].{missing[0]!r}")
        where = f"components[{index}]"
        _leaves(component, {"name": (str,), "floor": (_NUMBER, _NONE)}, where, source)
        _scores(component["scores"], f"{where}.scores", source)
        if len(component["scores"]) != data["test_episodes"]["count"]:
            raise ResultError(f"{source}: components[{index}] has {len(component['scores'])} scores")
        _leaves(component["summary"], _SUMMARY_LEAVES, f"{where}.summary", source)
        _leaves(component["verdict"], _VERDICT_LEAVES, f"{where}.verdict", source)
        _reported(component["reported"], f"{where}.reported", source)


def write_atomic(data: dict[str, Any], path: Path) -> Path:
    """Validate, then write ``path`` whole or not at all, and never over an existing result
    (``FileExistsError``): a result is evidence, so two runs cannot leave one file."""
    from metabench.checkpoint import write_new

    validate(data, str(path))

    def dump(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=1, allow_nan=True)
            stream.write("\n")

    write_new(path, dump)
    return path


def read(path: Path) -> dict[str, Any]:
    """Load and validate one result file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ResultError(
            f"{path}: not UTF-8 text (byte {error.start}), so not a result file",
            "delete it or re-run the command recorded in it",
        ) from None
    except RecursionError:
        raise ResultError(f"{path}: nested too deeply to be a result file") from None
    except json.JSONDecodeError as error:
        raise ResultError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno})",
            "delete it or re-run the command recorded in it",
        ) from None
    except OSError as error:
        raise ResultError(f"{path}: cannot be read ({error.strerror})") from None
    return validate(data, str(path))


def find(paths: Iterable[Path]) -> list[Path]:
    """Result files under the given files and folders, skipping checkpoints and hidden files."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*.json"))
                if not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            raise ResultError(f"{path}: no such file or folder")
    return found


def result_path(output: Path, paper: str, benchmark: str, profile: str, seed: int, created: str) -> Path:
    """``OUTPUT/PAPER/BENCHMARK__PROFILE__seedN__TIMESTAMP.json``: runs never overwrite each other."""
    stamp = created.replace("-", "").replace(":", "")
    return Path(output) / paper / f"{benchmark}__{profile}__seed{seed}__{stamp}.json"
