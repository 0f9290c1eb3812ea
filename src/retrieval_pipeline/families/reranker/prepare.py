"""The reranker's prepare stage: each dataset (multi-hop for stage 1, factual for stage 2) as a collection. LongRAG
rows become labelled sentences, each query judging every sentence of its own context (candidates "judged"); a BEIR
collection (a folder or a hub dataset) stays a retrieval collection, whose first stage searches the whole corpus."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from retrieval_pipeline.core.beir import read_beir_source
from retrieval_pipeline.core.collection import Collection, with_dev_split, write_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.reading import map_columns, read_source
from retrieval_pipeline.core.splits import add_split_column, split_counts
from retrieval_pipeline.families.reranker import DATASETS, Reranker
from retrieval_pipeline.families.reranker.longrag import sentence_rows
from retrieval_pipeline.families.reranker.synthetic import SYNTHETIC


def prepare(family: Reranker) -> None:
    data = family.params.data
    with atomic_directory(family.paths.prepared) as out:
        for dataset in DATASETS:
            folder = out / dataset
            folder.mkdir()
            if getattr(data, dataset).is_collection():
                prepare_beir(family, dataset, folder)
            else:
                prepare_contexts(family, dataset, folder)


def prepare_contexts(family: Reranker, dataset: str, folder: Path) -> None:
    """LongRAG-style rows (hub, local file or synthetic): every sentence of a query's context is a document judged
    for it (1: supporting fact or answer sentence, 0: not); queries split into train, dev and test."""
    data = family.params.data
    source = getattr(data, dataset)
    frame, origin = read_source(source, family.params.seed, SYNTHETIC[dataset], family.key(f"data.{dataset}"))
    frame = map_columns(frame, source.columns.model_dump(), origin, family.key(f"data.{dataset}.columns"))
    rows, dropped = sentence_rows(frame, dataset, origin, source.positives, data.min_sentence_length)
    if not rows:
        raise DataError(f"{origin}: no query has a positive sentence; expected answers or supporting titles that "
                        "occur in the contexts")
    sentences = pl.DataFrame(rows)
    queries = add_split_column(sentences.select("query_id").unique(maintain_order=True), data.test_size,
                               data.dev_size, family.params.seed, origin,
                               f"{family.key('data.test_size')} / {family.key('data.dev_size')}")
    sentences = sentences.join(queries, on="query_id", how="left", maintain_order="left")
    write_collection(Collection(
        corpus=sentences.select(document_id="sentence_id", text="sentence"),
        queries=sentences.select("query_id", text="query").unique("query_id", keep="first", maintain_order=True),
        qrels=sentences.select("query_id", pl.col("sentence_id").alias("document_id"),
                               pl.col("label").alias("relevance"), "split"),
        candidates="judged"), folder)
    print(f"prepare: {dataset}: {origin}: queries {split_counts(queries)}; {sentences.height} sentences, "
          f"{sentences['label'].sum()} positive" + (f"; {dropped} queries without a positive dropped" if dropped
                                                    else ""))


def prepare_beir(family: Reranker, dataset: str, folder: Path) -> None:
    """A BEIR collection (a folder or a hub dataset) as a dataset: the reranker reorders the first stage's top
    documents over its whole corpus (query -> document), with its train, dev (else a share of train) and test
    qrels."""
    source = getattr(family.params.data, dataset)
    collection, origin = read_beir_source(source, dev=True)
    collection = with_dev_split(collection, family.params.data.dev_size, family.params.seed)
    write_collection(collection, folder)
    counts = dict(collection.judged_queries()["split"].value_counts().iter_rows())
    print(f"prepare: {dataset}: {origin}: {collection.corpus.height} documents; queries "
          f"train {counts.get('train', 0)}, dev {counts.get('dev', 0)}, test {counts.get('test', 0)}")
