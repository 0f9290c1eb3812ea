"""Matryoshka's evaluate stage: the base and the fine-tuned model at every dim, and the NDCG@10-by-dim plot, with
BM25, the hybrid of BM25 and the fine-tuned model, and the fine-tuned embeddings compressed, at every dim, beside
them (core/comparisons.py); on a BEIR collection, each one's serving cost at every dim (core/serving.py)."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.comparisons import BM25, HYBRID, PRECISIONS, compressed_label, load_comparisons
from retrieval_pipeline.core.compression import CompressedIndex
from retrieval_pipeline.core.evaluation import query_rows
from retrieval_pipeline.core.family import Scores, concat_tables
from retrieval_pipeline.core.lexical import Bm25, hybrid_search, lexical_answer, reciprocal_rank_fusion
from retrieval_pipeline.core.retrieval import dense_index, dense_index_bytes, truncate_and_normalise
from retrieval_pipeline.core.serving import Served, record_serving, serving_row, serving_rows
from retrieval_pipeline.families.matryoshka import BASE, FINETUNED, PRIMARY_METRIC, Matryoshka
from retrieval_pipeline.families.matryoshka.model import load_model
from retrieval_pipeline.families.matryoshka.scoring import CUTOFFS, corpora, evaluate_corpus


def encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    return model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True)


def dense_search(index, dim: int, top_k: int):
    """Search a dim's index with a query's full-size encoding, truncated to the dim: its top_k positions."""
    k = min(top_k, index.ntotal)
    return lambda encoded: index.search(truncate_and_normalise(encoded, dim), k)[1][0]


def serving(family: Matryoshka, finetuned, documents: np.ndarray, bm25: Bm25, built_on_finetuned: list[Served],
            queries: list[str]) -> list[dict]:
    """BM25 alone, then the base and the fine-tuned model at every dim: the corpus encoded once (the fine-tuned
    model's by the caller), truncated and indexed per dim, each test query encoded once per model and searched
    alone in each of its indexes (the fine-tuned model's including `built_on_finetuned`: the hybrid and the
    compressed indexes)."""
    evaluate, count = family.params.evaluate, documents.shape[0]
    base = load_model(family, family.params.model.base, f"the {BASE} model")
    rows = [serving_row(BM25, False, lexical_answer(bm25, evaluate.top_k), queries, bm25.bytes(), count)]
    corpus = load_collection(family.paths.prepared).corpus["text"].to_list()
    for label, model, encoded in ((BASE, base, encode(base, corpus, evaluate.batch_size)),
                                  (FINETUNED, finetuned, documents)):
        served = []
        for dim in family.params.model.dims:
            index = dense_index(truncate_and_normalise(encoded, dim))
            search = dense_search(index, dim, evaluate.top_k)
            served.append(Served(label, label == FINETUNED, dense_index_bytes(index),
                                 lambda query, vector, search=search: search(vector), {"dim": dim}))
        served += built_on_finetuned if label == FINETUNED else []
        rows += serving_rows(lambda query, model=model: model.encode([query], convert_to_numpy=True), served, queries,
                             count)
    return rows


def comparisons(family: Matryoshka, scores: dict[str, Scores], model,
                documents: np.ndarray) -> tuple[dict[str, Scores], Bm25, list[Served]]:
    """BM25, and at every dim the hybrid (BM25 fused with the fine-tuned model's test ranking) and the fine-tuned
    embeddings at each compressed precision, scored over each evaluation corpus as the models are; the BM25 index,
    and on a BEIR collection the hybrid's and the compressed indexes' searches at every dim, which serve from the
    fine-tuned model's encoding (serving())."""
    settings = load_comparisons(family.paths.root / "params.yaml")
    evaluate, dims = family.params.evaluate, family.params.model.dims
    collection = load_collection(family.paths.prepared)
    queries, qrels = collection.split("test")
    corpus, top_k = collection.corpus, evaluate.top_k
    views = corpora(family, corpus)
    query_ids, texts, document_ids = queries["query_id"].to_list(), queries["text"].to_list(), \
        corpus["document_id"].to_list()
    bm25 = Bm25(corpus["text"].to_list(), settings.bm25)
    lexical = bm25.run(query_ids, texts, document_ids, top_k)
    questions = encode(model, texts, evaluate.batch_size)
    tuned = scores[FINETUNED].tables["run"].sort("rank")
    added: dict[str, tuple[dict, list[dict]]] = {}

    def add(label: str, run: dict, **setting) -> None:
        metrics, rows = added.setdefault(label, ({}, []))
        for view in views:
            means, per_query = evaluate_corpus(run, qrels, corpus, view, top_k, cutoffs=CUTOFFS)
            node = metrics.setdefault(view, {})
            if "dim" in setting:
                node = node.setdefault(f"dim_{setting['dim']}", {})
            node.update(means)
            rows += query_rows(label, per_query, **setting, corpus=view)

    add(BM25, lexical)
    indexes = {}
    for dim in dims:
        at_dim = tuned.filter(pl.col("dim") == dim)
        dense = {query: group["document_id"].to_list()
                 for (query,), group in at_dim.group_by("query_id", maintain_order=True)}
        add(HYBRID, reciprocal_rank_fusion([dense, lexical], settings.fusion_k, top_k), dim=dim)
        for precision in PRECISIONS:
            index = indexes[dim, precision] = CompressedIndex(truncate_and_normalise(documents, dim), precision,
                                                              settings.compression.rescore_multiplier)
            label = compressed_label(FINETUNED, precision)
            positions = index.search(truncate_and_normalise(questions, dim), top_k)
            add(label, {query: [document_ids[i] for i in row if i >= 0] for query, row in zip(query_ids, positions)},
                dim=dim)
            for view in views:
                added[label][0][view][f"dim_{dim}"]["bytes_per_document"] = index.bytes() / len(document_ids)
    result = {label: Scores(metrics, {"per_query": pl.DataFrame(rows)}) for label, (metrics, rows) in added.items()}
    if not family.params.data.is_collection():
        return result, bm25, []
    served: list[Served] = []  # built on the fine-tuned model's encoding
    for dim in dims:
        flat = dense_index(truncate_and_normalise(documents, dim))
        served.append(Served(HYBRID, True, dense_index_bytes(flat) + bm25.bytes(),
                             hybrid_search(dense_search(flat, dim, top_k), bm25, settings.fusion_k, top_k),
                             {"dim": dim}))
        served += [Served(compressed_label(FINETUNED, precision), True, indexes[dim, precision].bytes(),
                          lambda query, encoded, index=indexes[dim, precision], dim=dim: index.search(
                              truncate_and_normalise(encoded, dim), top_k)[0], {"dim": dim})
                   for precision in PRECISIONS]
    return result, bm25, served


def evaluate(family: Matryoshka, scores: dict[str, Scores]) -> None:
    """Each model's metrics at every dim under each evaluation corpus's name (`rows`, `chunks`); the plot and the
    printed lines show the first corpus."""
    dims = family.params.model.dims
    collection = load_collection(family.paths.prepared)
    views = corpora(family, collection.corpus)
    metrics = {label: {view: result.metrics[view] for view in views} for label, result in scores.items()}
    shown = {label: metrics[label][views[0]] for label in (BASE, FINETUNED)}
    plot_lines = [f"dim,{BASE},{FINETUNED}"] + [
        f"{dim},{shown[BASE][f'dim_{dim}'][PRIMARY_METRIC]:.6f},"
        f"{shown[FINETUNED][f'dim_{dim}'][PRIMARY_METRIC]:.6f}" for dim in dims]
    model = load_model(family, str(family.paths.model), f"the {FINETUNED} model")
    documents = encode(model, collection.corpus["text"].to_list(), family.params.evaluate.batch_size)
    added, bm25, built_on_finetuned = comparisons(family, scores, model, documents)
    metrics.update({label: result.metrics for label, result in added.items()})
    tables = {"run": concat_tables(scores, "run"),
              # BM25's rows have no dim
              "per_query": pl.concat([result.tables["per_query"] for result in (*scores.values(), *added.values())],
                                     how="diagonal")}
    if family.params.data.is_collection():
        queries = collection.split("test")[0]["text"].to_list()
        record_serving(metrics, tables, serving(family, model, documents, bm25, built_on_finetuned, queries))
    family.write_evaluation(metrics, tables, {"ndcg_by_dim": "\n".join(plot_lines) + "\n"})
    for dim in dims:
        base, tuned = (shown[label][f"dim_{dim}"][PRIMARY_METRIC] for label in (BASE, FINETUNED))
        hybrid, binary = (metrics[label][views[0]][f"dim_{dim}"][PRIMARY_METRIC]
                          for label in (HYBRID, compressed_label(FINETUNED, "binary_rescored")))
        print(f"evaluate: dim {dim:4d}  NDCG@10 base {base:.4f} -> fine-tuned {tuned:.4f}; hybrid {hybrid:.4f}, "
              f"binary rescored {binary:.4f} ({views[0]} corpus)")
    print(f"evaluate: BM25 NDCG@10 {metrics[BM25][views[0]][PRIMARY_METRIC]:.4f} ({views[0]} corpus)")
