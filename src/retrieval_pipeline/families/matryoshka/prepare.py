"""Matryoshka's prepare stage: question/chunk pairs (synthetic, hub or a local file) or a BEIR collection, as one
collection with train, dev and test queries over every chunk."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.beir import read_beir_source
from retrieval_pipeline.core.collection import Collection, for_training, write_collection
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.reading import (
    map_columns,
    read_source,
    require_consistent,
    require_evaluable,
    require_ids,
    require_text,
    require_unique,
)
from retrieval_pipeline.core.splits import add_split_column
from retrieval_pipeline.families.matryoshka import Matryoshka
from retrieval_pipeline.families.matryoshka.synthetic import synthetic_rows


def prepare(family: Matryoshka) -> None:
    data = family.params.data
    duplicates = 0
    if data.is_collection():
        collection, origin = read_beir_source(data, dev=True)
        collection = for_training(collection, data.dev_size, family.params.seed, data.describe())
    else:
        collection, origin, duplicates = pair_collection(family)
    with atomic_directory(family.paths.prepared) as out:
        write_collection(collection, out)
    dropped = f"; {duplicates} exact duplicate rows dropped" if duplicates else ""
    print(f"prepare: {origin}: {collection.summary()}{dropped}")


def pair_collection(family: Matryoshka) -> tuple[Collection, str, int]:
    """Question/chunk rows, split 90/10 (and a dev share of the training side) by row or by question
    (`data.split_by`); the corpus is every chunk, with the number of source rows that hold it (`copies`: the
    recipe's evaluation corpus holds a chunk once per row). Exact duplicate rows are dropped (and counted)."""
    data = family.params.data
    frame, origin = read_source(data, family.params.seed, synthetic_rows, family.key("data"))
    columns = data.columns.model_dump(exclude_none=True)
    frame = map_columns(frame, columns, origin, family.key("data.columns"))
    require_ids(frame, {name: columns[name] for name in ("chunk_id", "query_id") if name in columns}, origin)
    frame = require_text(frame, frame.columns, origin, columns)
    copies = frame.group_by("chunk_id").agg(copies=pl.len().cast(pl.Int64))
    rows = frame.height
    frame = frame.unique(["anchor", "positive", "chunk_id"], keep="first", maintain_order=True)
    duplicates = rows - frame.height
    if "query_id" not in frame.columns:
        frame = frame.with_row_index("row").with_columns(
            query_id=pl.format("q{}", pl.col("row").cast(pl.String).str.zfill(7))).drop("row")
    require_unique(frame, "query_id", origin)
    require_consistent(frame, "chunk_id", "positive", origin)
    unit = "query_id" if data.split_by == "rows" else "anchor"
    sizes = f"{family.key('data.test_size')} / {family.key('data.dev_size')}"
    split = add_split_column(frame.select(unit).unique(maintain_order=True), data.test_size, data.dev_size,
                             family.params.seed, origin, sizes)
    frame = frame.join(split, on=unit, how="left", maintain_order="left")
    corpus = frame.group_by("chunk_id").agg(text=pl.col("positive").first()).join(copies, on="chunk_id").sort(
        "chunk_id")
    require_evaluable(frame.filter(pl.col("split") == "test").height, corpus.height, origin)
    collection = Collection(
        corpus=corpus.rename({"chunk_id": "document_id"}),
        queries=frame.select("query_id", pl.col("anchor").alias("text")),
        qrels=frame.select("query_id", pl.col("chunk_id").alias("document_id"), pl.lit(1).alias("relevance"),
                           "split"))
    return collection, origin, duplicates
