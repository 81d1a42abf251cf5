"""The registry: every spec in ``registry/`` by paper key.

Specs ship inside the package (``metabench.registry``); ``$METABENCH_REGISTRY`` names an extra folder
whose specs are added (a researcher's own paper), so that a new paper is a TOML file plus a module.
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from importlib import resources
from pathlib import Path

from metabench.errors import SpecError, UnknownNameError, did_you_mean
from metabench.spec import Spec, load_spec_file


def spec_files() -> list[Path]:
    """Every spec file: the packaged registry, then ``$METABENCH_REGISTRY``."""
    packaged = Path(str(resources.files("metabench.registry")))
    folders = [packaged]
    extra = os.environ.get("METABENCH_REGISTRY")
    if extra:
        if not Path(extra).is_dir():
            _warn_missing(extra)
        folders.append(Path(extra))
    return [path for folder in folders for path in sorted(folder.glob("*.toml"))]


@cache
def _warn_missing(folder: str) -> None:
    """Say once that ``$METABENCH_REGISTRY`` names no folder: a typo there silently drops a user's specs."""
    sys.stderr.write(f"warning: METABENCH_REGISTRY={folder} is not a folder; only the packaged specs are loaded\n")


@cache
def _load(files: tuple[Path, ...]) -> dict[str, Spec]:
    specs: dict[str, Spec] = {}
    for path in files:
        spec = load_spec_file(path)
        if spec.key in specs:
            raise SpecError(f"{path}: key {spec.key!r} is already defined by {specs[spec.key].source}")
        specs[spec.key] = spec
    return specs


def all_specs() -> dict[str, Spec]:
    """Every spec, validated, by key."""
    return _load(tuple(spec_files()))


def get_spec(key: str) -> Spec:
    """One spec by key; an unknown key names the closest ones."""
    specs = all_specs()
    if key not in specs:
        raise UnknownNameError(f"unknown paper {key!r}", did_you_mean(key, list(specs)))
    return specs[key]


def implementation(spec: Spec) -> type:
    """The reproduction class a spec names (``module:Class``)."""
    from metabench.reproduction import Reproduction

    module_name, _, class_name = spec.implementation.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SpecError(f"{spec.source.name}.implementation: cannot import {module_name!r}: {error}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Reproduction)):
        raise SpecError(f"{spec.source.name}.implementation: {spec.implementation!r} is not a Reproduction subclass")
    return cls
