"""``--set KEY=VALUE``: a profile run with changes, validated as strictly as the spec it changes.

An ablation (Matching Networks' attention temperature, MANN's optimiser) is a real run of a profile
with a few settings changed, never an edited spec. Keys name a profile field (``lr``,
``train_episodes``, ``clip_grad_norm``) or, dotted, a key of its ``model`` table (``model.scale``).
Values are TOML (``10``, ``1e-4``, ``true``, ``"released"``, ``[256, 128]``); a bare word that is not
valid TOML is taken as a string, so ``--set optimizer=sgd`` works without shell quoting. The changed
profile is parsed again by the spec parser, so a wrong type or an impossible value is the same one-line
error a spec gets, and a model key the paper's reproduction does not define is refused by name.

An overridden result is an experiment, not the paper's profile: it records its changes, its checkpoint
and file names carry their digest (so it never resumes or replaces the plain profile's run), and
``compare`` and ``check`` label it and hold it to nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from typing import Any

from metabench.errors import MetabenchError, SpecError, did_you_mean
from metabench.spec import Profile, Reported, parse_profile_table

#: profile fields an experiment may change; the targets a profile is held to are not among them
SETTABLE = tuple(
    f.name
    for f in fields(Profile)
    if f.name not in {"name", "floor", "floor_note", "min_above_chance", "learning_part"}
)
_BARE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"model.scale=10"`` -> ``("model.scale", 10)``; the value is TOML, or a bare word taken as a string."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise MetabenchError(f"--set {text!r} is not KEY=VALUE", "e.g. --set lr=1e-4 or --set model.scale=10")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        if not _BARE_WORD.match(raw) or raw in {"true", "false", "inf", "nan"}:
            raise MetabenchError(
                f"--set {key}={raw}: the value is not TOML", "quote strings (--set key='\"text\"'), e.g. 10, 1e-4, true"
            ) from None
        value = raw
    return key, value


def parse_assignments(texts: Iterable[str]) -> dict[str, Any]:
    """Every ``--set`` in order; a key given twice is an error rather than a silent last-one-wins."""
    settings: dict[str, Any] = {}
    for text in texts:
        key, value = parse_assignment(text)
        if key in settings:
            raise MetabenchError(f"--set {key} is given twice", "keep one value per key")
        settings[key] = value
    return settings


def apply(
    profile: Profile, settings: Mapping[str, Any], reported: Reported | None, model_keys: Iterable[str]
) -> Profile:
    """``profile`` with ``settings`` applied and the whole re-validated; ``model_keys`` are the settings
    the paper's reproduction defines (its ``Hyperparameters`` fields)."""
    if not settings:
        return profile
    known_model = set(model_keys)
    table: dict[str, Any] = {k: v for k, v in profile.hyperparameters().items() if k in SETTABLE and v is not None}
    table["model"] = dict(profile.model)
    for key, value in settings.items():
        head, dot, rest = key.partition(".")
        if head == "model" and dot:
            if rest not in known_model:
                raise SpecError(f"--set {key}: no such model setting", did_you_mean(rest, sorted(known_model)))
            table["model"][rest] = value
        elif dot or head not in SETTABLE:
            hint = did_you_mean(key, [*SETTABLE, *(f"model.{k}" for k in sorted(known_model))])
            raise SpecError(f"--set {key}: not a setting of a profile", hint)
        else:
            table[head] = value
    changed = parse_profile_table(profile.name, table, f"--set (profile {profile.name})", reported, targets=False)
    return replace(
        changed,
        floor=profile.floor,
        floor_note=profile.floor_note,
        min_above_chance=profile.min_above_chance,
        learning_part=profile.learning_part,
    )


def digest(settings: Mapping[str, Any]) -> str:
    """Eight hex digits naming a set of changes, for checkpoint and result names."""
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode()).hexdigest()[:8]


def label(settings: Mapping[str, Any]) -> str:
    """``model.scale=10, lr=0.0001``: how compare shows an experiment's changes."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(settings.items()))
