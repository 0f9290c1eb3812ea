"""Scoring a Matryoshka model on the test queries against the whole corpus at every truncated dim: the baseline
stage (the base model) and the train stage (the fine-tuned one, for its card and the evaluate stage)."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.beir import load_collection
from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.core.metrics import DEFAULT_CUTOFFS, evaluate_run
from retrieval_pipeline.core.retrieval import search, truncate_and_normalise
from retrieval_pipeline.families.matryoshka import BASE, Matryoshka
from retrieval_pipeline.families.matryoshka.model import load_model

# The recipe's cutoffs, and 100: Recall@100 is what every family reports beside NDCG@10 (the report's
# cross-recipe section compares them on one collection).
CUTOFFS = (*DEFAULT_CUTOFFS, 100)


def rank_at_dims(model, queries: pl.DataFrame, corpus: pl.DataFrame, dims: list[int], batch_size: int,
                 top_k: int) -> dict[int, tuple[dict[str, list[str]], dict[str, list[float]]]]:
    """Encode once at full size, then rank the corpus for each truncated dimension."""
    documents = model.encode(corpus["text"].to_list(), batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=True)
    questions = model.encode(queries["text"].to_list(), batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=True)
    document_ids = corpus["document_id"].to_list()
    ranked = {}
    for dim in dims:
        scores, indices = search(truncate_and_normalise(questions, dim), truncate_and_normalise(documents, dim), top_k)
        run = {query: [document_ids[i] for i in row] for query, row in zip(queries["query_id"], indices)}
        run_scores = {query: row.tolist() for query, row in zip(queries["query_id"], scores)}
        ranked[dim] = (run, run_scores)
    return ranked


def score(family: Matryoshka, model, label: str) -> Scores:
    """One model on the test split against the whole corpus: metrics at every dim (and the query count), its
    ranked lists and per-query metrics."""
    evaluate = family.params.evaluate
    collection = load_collection(family.paths.prepared)
    queries, qrels = collection.split("test")
    metrics: dict = {"queries": queries.height}
    run_rows, query_rows = [], []
    for dim, (run, scores) in rank_at_dims(model, queries, collection.corpus, family.params.model.dims,
                                           evaluate.batch_size, evaluate.top_k).items():
        means, per_query = evaluate_run(run, qrels, cutoffs=CUTOFFS)
        metrics[f"dim_{dim}"] = {**means, "bytes_per_vector": dim * 4}
        for query, documents in run.items():
            run_rows += [(label, dim, query, document, rank + 1, score)
                         for rank, (document, score) in enumerate(zip(documents, scores[query]))]
        query_rows += [{"model": label, "dim": dim, "query_id": query, **values}
                       for query, values in per_query.items()]
    runs = pl.DataFrame(run_rows, schema=["model", "dim", "query_id", "document_id", "rank", "score"], orient="row")
    return Scores(metrics, {"run": runs, "per_query": pl.DataFrame(query_rows)})


def baseline(family: Matryoshka) -> dict[str, Scores]:
    return {BASE: score(family, load_model(family, family.params.model.base, "the base model"), BASE)}
