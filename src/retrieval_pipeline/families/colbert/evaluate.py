"""ColBERT's evaluate stage: base, without_pooling and pooling_aware at every pool factor (and on each NanoBEIR
collection), the mining report beside them, and the NDCG@10-by-pool-factor plot, with BM25 and the hybrid of BM25
and the pooling-aware model at every pool factor of the first pooling method beside them on the test split
(core/comparisons.py); on a BEIR collection, the serving cost of the base and the pooling-aware model and of the
hybrid at those pool factors, and of BM25 (core/serving.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import polars as pl
import torch

from retrieval_pipeline.core.comparisons import BM25, HYBRID, load_comparisons
from retrieval_pipeline.core.evaluation import evaluate_run, query_rows
from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.core.lexical import Bm25, hybrid_search, lexical_answer, reciprocal_rank_fusion
from retrieval_pipeline.core.models import device
from retrieval_pipeline.core.serving import Served, record_serving, serving_row, serving_rows
from retrieval_pipeline.families.colbert import BASE, POOLING_AWARE, Colbert
from retrieval_pipeline.families.colbert.model import base_colbert
from retrieval_pipeline.families.colbert.scoring import TEST, pool, search, test_set
from retrieval_pipeline.families.colbert.search import maxsim_search, plaid_index, search_plaid

CUTOFFS = (10, 100)  # the cutoffs scoring.py scores the models at, so every row has the same columns


def trained_colbert(family: Colbert, variant: str):
    """A fine-tuned variant as the train stage saved it (models/colbert/<variant>)."""
    from pylate.models import ColBERT

    params = family.params.model
    return ColBERT(str(family.paths.model / variant), embedding_size=params.embedding_size,
                   query_length=params.query_length, document_length=params.document_length, device=device(),
                   model_kwargs={"use_safetensors": True})


@contextlib.contextmanager
def searcher(family: Colbert, documents: list[torch.Tensor], name: str) -> Iterator[tuple[Callable, int]]:
    """Search over the pooled documents as the evaluation searches them (exact MaxSim up to
    evaluate.index.above_documents, a PLAID index above, in the scratch folder `name`), and the bytes that index
    holds: the float32 token vectors kept in memory, or the PLAID index's files."""
    evaluate = family.params.evaluate
    if len(documents) <= evaluate.index.above_documents:
        yield (lambda query: maxsim_search([query], documents, evaluate.top_k)), \
            sum(vectors.numel() * vectors.element_size() for vectors in documents)
        return
    scratch = family.paths.scratch(name)
    with plaid_index(documents, evaluate.index, scratch, family.params.seed) as plaid:
        stored = sum(path.stat().st_size for path in scratch.rglob("*") if path.is_file())
        yield (lambda query: search_plaid(plaid, [query], evaluate.top_k, evaluate.index)), stored


def token_vectors(model, texts: list[str], is_query: bool, batch_size: int) -> list[torch.Tensor]:
    return [torch.as_tensor(v) for v in model.encode(texts, is_query=is_query, batch_size=batch_size,
                                                     show_progress_bar=True)]


def comparisons(family: Colbert, model, documents: list[torch.Tensor]) -> tuple[dict[str, Scores], Bm25]:
    """BM25, and the hybrid of BM25 with the pooling-aware model (its documents' token vectors given) at every pool
    factor of the first pooling method, scored on the test split as the models are, and the BM25 index."""
    settings = load_comparisons(family.paths.root / "params.yaml")
    evaluate = family.params.evaluate
    queries, corpus, qrels = test_set(family.paths.prepared)
    query_ids, document_ids = queries["query_id"].to_list(), corpus["document_id"].to_list()
    bm25 = Bm25(corpus["text"].to_list(), settings.bm25)
    lexical = bm25.run(query_ids, queries["text"].to_list(), document_ids, evaluate.top_k)
    method = evaluate.methods[0]
    added: dict[str, tuple[dict, list[dict]]] = {}

    def add(label: str, run: dict, **setting) -> None:
        metrics, rows = added.setdefault(label, ({}, []))
        means, per_query = evaluate_run(run, qrels, cutoffs=CUTOFFS)
        values = {name: means[name] for name in ("ndcg@10", "mrr@10", "recall@100")}
        if setting:
            metrics.setdefault(method, {})[f"pf_{setting['pool_factor']}"] = values
        else:
            metrics.update(values)
        rows += query_rows(label, per_query, dataset=TEST, **setting)

    add(BM25, lexical)
    questions = token_vectors(model, queries["text"].to_list(), True, evaluate.batch_size)
    for pool_factor in evaluate.pool_factors:
        top = search(family, questions, pool(family, documents, method, pool_factor))
        dense = {query: [document_ids[i] for i in row if i >= 0] for query, row in zip(query_ids, top)}
        add(HYBRID, reciprocal_rank_fusion([dense, lexical], settings.fusion_k, evaluate.top_k), method=method,
            pool_factor=pool_factor, document_length=model.document_length)
    return {label: Scores(metrics, {"per_query": pl.DataFrame(rows)}) for label, (metrics, rows) in added.items()}, \
        bm25


def serving(family: Colbert, pooling_aware, documents: list[torch.Tensor], bm25: Bm25) -> list[dict]:
    """The base and the pooling-aware model at every pool factor of the training's method: the corpus encoded and
    pooled once (the pooling-aware model's by the caller), each test query encoded once per model and searched
    alone in each pool factor's index; the hybrid searches the pooling-aware model's index and BM25's, and BM25
    alone its own."""
    queries, corpus, _ = test_set(family.paths.prepared)
    texts = queries["text"].to_list()
    evaluate = family.params.evaluate
    fusion_k = load_comparisons(family.paths.root / "params.yaml").fusion_k
    method = evaluate.methods[0]
    base = base_colbert(family)
    rows = [serving_row(BM25, False, lexical_answer(bm25, evaluate.top_k), texts, bm25.bytes(), corpus.height,
                        dataset=TEST)]
    for label, model, vectors in ((BASE, base, token_vectors(base, corpus["text"].to_list(), False,
                                                              evaluate.batch_size)),
                                  (POOLING_AWARE, pooling_aware, documents)):
        with contextlib.ExitStack() as indexes:  # every pool factor's index open, so a query is encoded once
            served = []
            for pool_factor in evaluate.pool_factors:
                search_one, stored = indexes.enter_context(searcher(
                    family, pool(family, vectors, method, pool_factor), f"serving-index-{label}-{pool_factor}"))
                setting = {"dataset": TEST, "method": method, "pool_factor": pool_factor}
                served.append(Served(label, label == POOLING_AWARE, stored,
                                     lambda query, encoded, search_one=search_one: search_one(encoded), setting))
                if label == POOLING_AWARE:
                    positions = lambda encoded, search_one=search_one: [  # noqa: E731
                        i for i in search_one(encoded)[0] if i >= 0]
                    served.append(Served(HYBRID, True, stored + bm25.bytes(),
                                         hybrid_search(positions, bm25, fusion_k, evaluate.top_k), setting))
            rows += serving_rows(lambda query, model=model: torch.as_tensor(model.encode([query], is_query=True)[0]),
                                 served, texts, corpus.height)
    return rows


def evaluate(family: Colbert, scores: dict[str, Scores]) -> None:
    labels = [label for label in family.labels if label in scores]  # the plot's columns in a fixed order
    metrics: dict = {"mining": json.loads((family.paths.mined / "mining_report.json").read_text())}
    for label in labels:
        metrics[label] = scores[label].metrics["test"]
        for name, by_method in scores[label].metrics["nanobeir"].items():
            metrics.setdefault("nanobeir", {}).setdefault(name, {})[label] = by_method
    evaluate_params = family.params.evaluate
    first_method = evaluate_params.methods[0]
    plot = "pool_factor," + ",".join(labels) + "\n" + "".join(
        f"{pf}," + ",".join(f"{metrics[label][first_method][f'pf_{pf}']['ndcg@10']:.6f}" for label in labels)
        + "\n" for pf in sorted(evaluate_params.pool_factors))
    pooling_aware = trained_colbert(family, POOLING_AWARE)
    documents = token_vectors(pooling_aware, test_set(family.paths.prepared)[1]["text"].to_list(), False,
                              evaluate_params.batch_size)
    added, bm25 = comparisons(family, pooling_aware, documents)
    metrics.update({label: result.metrics for label, result in added.items()})
    tables = {"per_query": pl.concat([scores[label].tables["per_query"] for label in labels]
                                     + [result.tables["per_query"] for result in added.values()], how="diagonal")}
    if family.params.data.is_collection():
        record_serving(metrics, tables, serving(family, pooling_aware, documents, bm25))
    family.write_evaluation(metrics, tables, {"ndcg_by_pool_factor": plot})
    print(f"evaluate: {BM25:16s} NDCG@10 {metrics[BM25]['ndcg@10']:.4f}")
    for label in (*labels, HYBRID):
        for method, by_factor in metrics[label].items():
            print(f"evaluate: {label:16s} {method:12s} " + "  ".join(
                f"PF{key[3:]} {values['ndcg@10']:.4f}" for key, values in by_factor.items()))
