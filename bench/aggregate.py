"""Results aggregated over seeds: one row per benchmark and profile, judged on the mean over seeds.

A single run's interval covers the test episodes only; a paper that reports a mean over training runs
(Reptile's ± is a standard deviation over runs) measured something else, the spread of training. With
several seeds the honest comparison is the mean over seeds with a Student t-interval across seeds (the
seeds are the independent replicates; the episodes within a seed are not), judged by the same two-sided
rule as one run (:func:`metabench.stats.judge`): ``|m - r| <= h_r + h_m`` with ``h_m`` the seed
t-interval and ``h_r`` what the paper's ± means. Where that ± is a standard deviation over runs, the
seeds' own standard deviation is shown beside it (``spread``), since that is the number it describes.

:func:`by_seed` returns a frame with :mod:`metabench.compare`'s columns (so ``check`` and the tables
work on it unchanged) plus ``seeds`` (how many), ``seed_list``, ``seed_sd`` and ``seed_means``.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd
from rich.table import Table

from metabench import compare
from metabench.spec import Reported
from metabench.stats import Interval, judge

#: what identifies one benchmark and profile across seeds (an experiment's ``--set`` keeps it apart)
GROUP = ["paper", "benchmark", "component", "role", "profile", "experiment"]

# Two-sided 97.5% quantiles of Student's t for 1-30 degrees of freedom (no scipy dependency).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]  # fmt: skip


def t975(df: int) -> float:
    """The t quantile for a 95% two-sided interval; beyond 30 the Cornish-Fisher expansion (error < 1e-3)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def seed_interval(means: list[float]) -> Interval:
    """Mean over seeds with the half-width ``t(n-1) * sd / sqrt(n)``; one seed has no spread (``nan``)."""
    n = len(means)
    mean = sum(means) / n
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (n - 1)) if n > 1 else math.nan
    return Interval(mean, t975(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan, n, sd)


def wanted(frame: pd.DataFrame, by_seed: bool | None) -> bool:
    """``--by-seed`` when asked; by default when some benchmark and profile has several seeds."""
    if by_seed is not None:
        return by_seed
    if frame.empty:
        return False
    return bool((frame.groupby(GROUP, dropna=False)["seed"].nunique() > 1).any())


def _verdict(rows: pd.DataFrame, measured: Interval) -> tuple[str, float, float]:
    """The aggregate's verdict, difference and band; claims combine the seeds' verdicts."""
    first = rows.iloc[0]
    if first["claim"] or first["role"] == "competitor":
        verdicts = set(rows["verdict"])
        overall = "fails" if "fails" in verdicts else "holds" if verdicts == {"holds"} else "inconclusive"
        return overall, math.nan, math.nan
    if pd.isna(first["reported"]):
        return "no target", math.nan, math.nan
    decimals = None if pd.isna(first["reported_decimals"]) else int(first["reported_decimals"])
    reported = Reported(
        float(first["reported"]),
        0.0 if pd.isna(first["reported_pm"]) else float(first["reported_pm"]),
        first["pm_kind"] or "none",
        None,
        "",
        "",
        "HIGH",
        decimals=decimals,
    )
    judgement = judge(reported, measured)
    return judgement.verdict, judgement.difference, judgement.band


def by_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (paper, benchmark, component, profile, experiment): the mean over its seeds.

    A seed run twice (a merged folder holding both copies) counts once, its latest result. Every member's
    integrity problem stays on the aggregate row, so ``check`` still fails a forged or inconsistent file.
    """
    if frame.empty:
        return frame.assign(seeds=[], seed_list=[], seed_sd=[], seed_means=[])
    latest = frame.sort_values("created", kind="stable").drop_duplicates([*GROUP, "seed"], keep="last")
    rows = []
    for _, members in latest.groupby(GROUP, dropna=False, sort=False):
        members = members.sort_values("seed", kind="stable")
        means = [float(m) for m in members["mean"]]
        if len(members) == 1:  # one seed: its own row, judged on its episodes as always
            single = members.iloc[0].to_dict()
            seed = str(single["seed"])
            rows.append({**single, "seeds": 1, "seed_list": seed, "seed_sd": math.nan, "seed_means": f"{means[0]:.4g}"})
            continue
        measured = seed_interval(means)
        verdict, difference, band = _verdict(members, measured)
        row: dict[str, Any] = members.iloc[-1].to_dict()
        problems = [f"seed {s}: {p}" for s, p in zip(members["seed"], members["integrity"], strict=True) if p]
        row.update(
            mean=measured.mean,
            ci95=measured.half_width,
            difference=difference,
            band=band,
            verdict=verdict,
            seeds=measured.n,
            seed_list=",".join(str(s) for s in members["seed"]),
            seed_sd=measured.std,
            seed_means=";".join(f"{m:.4g}" for m in means),
            seed=",".join(str(s) for s in members["seed"]),
            path=";".join(members["path"]),
            train_seconds=float(members["train_seconds"].sum()),
            device=",".join(sorted(set(members["device"]))),
            dirty=bool(members["dirty"].any()),
            integrity="; ".join(problems),
            # a spec acknowledges shortfalls file by file: the seeds together are known only if each is
            known_shortfall=row["known_shortfall"] if members["known_shortfall"].astype(bool).all() else "",
        )
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def _spread(row: pd.Series) -> str:
    """The seeds' standard deviation, beside the paper's when its ± is one (std over runs)."""
    if pd.isna(row["seed_sd"]):
        return "—"
    if row["pm_kind"] == "std-runs":
        return f"sd {row['seed_sd']:.2f} (paper {row['reported_pm']:g})"
    return f"sd {row['seed_sd']:.2f}"


def display_frame(collapsed: pd.DataFrame, seed_means: bool = False) -> pd.DataFrame:
    """compare's human columns, the interval relabelled as across seeds, plus seed count and spread."""
    shown = compare.display_frame(collapsed)
    if collapsed.empty:
        return shown
    # What differs between seeds (device, figures) and the budget say nothing about the aggregate.
    shown = shown.drop(columns=[c for c in ("budget", "device", "figures") if c in shown.columns])
    shown = shown.rename(columns={"reproduced": "mean over seeds ± t95"})
    at = list(shown.columns).index("verdict")
    shown.insert(at, "seeds", collapsed["seeds"].astype(int).to_numpy())
    shown.insert(at + 1, "spread", [_spread(row) for _, row in collapsed.iterrows()])
    shown["mean over seeds ± t95"] = [
        f"{m:.2f} ± {c:.2f}" + (" (1 seed: 95% over episodes)" if n == 1 else "")
        for m, c, n in zip(collapsed["mean"], collapsed["ci95"], collapsed["seeds"], strict=True)
    ]
    if seed_means:
        shown["per seed"] = [
            ", ".join(f"{s}: {m}" for s, m in zip(str(a).split(","), str(b).split(";"), strict=True))
            for a, b in zip(collapsed["seed_list"], collapsed["seed_means"], strict=True)
        ]
    return shown


def rich_table(collapsed: pd.DataFrame, seed_means: bool = False) -> Table:
    table = Table(title="metabench: reported vs reproduced, over seeds")
    shown = display_frame(collapsed, seed_means)
    for column in shown.columns:
        table.add_column(column, justify="right" if column in ("difference", "seeds", "episodes") else "left")
    for row in shown.itertuples(index=False):
        cells = [str(v) for v in row]
        at = list(shown.columns).index("verdict")
        cells[at] = f"[{compare.verdict_style(cells[at])}]{cells[at]}[/]"
        table.add_row(*cells)
    if collapsed.empty:
        table.caption = "no results found"
    return table


def render(collapsed: pd.DataFrame, fmt: str, seed_means: bool = False) -> str:
    """As :func:`metabench.compare.render`, for the aggregate (csv and json carry every column)."""
    if fmt == "table":
        from rich.console import Console

        buffer = io.StringIO()
        Console(file=buffer, width=240, color_system=None, force_terminal=False).print(
            rich_table(collapsed, seed_means)
        )
        return buffer.getvalue()
    if fmt == "markdown":
        shown = display_frame(collapsed, seed_means)
        lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
        return "\n".join(lines) + "\n"
    if fmt == "csv":
        return str(collapsed.to_csv(index=False))
    return json.dumps(json.loads(collapsed.to_json(orient="records")), indent=1) + "\n"
