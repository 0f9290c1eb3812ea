"""Serving cost, measured by a family's evaluate stage on a BEIR collection: the wall time of answering each test
query on its own (encoding it and searching the whole index; median and p95 on this machine) and the bytes the
index holds per document, read from the index itself.

Each family measures its base model and the model it recommends, in every setting its metrics have (a Matryoshka
dim, a ColBERT pool factor), on the test queries its metrics come from, and writes one row per model and setting:
the `serving` table of eval/<family>/ and the `serving` key of its metrics.json, which `dvc metrics diff` compares.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

SERVING = "serving"  # the evaluation's table and metrics key
LATENCY = ("latency_ms_median", "latency_ms_p95")


def query_latency(answer: Callable[[str], object], queries: Sequence[str]) -> dict[str, float]:
    """Median and 95th percentile of the milliseconds `answer` takes per query, one query at a time, after one
    warm-up call (lazy initialisation and first allocations are not a query's cost)."""
    answer(queries[0])
    seconds = []
    for query in queries:
        start = time.perf_counter()
        answer(query)
        seconds.append(time.perf_counter() - start)
    milliseconds = 1000 * np.asarray(seconds)
    return dict(zip(LATENCY, (float(np.median(milliseconds)), float(np.percentile(milliseconds, 95)))))


def serving_row(model: str, fine_tuned: bool, answer: Callable[[str], object], queries: Sequence[str],
                index_bytes: int, documents: int, **setting) -> dict:
    """One model (fine-tuned by this run, or the base it is measured against) in one setting: its index's bytes per
    document and its query latency."""
    return {"model": model, "fine_tuned": fine_tuned, **setting, "bytes_per_document": index_bytes / documents,
            **query_latency(answer, queries)}


def serving_metrics(rows: list[dict]) -> dict:
    """The rows as a metrics tree: model -> setting (`dim_64`, `method_kmeans_pool_factor_2`, or `all` where there
    is none) -> bytes per document and latency."""
    tree: dict = {}
    for row in rows:
        setting = "_".join(f"{name}_{value}" for name, value in row.items()
                           if name not in ("model", "fine_tuned", "bytes_per_document", *LATENCY)) or "all"
        tree.setdefault(row["model"], {})[setting] = {
            name: row[name] for name in ("bytes_per_document", *LATENCY)}
    return tree


def record_serving(metrics: dict, tables: dict, rows: list[dict]) -> None:
    """Add the rows to a family's evaluation (what write_evaluation writes): the `serving` table and metrics key."""
    metrics[SERVING], tables[SERVING] = serving_metrics(rows), pl.DataFrame(rows)
