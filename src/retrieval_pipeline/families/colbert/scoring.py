"""Scoring a ColBERT model on the test split and each NanoBEIR collection at every pool factor, with each pooling
method of `evaluate.methods` applied to the stored document vectors (NanoBEIR's documents cut to each of
`evaluate.nanobeir_document_lengths`): the baseline stage (the base model) and the train stage (each fine-tuned
variant, for its card and the evaluate stage)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import torch

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.evaluation import evaluate_run, query_rows
from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.families.colbert import BASE, NANOBEIR, Colbert
from retrieval_pipeline.families.colbert.model import base_colbert
from retrieval_pipeline.families.colbert.pooling import pool_tokens
from retrieval_pipeline.families.colbert.search import maxsim_search, plaid_search

TEST = "test"  # the collection's own test split, first among the evaluation sets


def test_set(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, int]]]:
    """A prepared collection's test queries, its whole corpus and the test qrels."""
    collection = load_collection(folder)
    queries, qrels = collection.split(TEST)
    return queries, collection.corpus, qrels


def evaluation_sets(family: Colbert) -> dict[str, tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, int]]]]:
    """The test split, then each NanoBEIR collection prepared beside it, in the recipe's order."""
    nanobeir = family.paths.prepared / NANOBEIR
    names = json.loads((nanobeir / "order.json").read_text(encoding="utf-8")) if nanobeir.is_dir() else []
    return {TEST: test_set(family.paths.prepared), **{name: test_set(nanobeir / name) for name in names}}


def pool(family: Colbert, token_vectors: list[torch.Tensor], method: str, pool_factor: int) -> list[torch.Tensor]:
    return [pool_tokens(vectors, method, pool_factor, family.params.model.pooling, family.params.seed)
            for vectors in token_vectors]


def search(family: Colbert, queries: list[torch.Tensor], documents: list[torch.Tensor]) -> np.ndarray:
    """Each query's top_k document positions: exact MaxSim up to evaluate.index.above_documents documents, a
    PLAID index above (padded with -1 where it returns fewer)."""
    evaluate = family.params.evaluate
    if len(documents) <= evaluate.index.above_documents:
        return maxsim_search(queries, documents, evaluate.top_k)
    return plaid_search(queries, documents, evaluate.top_k, evaluate.index, family.paths.scratch("index"),
                        family.params.seed)


@contextlib.contextmanager
def documents_cut_to(model, length: int | None) -> Iterator[None]:
    """The model encoding documents cut to `length` tokens (None: its own document_length) within the block."""
    own = model.document_length
    model.document_length = length or own
    try:
        yield
    finally:
        model.document_length = own


def score_collection(family: Colbert, model, label: str, queries: pl.DataFrame, corpus: pl.DataFrame,
                     qrels: dict[str, dict[str, int]], dataset: str,
                     document_length: int | None = None) -> tuple[dict[str, dict], list[dict]]:
    """Every pooling method and pool factor on one collection, its documents cut to `document_length` tokens (the
    model's own by default)."""
    evaluate = family.params.evaluate
    document_ids = corpus["document_id"].to_list()
    query_vectors = [torch.as_tensor(v) for v in model.encode(
        queries["text"].to_list(), is_query=True, batch_size=evaluate.batch_size, show_progress_bar=True)]
    with documents_cut_to(model, document_length):
        token_vectors = [torch.as_tensor(v) for v in model.encode(
            corpus["text"].to_list(), is_query=False, batch_size=evaluate.batch_size, show_progress_bar=True)]
        length = model.document_length
    metrics: dict[str, dict] = {}
    rows = []
    for method in evaluate.methods:
        for pool_factor in evaluate.pool_factors:
            pooled = pool(family, token_vectors, method, pool_factor)
            top = search(family, query_vectors, pooled)
            run = {query: [document_ids[i] for i in row if i >= 0] for query, row in zip(queries["query_id"], top)}
            means, per_query = evaluate_run(run, qrels, cutoffs=(10, 100))
            vectors = [len(document) for document in pooled]
            metrics.setdefault(method, {})[f"pf_{pool_factor}"] = {
                "ndcg@10": means["ndcg@10"], "mrr@10": means["mrr@10"], "recall@100": means["recall@100"],
                "vectors_per_document": float(np.mean(vectors)), "stored_vectors": int(np.sum(vectors))}
            rows += query_rows(label, per_query, dataset=dataset, method=method, pool_factor=pool_factor,
                               document_length=length)
    return metrics, rows


def score(family: Colbert, model, label: str) -> Scores:
    """One model on the test split and on each NanoBEIR collection: metrics per pooling method and pool factor
    (`test`; `nanobeir`, per collection and document length `length_<n>`), the test query count, and per-query
    rows."""
    metrics: dict = {"nanobeir": {}}
    every_row: list[dict] = []
    for name, collection in evaluation_sets(family).items():
        if name == TEST:
            metrics["test"], rows = score_collection(family, model, label, *collection, dataset=name)
            metrics["queries"] = collection[0].height
            every_row += rows
            continue
        for length in family.params.evaluate.nanobeir_document_lengths:
            by_method, rows = score_collection(family, model, label, *collection, dataset=name,
                                               document_length=length)
            metrics["nanobeir"].setdefault(name, {})[f"length_{length}"] = by_method
            every_row += rows
    return Scores(metrics, {"per_query": pl.DataFrame(every_row)})


def baseline(family: Colbert) -> dict[str, Scores]:
    return {BASE: score(family, base_colbert(family), BASE)}
