from __future__ import annotations

import random

import pytest
import pytrec_eval

from retrieval_pipeline.core.metrics import evaluate_run

TREC_MEASURES = {"ndcg_cut.10", "map_cut.100", "P.1,3,5,10", "recall.1,3,5,10", "success.1,3,5,10"}


def random_case(seed: int, queries: int = 40, documents: int = 150, graded: bool = False):
    rng = random.Random(seed)
    doc_ids = [f"d{i}" for i in range(documents)]
    qrels, run = {}, {}
    for q in range(queries):
        relevant = rng.sample(doc_ids, rng.randint(1, 4))
        qrels[f"q{q}"] = {doc: (rng.randint(1, 3) if graded else 1) for doc in relevant}
        ranked = rng.sample(doc_ids, 120)
        # plant relevant documents near the top for some queries so every metric is exercised
        for doc in relevant:
            if rng.random() < 0.6:
                if doc in ranked:
                    ranked.remove(doc)
                ranked.insert(rng.randint(0, 12), doc)
        run[f"q{q}"] = ranked[:120]
    return run, qrels


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_trec_eval(seed, graded):
    run, qrels = random_case(seed, graded=graded)
    _, ours = evaluate_run(run, qrels)
    trec_run = {q: {doc: float(len(docs) - rank) for rank, doc in enumerate(docs)} for q, docs in run.items()}
    reference = pytrec_eval.RelevanceEvaluator(qrels, TREC_MEASURES).evaluate(trec_run)
    top10 = {q: {doc: float(10 - rank) for rank, doc in enumerate(docs[:10])} for q, docs in run.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    for query, mine in ours.items():
        trec = reference[query]
        assert mine["ndcg@10"] == pytest.approx(trec["ndcg_cut_10"], abs=1e-4)
        assert mine["map@100"] == pytest.approx(trec["map_cut_100"], abs=1e-4)
        assert mine["mrr@10"] == pytest.approx(reciprocal[query]["recip_rank"], abs=1e-4)
        for k in (1, 3, 5, 10):
            assert mine[f"precision@{k}"] == pytest.approx(trec[f"P_{k}"], abs=1e-4)
            assert mine[f"recall@{k}"] == pytest.approx(trec[f"recall_{k}"], abs=1e-4)
            assert mine[f"accuracy@{k}"] == pytest.approx(trec[f"success_{k}"], abs=1e-4)


def test_perfect_and_empty_rankings():
    qrels = {"q": {"a": 1, "b": 1}}
    means, _ = evaluate_run({"q": ["a", "b", "c"]}, qrels)
    assert means["ndcg@10"] == means["map@100"] == means["mrr@10"] == means["recall@3"] == 1.0
    means, _ = evaluate_run({}, qrels)
    assert means["ndcg@10"] == means["recall@10"] == 0.0


def test_no_judged_query_is_an_error():
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate_run({"q": ["a"]}, {"q": {"a": 0}})
