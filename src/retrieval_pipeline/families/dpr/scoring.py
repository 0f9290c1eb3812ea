"""Scoring a pair of towers on the test claims against every passage, with similarity diagnostics: the baseline
stage (the base towers) and the train stage (the fine-tuned ones, for their cards and the evaluate stage)."""

from __future__ import annotations

import polars as pl
import torch

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.evaluation import evaluate_run, query_rows
from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.families.dpr import BASE, Dpr
from retrieval_pipeline.families.dpr.towers import base_towers

RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@20", "recall@100")


def similarity_diagnostics(queries: torch.Tensor, passages: torch.Tensor) -> dict[str, float]:
    """Mean diagonal (positive-pair) cosine and mean cosine over the whole query x passage matrix. In cosines,
    not logits, so that the baseline's numbers do not depend on the training temperature."""
    similarities = queries @ passages.T
    return {"diagonal_cosine": similarities.diagonal().mean().item(), "mean_cosine": similarities.mean().item()}


def gold_passages(query_ids: list[str], qrels: dict[str, dict[str, int]]) -> list[str]:
    """Each query's gold passage for the similarity diagnostics: its most relevant one (the first, on a tie)."""
    return [max(qrels[query].items(), key=lambda judged: judged[1])[0] for query in query_ids]


def score(family: Dpr, query_tower, passage_tower, label: str) -> Scores:
    """Retrieval metrics and similarity diagnostics of one pair of towers on the test split against the whole
    corpus, and each query's own metrics. A query's gold passage (for the diagnostics) is its most relevant one."""
    evaluate = family.params.evaluate
    collection = load_collection(family.paths.prepared)
    queries, qrels = collection.split("test")
    corpus = collection.corpus
    passage_ids = corpus["document_id"].to_list()
    position = {pid: i for i, pid in enumerate(passage_ids)}
    encoded_queries = query_tower.encode(queries["text"].to_list(), batch_size=evaluate.batch_size,
                                         convert_to_tensor=True, show_progress_bar=True).cpu()
    encoded_passages = passage_tower.encode(corpus["text"].to_list(), batch_size=evaluate.batch_size,
                                            convert_to_tensor=True, show_progress_bar=True).cpu()
    _, indices = search(encoded_queries.numpy(), encoded_passages.numpy(), evaluate.top_k)
    run = {query: [passage_ids[i] for i in row] for query, row in zip(queries["query_id"], indices)}
    means, per_query = evaluate_run(run, qrels, cutoffs=(1, 5, 20, 100))
    gold = [position[pid] for pid in gold_passages(queries["query_id"].to_list(), qrels)]
    metrics = {name: means[name] for name in RETRIEVAL_METRICS}
    return Scores({**metrics, **similarity_diagnostics(encoded_queries, encoded_passages[gold])},
                  {"per_query": pl.DataFrame(query_rows(label, per_query))})


def baseline(family: Dpr) -> dict[str, Scores]:
    base = base_towers(family)
    return {BASE: score(family, base["query"], base["document"], BASE)}
