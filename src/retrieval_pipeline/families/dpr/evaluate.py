"""DPR's evaluate stage: the base and the fine-tuned towers compared, after checking the towers did not collapse,
with BM25, the hybrid of BM25 and the fine-tuned towers, and the fine-tuned passage embeddings compressed beside
them (core/comparisons.py); on a BEIR collection, each one's serving cost (core/serving.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.comparisons import BM25, HYBRID, PRECISIONS, compressed_label, load_comparisons
from retrieval_pipeline.core.compression import CompressedIndex
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.evaluation import evaluate_run, query_rows
from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.core.lexical import Bm25, hybrid_search, lexical_answer, reciprocal_rank_fusion
from retrieval_pipeline.core.models import load_sentence_transformer
from retrieval_pipeline.core.retrieval import dense_index, dense_index_bytes, search
from retrieval_pipeline.core.serving import Served, record_serving, serving_row, serving_rows
from retrieval_pipeline.families.dpr import BASE, FINETUNED, TOWERS, Dpr
from retrieval_pipeline.families.dpr.scoring import RETRIEVAL_METRICS
from retrieval_pipeline.families.dpr.towers import base_towers

CUTOFFS = (1, 5, 20, 100)  # the recall cutoffs scoring.py scores the towers at, so every row has the same columns


def check_not_collapsed(diagnostics: dict[str, float], pairs: int) -> None:
    """Stop when positive pairs no longer score above the rest: the towers have collapsed. With a single held-out
    pair the whole matrix is its diagonal, so there is nothing to compare and no verdict."""
    if pairs >= 2 and diagnostics["diagonal_cosine"] <= diagnostics["mean_cosine"]:
        raise DataError("dpr: collapse: the fine-tuned towers' mean diagonal cosine "
                        f"{diagnostics['diagonal_cosine']:.3f} "
                        f"is not above the mean cosine {diagnostics['mean_cosine']:.3f} on held-out pairs; "
                        "expected positive pairs to score far above the rest")


def trained_towers(family: Dpr) -> dict:
    """The fine-tuned towers as the train stage saved them (models/dpr/query_encoder, passage_encoder)."""
    return {route: load_sentence_transformer(str(family.paths.model / folder), f"the fine-tuned {folder}")
            for route, folder in TOWERS.items()}


@dataclass
class TestSet:
    """The test claims and every passage, as the comparisons and the serving cost read them."""

    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]
    document_ids: list[str]
    documents: list[str]


def test_set(family: Dpr) -> TestSet:
    collection = load_collection(family.paths.prepared)
    queries, qrels = collection.split("test")
    return TestSet(queries["query_id"].to_list(), queries["text"].to_list(), qrels,
                   collection.corpus["document_id"].to_list(), collection.corpus["text"].to_list())


def encoded(towers: dict, texts: list[str], route: str, batch_size: int) -> np.ndarray:
    return towers[route].encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True)


def scored(run: dict[str, list[str]], qrels: dict, label: str) -> Scores:
    """A ranking's metrics, as the baseline and train stages score the towers'."""
    means, per_query = evaluate_run(run, qrels, cutoffs=CUTOFFS)
    return Scores({name: means[name] for name in RETRIEVAL_METRICS},
                  {"per_query": pl.DataFrame(query_rows(label, per_query))})


def comparisons(family: Dpr, test: TestSet, towers: dict, queries: np.ndarray,
                documents: np.ndarray) -> tuple[dict[str, Scores], Bm25, list[Served]]:
    """BM25, the hybrid and each compressed precision of the fine-tuned towers (the test claims and the passages
    they encode given), scored on the test claims; the BM25 index, and on a BEIR collection the hybrid's and the
    compressed indexes' searches, which serve from the fine-tuned query tower's encoding (serving())."""
    settings = load_comparisons(family.paths.root / "params.yaml")
    top_k = family.params.evaluate.top_k
    bm25 = Bm25(test.documents, settings.bm25)
    ids = lambda rows: {query: [test.document_ids[i] for i in row if i >= 0]  # noqa: E731
                        for query, row in zip(test.query_ids, rows)}
    lexical = bm25.run(test.query_ids, test.queries, test.document_ids, top_k)
    dense = ids(search(queries, documents, top_k)[1])
    scores = {BM25: scored(lexical, test.qrels, BM25),
              HYBRID: scored(reciprocal_rank_fusion([dense, lexical], settings.fusion_k, top_k), test.qrels, HYBRID)}
    indexes = {precision: CompressedIndex(documents, precision, settings.compression.rescore_multiplier)
               for precision in PRECISIONS}
    for precision, index in indexes.items():
        label = compressed_label(FINETUNED, precision)
        scores[label] = scored(ids(index.search(queries, top_k)), test.qrels, label)
        scores[label].metrics["bytes_per_document"] = index.bytes() / len(test.documents)
    if not family.params.data.is_collection():
        return scores, bm25, []
    flat = dense_index(documents)
    served = [Served(HYBRID, True, dense_index_bytes(flat) + bm25.bytes(),
                     hybrid_search(lambda encoded: flat.search(encoded, min(top_k, flat.ntotal))[1][0], bm25,
                                   settings.fusion_k, top_k))]
    served += [Served(compressed_label(FINETUNED, precision), True, index.bytes(),
                      lambda query, encoded, index=index: index.search(encoded, top_k)[0])
               for precision, index in indexes.items()]
    return scores, bm25, served


def serving(family: Dpr, test: TestSet, towers: dict, documents: np.ndarray, bm25: Bm25,
            built_on_finetuned: list[Served]) -> list[dict]:
    """BM25 alone, then the base and the fine-tuned towers: the passages encoded once by the document tower (the
    fine-tuned one's given) and indexed, each test query encoded once by the query tower and searched alone in each
    of its indexes (the fine-tuned towers' including `built_on_finetuned`: the hybrid and the compressed ones)."""
    evaluate, count = family.params.evaluate, len(test.documents)
    base = base_towers(family)
    rows = [serving_row(BM25, False, lexical_answer(bm25, evaluate.top_k), test.queries, bm25.bytes(), count)]
    for label, pair, vectors in ((BASE, base, encoded(base, test.documents, "document", evaluate.batch_size)),
                                 (FINETUNED, towers, documents)):
        index = dense_index(vectors)
        served = [Served(label, label == FINETUNED, dense_index_bytes(index),
                         lambda query, vector, index=index: index.search(vector, min(evaluate.top_k, count))[1][0])]
        served += built_on_finetuned if label == FINETUNED else []
        rows += serving_rows(lambda query, tower=pair["query"]: tower.encode([query], convert_to_numpy=True), served,
                             test.queries, count)
    return rows


def evaluate(family: Dpr, scores: dict[str, Scores]) -> None:
    metrics = {label: result.metrics for label, result in scores.items()}
    check_not_collapsed(metrics[FINETUNED], scores[FINETUNED].tables["per_query"].height)
    test, towers = test_set(family), trained_towers(family)
    batch_size = family.params.evaluate.batch_size
    documents = encoded(towers, test.documents, "document", batch_size)
    added, bm25, built_on_finetuned = comparisons(family, test, towers,
                                                  encoded(towers, test.queries, "query", batch_size), documents)
    metrics.update({label: result.metrics for label, result in added.items()})
    tables = {"per_query": concat_tables({**scores, **added}, "per_query")}
    if family.params.data.is_collection():
        record_serving(metrics, tables, serving(family, test, towers, documents, bm25, built_on_finetuned))
    family.write_evaluation(metrics, tables)
    for label, values in ((label, metrics[label]) for label in scores):
        print(f"evaluate: {label:9s} NDCG@10 {values['ndcg@10']:.4f}  R@1 {values['recall@1']:.4f}"
              f"  R@20 {values['recall@20']:.4f}  diagonal cosine {values['diagonal_cosine']:.3f}"
              f" vs mean {values['mean_cosine']:.3f}")
    for label in added:
        print(f"evaluate: {label:24s} NDCG@10 {metrics[label]['ndcg@10']:.4f}"
              f"  R@100 {metrics[label]['recall@100']:.4f}")
