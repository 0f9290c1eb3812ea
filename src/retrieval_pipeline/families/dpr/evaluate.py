"""DPR's evaluate stage: the base and the fine-tuned towers compared, after checking the towers did not collapse;
on a BEIR collection, each pair's serving cost (core/serving.py)."""

from __future__ import annotations

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.core.models import load_sentence_transformer
from retrieval_pipeline.core.retrieval import dense_answer, dense_index, dense_index_bytes
from retrieval_pipeline.core.serving import record_serving, serving_row
from retrieval_pipeline.families.dpr import BASE, FINETUNED, TOWERS, Dpr
from retrieval_pipeline.families.dpr.towers import base_towers


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


def serving(family: Dpr) -> list[dict]:
    """The base and the fine-tuned towers: the passages encoded once by the document tower and indexed, each test
    query encoded by the query tower and searched alone."""
    collection = load_collection(family.paths.prepared)
    queries = collection.split("test")[0]["text"].to_list()
    corpus = collection.corpus["text"].to_list()
    evaluate = family.params.evaluate
    rows = []
    for label, towers in ((BASE, base_towers(family)), (FINETUNED, trained_towers(family))):
        index = dense_index(towers["document"].encode(corpus, batch_size=evaluate.batch_size,
                                                      convert_to_numpy=True, show_progress_bar=True))
        encode = lambda query, tower=towers["query"]: tower.encode([query], convert_to_numpy=True)  # noqa: E731
        rows.append(serving_row(label, label == FINETUNED, dense_answer(encode, index, evaluate.top_k), queries,
                                dense_index_bytes(index), len(corpus)))
    return rows


def evaluate(family: Dpr, scores: dict[str, Scores]) -> None:
    metrics = {label: result.metrics for label, result in scores.items()}
    check_not_collapsed(metrics[FINETUNED], scores[FINETUNED].tables["per_query"].height)
    tables = {"per_query": concat_tables(scores, "per_query")}
    if family.params.data.is_collection():
        record_serving(metrics, tables, serving(family))
    family.write_evaluation(metrics, tables)
    for label, values in ((label, metrics[label]) for label in scores):
        print(f"evaluate: {label:9s} NDCG@10 {values['ndcg@10']:.4f}  R@1 {values['recall@1']:.4f}"
              f"  R@20 {values['recall@20']:.4f}  diagonal cosine {values['diagonal_cosine']:.3f}"
              f" vs mean {values['mean_cosine']:.3f}")
