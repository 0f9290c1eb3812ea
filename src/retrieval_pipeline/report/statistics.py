"""Comparing two models on the same held-out queries: a row per metric and group, with a paired randomization
test over the per-query scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.stats import permutation_test

from retrieval_pipeline.core.errors import DataError


@dataclass(frozen=True)
class Row:
    metric: str
    group: tuple
    baseline: float
    candidate: float
    p_value: float
    queries: int  # held-out queries scored by both models in this row

    @property
    def change(self) -> float:
        return self.candidate - self.baseline

    @property
    def relative(self) -> str:
        return f"{100 * self.change / self.baseline:+.1f}%" if self.baseline else "n/a"


def paired_p_value(baseline: np.ndarray, candidate: np.ndarray, permutations: int, seed: int) -> float:
    """Two-sided paired randomization test on the mean per-query difference (swap each query's pair); NaN when
    fewer than two queries leave nothing to resample."""
    if len(baseline) < 2:
        return float("nan")
    if np.allclose(baseline, candidate):
        return 1.0
    result = permutation_test((candidate, baseline), lambda x, y, axis: np.mean(x - y, axis=axis),
                              permutation_type="samples", vectorized=True, n_resamples=permutations,
                              alternative="two-sided", rng=np.random.default_rng(seed))
    return float(result.pvalue)


def group_columns(per_query: pl.DataFrame) -> list[str]:
    return [column for column in per_query.columns
            if column not in ("model", "query_id") and per_query[column].dtype not in (pl.Float32, pl.Float64)]


def in_every_setting(per_query: pl.DataFrame) -> pl.DataFrame:
    """The per-query table with each model that leaves a setting column empty in all its rows (BM25 has no dim or
    pool factor) repeated in every value that column takes among the other models' rows, so that it is compared,
    plotted and judged in each of them."""
    groups = group_columns(per_query)
    parts = []
    for (label,), rows in per_query.partition_by("model", as_dict=True, maintain_order=True).items():
        empty = [column for column in groups if rows[column].null_count() == rows.height]
        others = per_query.filter(pl.col("model") != label).select(empty).drop_nulls().unique(maintain_order=True)
        if empty and others.height:
            rows = rows.drop(empty).join(others, how="cross").select(per_query.columns)
        parts.append(rows)
    return pl.concat(parts) if parts else per_query


def matching(frame: pl.DataFrame, where: dict, origin: str) -> pl.DataFrame:
    """The rows whose columns hold the values `where` names (compared as strings, as params.yaml writes them)."""
    for column, value in where.items():
        if column not in frame.columns:
            raise DataError(f"{origin}: no column {column!r} to select {column} = {value!r}")
        frame = frame.filter(pl.col(column).cast(pl.String) == str(value))
    return frame


def compare(per_query: pl.DataFrame, baseline: str, candidate: str, metrics: list[str],
            permutations: int, seed: int, origin: str) -> tuple[list[Row], list[str]]:
    """One row per metric and group (every value of the non-metric columns), and the group columns."""
    groups = group_columns(per_query)
    for label in (baseline, candidate):
        if label not in set(per_query["model"]):
            raise DataError(f"{origin}: no rows for model {label!r}; models are {sorted(set(per_query['model']))}")
    missing = [metric for metric in metrics if metric not in per_query.columns]
    if missing:
        raise DataError(f"{origin}: no column(s) {', '.join(missing)}; expected per-query metric columns")
    parts = per_query.partition_by(groups, as_dict=True, maintain_order=True) if groups else {(): per_query}
    paired_by_key = {key: part.filter(pl.col("model") == baseline).join(
        part.filter(pl.col("model") == candidate), on="query_id", suffix="_candidate") for key, part in parts.items()}
    rows = []
    for metric in metrics:
        # a group only one of the two models is scored in (the hybrid at one pooling method) has no row
        for key, paired in ((key, paired) for key, paired in paired_by_key.items() if paired.height):
            before, after = paired[metric].to_numpy(), paired[f"{metric}_candidate"].to_numpy()
            rows.append(Row(metric, key, float(before.mean()), float(after.mean()),
                            paired_p_value(before, after, permutations, seed), len(before)))
    return rows, groups


def markdown_table(rows: list[Row], groups: list[str], baseline: str, candidate: str) -> str:
    header = ["Metric", *groups, "queries", baseline, candidate, "Abs. change", "% change", "p-value"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row.metric, *[str(value) for value in row.group], str(row.queries),
                                        f"{row.baseline:.4f}",
                                        f"{row.candidate:.4f}", f"{row.change:+.4f}", row.relative,
                                        "n/a" if np.isnan(row.p_value) else f"{row.p_value:.4f}"]) + " |")
    return "\n".join(lines)
