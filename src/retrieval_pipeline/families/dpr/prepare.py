"""DPR's prepare stage: claim/evidence pairs (synthetic, hub or a local file) or a BEIR collection, as one collection
with train and test claims over every evidence passage."""

from __future__ import annotations

import hashlib

import polars as pl

from retrieval_pipeline.core.beir import read_beir_source
from retrieval_pipeline.core.collection import Collection, for_training, write_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.reading import map_columns, read_source, require_evaluable, require_text
from retrieval_pipeline.core.splits import add_split_column, split_counts
from retrieval_pipeline.families.dpr import Dpr
from retrieval_pipeline.families.dpr.synthetic import synthetic_rows


def passage_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def prepare(family: Dpr) -> None:
    data = family.params.data
    if data.is_collection():
        collection, origin = read_beir_source(data, dev=False)
        collection = for_training(collection, 0.0, family.params.seed, data.describe())
        print(f"prepare: {origin}: {collection.summary()}")
    else:
        collection = pair_collection(family)
    with atomic_directory(family.paths.prepared) as out:
        write_collection(collection, out)


def pair_collection(family: Dpr) -> Collection:
    """Claim/evidence rows with a kept label as one query per claim, every passage a row pairs it with relevant to
    it, split by claim; the corpus is every evidence passage, identified by a hash of its text."""
    data = family.params.data
    frame, origin = read_source(data, family.params.seed, synthetic_rows, family.key("data"))
    columns = data.columns.model_dump(exclude_none=True)
    frame = map_columns(frame, columns, origin, family.key("data.columns"))
    if data.columns.label:
        labels = frame["label"].cast(pl.Int64, strict=False)
        if labels.null_count():
            row = frame.with_row_index("row").filter(labels.is_null())["row"][0] + 1
            raise DataError(f"{origin}: row {row}: column '{data.columns.label}' is not an integer label")
        frame = frame.with_columns(label=labels).filter(pl.col("label").is_in(data.keep_labels)).drop("label")
        if frame.is_empty():
            found = ", ".join(str(label) for label in sorted(labels.unique()))
            raise DataError(f"{origin}: no row has a label in {family.key('data.keep_labels')} ({data.keep_labels}); "
                            f"the labels are {found}")
    frame = require_text(frame, ["query", "passage"], origin, columns)
    rows = frame.height
    frame = frame.unique(["query", "passage"], keep="first", maintain_order=True)
    duplicates = rows - frame.height
    frame = frame.with_columns(passage_id=pl.col("passage").map_elements(passage_id, return_dtype=pl.String))
    # One query per claim: nli_fever pairs a claim with several evidence passages in several rows, and every one
    # of them is relevant to it (as a row of its own, a claim's other passages would count as misses).
    claims = frame.select("query").unique(maintain_order=True).with_row_index("claim").with_columns(
        query_id=pl.format("c{}", pl.col("claim").cast(pl.String).str.zfill(7))).drop("claim")
    claims = add_split_column(claims, data.test_size, 0.0, family.params.seed, origin, family.key("data.test_size"))
    frame = frame.join(claims, on="query", how="left", maintain_order="left")
    corpus = frame.group_by("passage_id").agg(text=pl.col("passage").first()).sort("passage_id")
    require_evaluable(claims.filter(pl.col("split") == "test").height, corpus.height, origin)
    print(f"prepare: {origin}: {frame.height} claim/evidence pairs, {claims.height} claims, {corpus.height} "
          f"passages -> claims {split_counts(claims)}"
          + (f"; {duplicates} exact duplicate rows dropped" if duplicates else ""))
    return Collection(corpus=corpus.rename({"passage_id": "document_id"}),
                      queries=claims.select("query_id", pl.col("query").alias("text")),
                      qrels=frame.select("query_id", pl.col("passage_id").alias("document_id"),
                                         pl.lit(1).alias("relevance"), "split"))
