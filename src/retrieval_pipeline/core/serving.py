"""Serving cost, measured by a family's evaluate stage on a BEIR collection: the wall time of answering each test
query on its own (encoding it and searching the whole index; median and p95 on this machine) and the bytes the
index holds per document, read from the index itself.

Each family measures its base model and the model it recommends, in every setting its metrics have (a Matryoshka
dim, a ColBERT pool factor), and the comparison rows (BM25, the hybrid, compressed embeddings: core/comparisons.py),
on the test queries its metrics come from, and writes one row per model and setting: the `serving` table of
eval/<family>/ and the `serving` key of its metrics.json, which `dvc metrics diff` compares. The rows built on one
model's encoding share it: a query is encoded once and each row's latency is that encoding plus its own search.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

SERVING = "serving"  # the evaluation's table and metrics key
LATENCY = ("latency_ms_median", "latency_ms_p95")


@dataclass(frozen=True)
class Served:
    """One row of the serving table: a model (fine-tuned by this run, or one it is measured against) in one setting,
    the bytes its index stores, and its search, which answers a query from its text and the query's encoding."""

    model: str
    fine_tuned: bool
    index_bytes: int
    search: Callable[[str, object], object]
    setting: dict = field(default_factory=dict)


def serving_rows(encode: Callable[[str], object], served: Sequence[Served], queries: Sequence[str],
                 documents: int) -> list[dict]:
    """Each row's bytes per document and the median and 95th percentile of the milliseconds it takes to answer a
    query alone: encoding it, then searching. The rows share one encoder (a model at every dim or pool factor, and
    what is built on it), so each query is encoded once and its encoding time counted in every row, beside that
    row's own search; after one warm-up query (lazy initialisation and first allocations are not a query's cost)."""
    first = queries[0]
    warm = encode(first)
    for row in served:
        row.search(first, warm)
    encoding, searching = [], [[] for _ in served]
    for query in queries:
        start = time.perf_counter()
        encoded = encode(query)
        encoding.append(time.perf_counter() - start)
        for seconds, row in zip(searching, served):
            start = time.perf_counter()
            row.search(query, encoded)
            seconds.append(time.perf_counter() - start)
    rows = []
    for seconds, row in zip(searching, served):
        milliseconds = 1000 * (np.asarray(encoding) + np.asarray(seconds))
        rows.append({"model": row.model, "fine_tuned": row.fine_tuned, **row.setting,
                     "bytes_per_document": row.index_bytes / documents,
                     **dict(zip(LATENCY, (float(np.median(milliseconds)), float(np.percentile(milliseconds, 95)))))})
    return rows


def serving_row(model: str, fine_tuned: bool, answer: Callable[[str], object], queries: Sequence[str],
                index_bytes: int, documents: int, **setting) -> dict:
    """One row whose answer is all its own (BM25, a reranked list): its bytes per document and query latency."""
    return serving_rows(lambda query: None, [Served(model, fine_tuned, index_bytes,
                                                    lambda query, _: answer(query), setting)], queries, documents)[0]


def serving_metrics(rows: list[dict]) -> dict:
    """The rows as a metrics tree: model -> setting (`dim_64`, `method_kmeans_pool_factor_2`, or `all` where there
    is none) -> bytes per document and latency."""
    tree: dict = {}
    for row in rows:
        setting = "_".join(f"{name}_{value}" for name, value in row.items()  # BM25 has no dim: None
                           if name not in ("model", "fine_tuned", "bytes_per_document", *LATENCY)
                           and value is not None) or "all"
        tree.setdefault(row["model"], {})[setting] = {
            name: row[name] for name in ("bytes_per_document", *LATENCY)}
    return tree


def record_serving(metrics: dict, tables: dict, rows: list[dict]) -> None:
    """Add the rows to a family's evaluation (what write_evaluation writes): the `serving` table and metrics key."""
    # every row's keys: BM25's row has no dim, the rows after it do
    metrics[SERVING], tables[SERVING] = serving_metrics(rows), pl.DataFrame(rows, infer_schema_length=None)
