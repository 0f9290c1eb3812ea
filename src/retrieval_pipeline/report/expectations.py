"""Judging what a profile must show (params.yaml's `report.families.<family>.expect`): a model beating another,
a drop bounded across a column, or a number a seed publishes, set beside this run's."""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.report.params import Better, Drop, Expectation, NotComparable, Published
from retrieval_pipeline.report.statistics import compare, group_columns, matching

MET = {True: "yes", False: "**no**", None: "not judged"}


@dataclass(frozen=True)
class Verdict:
    expectation: str
    met: bool | None  # None: not judged (a published number this run cannot be compared with)
    detail: str


def evaluation_value(paths: FamilyPaths, path: str, metric: str) -> float:
    """The number at `path`.`metric` of the family's evaluation (eval/<family>/metrics.json)."""
    node = json.loads(paths.metrics.read_text(encoding="utf-8")) if paths.metrics.is_file() else {}
    for part in [*path.split("."), metric]:
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"{paths.metrics}: no {path}.{metric}; expected the family's evaluation to hold it")
        node = node[part]
    return float(node)


def query_mean(per_query: pl.DataFrame, model: str, metric: str, where: dict, origin: str) -> tuple[float, int]:
    rows = matching(per_query.filter(pl.col("model") == model), where, origin)
    if rows.is_empty() or metric not in rows.columns:
        raise DataError(f"{origin}: no {metric} rows for {model!r} where {where}")
    return float(rows[metric].mean()), rows.height


def judge_published(per_query: pl.DataFrame, expectation: Published, paths: FamilyPaths, origin: str) -> Verdict:
    """This run's number beside the seed's, computed the seed's way: a held-out metric's mean over the matching
    queries, a number of the family's evaluation, or the last value a training run logged; and, with `beside`,
    the project's own way of computing it, shown."""
    metric = expectation.metric
    if expectation.summary is not None:
        summary = paths.published_training(expectation.summary)
        logged = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
        if metric not in logged:
            raise DataError(f"{summary}: no {metric!r}; expected the training run's logged values")
        value, where = float(logged[metric]), f"last logged in {expectation.summary}"
    elif expectation.evaluation is not None:
        value, where = evaluation_value(paths, expectation.evaluation, metric), expectation.evaluation
    else:
        value, queries = query_mean(per_query, expectation.model, metric, expectation.where, origin)
        where = f"{queries} queries"
    detail = f"seed {expectation.value:g}, this run {value:.4f} ({value - expectation.value:+.4f}; {where})"
    if isinstance(expectation.beside, str):
        detail += (f"; the project's way ({expectation.beside}): "
                   f"{evaluation_value(paths, expectation.beside, metric):.4f}")
    elif expectation.beside:
        own, _ = query_mean(per_query, expectation.model, metric, {**expectation.where, **expectation.beside}, origin)
        changed = ", ".join(f"{column} {value}" for column, value in expectation.beside.items())
        detail += f"; the project's way ({changed}): {own:.4f}"
    return Verdict(expectation.describe(), abs(value - expectation.value) <= expectation.tolerance, detail)


def judge(per_query: pl.DataFrame, expectation: Expectation, permutations: int, seed: int, origin: str,
          paths: FamilyPaths) -> Verdict:
    """Whether the per-query scores show what `expectation` says, with the numbers that decide it."""
    if isinstance(expectation, NotComparable):
        return Verdict(expectation.describe(), None, f"not judged: {expectation.why}")
    if isinstance(expectation, Published):
        return judge_published(per_query, expectation, paths, origin)
    per_query = matching(per_query, expectation.where, origin)
    if isinstance(expectation, Better):
        return judge_better(per_query, expectation, permutations, seed, origin)
    return judge_drop(per_query, expectation, origin)


def judge_better(per_query: pl.DataFrame, expectation: Better, permutations: int, seed: int, origin: str) -> Verdict:
    rows, groups = compare(per_query, expectation.baseline, expectation.candidate, [expectation.metric],
                           permutations, seed, origin)
    failing = [row for row in rows if not (row.change > 0 and row.p_value < expectation.alpha)]
    worst = max(rows, key=lambda row: (row.p_value, -row.change))
    detail = (f"{len(rows) - len(failing)} of {len(rows)} rows; smallest gain {min(r.change for r in rows):+.4f}, "
              f"largest p {max(r.p_value for r in rows):.4f}")
    if failing:
        where = ", ".join(f"{g} {v}" for g, v in zip(groups, worst.group))
        detail += f"; e.g. {where}: {worst.baseline:.4f} -> {worst.candidate:.4f}, p {worst.p_value:.4f}"
    return Verdict(expectation.describe(), not failing, detail)


def group_drops(per_query: pl.DataFrame, label: str, expectation: Drop, origin: str) -> dict[str, float]:
    """`label`'s drop in mean metric from `start` to `end` of the expectation's column, per group of the other
    columns (named as the report shows them, "all" when there are none)."""
    model = per_query.filter(pl.col("model") == label)
    if model.is_empty():
        raise DataError(f"{origin}: no rows for model {label!r}")
    others = [column for column in group_columns(model) if column != expectation.column]
    parts = model.partition_by(others, as_dict=True, maintain_order=True) if others else {(): model}
    drops = {}
    for key, part in parts.items():
        value = {str(group): part.filter(pl.col(expectation.column).cast(pl.String) == str(group))[expectation.metric]
                 for group in (expectation.start, expectation.end)}
        if any(series.is_empty() for series in value.values()):
            raise DataError(f"{origin}: no rows for {expectation.column} {expectation.start} and {expectation.end}")
        name = ", ".join(f"{column} {v}" for column, v in zip(others, key)) or "all"
        drops[name] = float(value[str(expectation.start)].mean() - value[str(expectation.end)].mean())
    return drops


def judge_drop(per_query: pl.DataFrame, expectation: Drop, origin: str) -> Verdict:
    drops = group_drops(per_query, expectation.model, expectation, origin)
    compared = group_drops(per_query, expectation.fraction_of, expectation, origin) \
        if expectation.fraction_of is not None else {}
    bad = []
    for group, drop in drops.items():
        within = drop <= expectation.at_most if expectation.at_most is not None else drop >= expectation.at_least
        if compared:
            if group not in compared:
                raise DataError(f"{origin}: no rows for model {expectation.fraction_of!r} in {group}")
            within = within and drop <= expectation.fraction * compared[group]
        if not within:
            bad.append(group)
    detail = "drop " + ", ".join(f"{drop:+.4f}" for drop in drops.values())
    if compared:
        detail += f" ({expectation.fraction_of}: " + ", ".join(f"{drop:+.4f}" for drop in compared.values()) + ")"
    return Verdict(expectation.describe(), not bad, detail + (f"; outside the bound: {'; '.join(bad)}" if bad else ""))
