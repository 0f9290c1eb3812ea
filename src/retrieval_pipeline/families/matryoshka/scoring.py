"""Scoring a Matryoshka model on the test queries against the whole corpus at every truncated dim, over each
evaluation corpus (`evaluate.corpus`): the baseline stage (the base model) and the train stage (the fine-tuned one,
for its card and the evaluate stage).

The recipe's evaluation corpus is every row of its dataset, so a chunk is in it once per question that names it and
a question's relevant documents are every copy of its chunk (hence its Recall@1 far below its Accuracy@1). Copies
are the same text and score alike, so that ranking is the chunk ranking with each chunk repeated `copies` times:
the `rows` corpus is scored that way, exactly, without encoding a chunk twice; `chunks` holds each chunk once."""

from __future__ import annotations

import polars as pl

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.evaluation import DEFAULT_CUTOFFS, evaluate_run, query_rows
from retrieval_pipeline.core.family import Scores
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


ROWS, CHUNKS = "rows", "chunks"


def corpora(family: Matryoshka, corpus: pl.DataFrame) -> list[str]:
    """The evaluation corpora `evaluate.corpus` names, or chunks alone where the prepared corpus does not say how
    many source rows hold each document (a BEIR collection: one row per document)."""
    return family.params.evaluate.corpus if "copies" in corpus.columns else [CHUNKS]


def as_rows(run: dict[str, list], qrels: dict[str, dict], copies: dict, top_k: int) -> tuple[dict, dict]:
    """A chunk ranking and its qrels over the recipe's corpus of rows: each chunk's copies in its place, each copy
    of a relevant chunk relevant."""
    expand = lambda document: [f"{document}#{copy}" for copy in range(copies[document])]  # noqa: E731
    ranked = {query: [row for document in documents for row in expand(document)][:top_k]
              for query, documents in run.items()}
    judged = {query: {row: grade for document, grade in relevant.items() for row in expand(document)}
              for query, relevant in qrels.items()}
    return ranked, judged


def evaluate_corpus(run: dict[str, list], qrels: dict[str, dict], corpus: pl.DataFrame, view: str, top_k: int,
                    **options) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Metrics of a chunk ranking over the `view` corpus (core/evaluation.py's evaluate_run)."""
    if view == ROWS:
        run, qrels = as_rows(run, qrels, dict(corpus.select("document_id", "copies").iter_rows()), top_k)
    return evaluate_run(run, qrels, **options)


def score(family: Matryoshka, model, label: str) -> Scores:
    """One model on the test split against the whole corpus: metrics at every dim under each evaluation corpus's
    name (`corpus` names the first, the one its card shows) and the query count, its ranked lists and per-query
    metrics."""
    evaluate = family.params.evaluate
    collection = load_collection(family.paths.prepared)
    queries, qrels = collection.split("test")
    views = corpora(family, collection.corpus)
    metrics: dict = {"queries": queries.height, "corpus": views[0]}
    run_rows, rows = [], []
    for dim, (run, scores) in rank_at_dims(model, queries, collection.corpus, family.params.model.dims,
                                           evaluate.batch_size, evaluate.top_k).items():
        for view in views:
            means, per_query = evaluate_corpus(run, qrels, collection.corpus, view, evaluate.top_k, cutoffs=CUTOFFS)
            metrics.setdefault(view, {})[f"dim_{dim}"] = {**means, "bytes_per_vector": dim * 4}
            rows += query_rows(label, per_query, dim=dim, corpus=view)
        for query, documents in run.items():
            run_rows += [(label, dim, query, document, rank + 1, score)
                         for rank, (document, score) in enumerate(zip(documents, scores[query]))]
    runs = pl.DataFrame(run_rows, schema=["model", "dim", "query_id", "document_id", "rank", "score"], orient="row")
    return Scores(metrics, {"run": runs, "per_query": pl.DataFrame(rows)})


def baseline(family: Matryoshka) -> dict[str, Scores]:
    return {BASE: score(family, load_model(family, family.params.model.base, "the base model"), BASE)}
