"""core/evaluation.py: the metrics come from pytrec_eval through the registry; a plain reference implementation of
trec_eval's definitions (what this project computed itself before) checks that every name maps to the measure it
says, to the last bit, and the table layout every evaluate stage writes."""

from __future__ import annotations

import math
import random

import pytest

from retrieval_pipeline.core.evaluation import evaluate_run, metric_names, query_rows


def reference(ranked: list[str], relevant: dict[str, int], cutoffs=(1, 3, 5, 10), ndcg_k=10, mrr_k=10,
              map_k=100) -> dict[str, float]:
    """trec_eval's definitions, written out: graded NDCG with a log2 discount, reciprocal rank in the first k,
    average precision over every relevant document, and hits at each cutoff."""
    grades = sorted((grade for grade in relevant.values() if grade > 0), reverse=True)
    gain = lambda rank, grade: grade / math.log2(rank + 2)  # noqa: E731
    ideal = sum(gain(rank, grade) for rank, grade in enumerate(grades[:ndcg_k]))
    actual = sum(gain(rank, max(relevant.get(doc, 0), 0)) for rank, doc in enumerate(ranked[:ndcg_k]))
    hits_at = lambda k: sum(1 for doc in ranked[:k] if relevant.get(doc, 0) > 0)  # noqa: E731
    first = next((rank for rank, doc in enumerate(ranked[:mrr_k]) if relevant.get(doc, 0) > 0), None)
    found, precision_sum = 0, 0.0
    for rank, doc in enumerate(ranked[:map_k]):
        if relevant.get(doc, 0) > 0:
            found += 1
            precision_sum += found / (rank + 1)
    scores = {f"ndcg@{ndcg_k}": actual / ideal if ideal else 0.0,
              f"mrr@{mrr_k}": 1.0 / (first + 1) if first is not None else 0.0,
              f"map@{map_k}": precision_sum / len(grades) if grades else 0.0}
    for k in cutoffs:
        scores[f"accuracy@{k}"] = float(hits_at(k) > 0)
        scores[f"precision@{k}"] = hits_at(k) / k
        scores[f"recall@{k}"] = hits_at(k) / len(grades) if grades else 0.0
    return scores


def random_case(seed: int, queries: int = 40, documents: int = 150, graded: bool = False):
    rng = random.Random(seed)
    doc_ids = [f"d{i}" for i in range(documents)]
    qrels, run = {}, {}
    for q in range(queries):
        relevant = rng.sample(doc_ids, rng.randint(1, 4))
        qrels[f"q{q}"] = {doc: (rng.randint(1, 3) if graded else 1) for doc in relevant}
        judged_irrelevant = rng.choice(doc_ids)
        qrels[f"q{q}"].setdefault(judged_irrelevant, 0)  # a judgement of 0 counts as not relevant
        ranked = rng.sample(doc_ids, 120)
        # plant relevant documents near the top for some queries so every metric is exercised
        for doc in relevant:
            if rng.random() < 0.6:
                if doc in ranked:
                    ranked.remove(doc)
                ranked.insert(rng.randint(0, 12), doc)
        run[f"q{q}"] = ranked[:120]
    return run, qrels


@pytest.mark.parametrize("options", [{}, {"cutoffs": (100,), "map_k": 1000}, {"cutoffs": (10, 100)}])
@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_metric_is_trec_evals_to_the_last_bit(seed, graded, options):
    run, qrels = random_case(seed, graded=graded)
    means, per_query = evaluate_run(run, qrels, **options)
    for query, scores in per_query.items():
        expected = reference(run[query], qrels[query], **options)
        assert list(scores) == list(expected) == metric_names(**options)
        assert scores == expected, query
    assert means == {name: sum(scores[name] for scores in per_query.values()) / len(per_query)
                     for name in metric_names(**options)}


def test_perfect_and_empty_rankings():
    qrels = {"q": {"a": 1, "b": 1}}
    means, _ = evaluate_run({"q": ["a", "b", "c"]}, qrels)
    assert means["ndcg@10"] == means["map@100"] == means["mrr@10"] == means["recall@3"] == 1.0
    for run in ({}, {"q": []}):  # a judged query the run misses scores zero, as with trec_eval -c
        means, per_query = evaluate_run(run, qrels)
        assert means["ndcg@10"] == means["recall@10"] == means["mrr@10"] == 0.0 and list(per_query) == ["q"]


def test_the_runs_order_decides_not_the_document_ids():
    """trec_eval ranks by score, then by document id: the run's order is given to it as descending scores."""
    qrels = {"q": {"z": 1}}
    _, per_query = evaluate_run({"q": ["z", "a"]}, qrels)
    assert per_query["q"]["mrr@10"] == 1.0
    _, per_query = evaluate_run({"q": ["a", "z"]}, qrels)
    assert per_query["q"]["mrr@10"] == 0.5


def test_no_judged_query_is_an_error():
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate_run({"q": ["a"]}, {"q": {"a": 0}})


def test_query_rows_are_the_table_every_evaluate_stage_writes():
    rows = query_rows("tuned", {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 1.0}}, dataset="test", pool_factor=2)
    assert rows == [{"model": "tuned", "dataset": "test", "pool_factor": 2, "query_id": "q1", "ndcg@10": 0.5},
                    {"model": "tuned", "dataset": "test", "pool_factor": 2, "query_id": "q2", "ndcg@10": 1.0}]
    assert [list(row) for row in rows][0] == ["model", "dataset", "pool_factor", "query_id", "ndcg@10"]
