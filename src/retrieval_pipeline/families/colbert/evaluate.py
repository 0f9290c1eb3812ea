"""ColBERT's evaluate stage: base, without_pooling and pooling_aware at every pool factor (and on each NanoBEIR
collection), the mining report beside them, and the NDCG@10-by-pool-factor plot; on a BEIR collection, the serving
cost of the base and the pooling-aware model at every pool factor of the training's pooling method
(core/serving.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import polars as pl
import torch

from retrieval_pipeline.core.family import Scores
from retrieval_pipeline.core.models import device
from retrieval_pipeline.core.serving import record_serving, serving_row
from retrieval_pipeline.families.colbert import BASE, POOLING_AWARE, Colbert
from retrieval_pipeline.families.colbert.model import base_colbert
from retrieval_pipeline.families.colbert.scoring import TEST, pool, test_set
from retrieval_pipeline.families.colbert.search import maxsim_search, plaid_index, search_plaid


def trained_colbert(family: Colbert, variant: str):
    """A fine-tuned variant as the train stage saved it (models/colbert/<variant>)."""
    from pylate.models import ColBERT

    params = family.params.model
    return ColBERT(str(family.paths.model / variant), embedding_size=params.embedding_size,
                   query_length=params.query_length, document_length=params.document_length, device=device(),
                   model_kwargs={"use_safetensors": True})


@contextlib.contextmanager
def searcher(family: Colbert, documents: list[torch.Tensor]) -> Iterator[tuple[Callable, int]]:
    """Search over the pooled documents as the evaluation searches them (exact MaxSim up to
    evaluate.index.above_documents, a PLAID index above), and the bytes that index holds: the float32 token vectors
    kept in memory, or the PLAID index's files."""
    evaluate = family.params.evaluate
    if len(documents) <= evaluate.index.above_documents:
        yield (lambda query: maxsim_search([query], documents, evaluate.top_k)), \
            sum(vectors.numel() * vectors.element_size() for vectors in documents)
        return
    scratch = family.paths.scratch("serving-index")
    with plaid_index(documents, evaluate.index, scratch, family.params.seed) as plaid:
        stored = sum(path.stat().st_size for path in scratch.rglob("*") if path.is_file())
        yield (lambda query: search_plaid(plaid, [query], evaluate.top_k, evaluate.index)), stored


def serving(family: Colbert) -> list[dict]:
    """The base and the pooling-aware model at every pool factor of the training's method: the corpus encoded and
    pooled once, each test query encoded and searched alone."""
    queries, corpus, _ = test_set(family.paths.prepared)
    texts = queries["text"].to_list()
    evaluate = family.params.evaluate
    method = evaluate.methods[0]
    rows = []
    for label, model in ((BASE, base_colbert(family)), (POOLING_AWARE, trained_colbert(family, POOLING_AWARE))):
        token_vectors = [torch.as_tensor(v) for v in model.encode(
            corpus["text"].to_list(), is_query=False, batch_size=evaluate.batch_size, show_progress_bar=True)]
        encode = lambda query, model=model: torch.as_tensor(model.encode([query], is_query=True)[0])  # noqa: E731
        for pool_factor in evaluate.pool_factors:
            with searcher(family, pool(family, token_vectors, method, pool_factor)) as (search, stored):
                answer = lambda query, search=search, encode=encode: search(encode(query))  # noqa: E731
                rows.append(serving_row(label, label == POOLING_AWARE, answer, texts, stored, corpus.height,
                                        dataset=TEST, method=method, pool_factor=pool_factor))
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
    tables = {"per_query": pl.concat([scores[label].tables["per_query"] for label in labels])}
    if family.params.data.is_collection():
        record_serving(metrics, tables, serving(family))
    family.write_evaluation(metrics, tables, {"ndcg_by_pool_factor": plot})
    for label in labels:
        for method, by_factor in metrics[label].items():
            print(f"evaluate: {label:16s} {method:12s} " + "  ".join(
                f"PF{key[3:]} {values['ndcg@10']:.4f}" for key, values in by_factor.items()))
