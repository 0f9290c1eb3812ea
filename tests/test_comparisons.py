"""BM25, reciprocal rank fusion and compressed embeddings (core/lexical.py, core/compression.py): checked against
numbers worked out by hand, and binary rescoring against binary search alone on real MiniLM embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval_pipeline.core.comparisons import Bm25Params, comparison_labels
from retrieval_pipeline.core.compression import CompressedIndex
from retrieval_pipeline.core.evaluation import evaluate_run
from retrieval_pipeline.core.lexical import Bm25, hybrid_search, lexical_answer, reciprocal_rank_fusion

LUCENE = Bm25Params(method="lucene", k1=1.5, b=0.75, stopwords="en")
DOCUMENTS = ["The cat sat on the mat.", "Dogs chase cats!", "A cat and a dog."]


def lucene_bm25(query: list[str], document: list[str], corpus: list[list[str]], k1: float, b: float) -> float:
    """BM25 as Lucene scores it, written out: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), and a term's frequency
    saturated by tf / (tf + k1 (1 - b + b |d| / avgdl))."""
    average = sum(map(len, corpus)) / len(corpus)
    score = 0.0
    for term in query:
        df = sum(term in words for words in corpus)
        tf = document.count(term)
        if tf:
            idf = math.log(1 + (len(corpus) - df + 0.5) / (df + 0.5))
            score += idf * tf / (tf + k1 * (1 - b + b * len(document) / average))
    return score


def test_bm25_scores_are_lucenes_formula_over_the_stated_tokenisation():
    """Lowercased, words of two or more characters, English stopwords out, no stemming ("cats" is not "cat"):
    the tokens below, by hand. A document sharing no word with the query is not ranked."""
    tokens = [["cat", "sat", "mat"], ["dogs", "chase", "cats"], ["cat", "dog"]]
    bm25 = Bm25(DOCUMENTS, LUCENE)
    positions, scores = bm25.search(["Cat, dog and zebra"], 3)
    expected = [lucene_bm25(["cat", "dog"], words, tokens, 1.5, 0.75) for words in tokens]
    assert expected[1] == 0.0 and expected[2] > expected[0] > 0
    assert positions[0][:2].tolist() == [2, 0]
    assert scores[0][:2].tolist() == pytest.approx([expected[2], expected[0]], rel=1e-6)
    assert bm25.run(["q"], ["Cat, dog and zebra"], ["d0", "d1", "d2"], 10) == {"q": ["d2", "d0"]}
    assert bm25.run(["q"], ["the and a"], ["d0", "d1", "d2"], 10) == {"q": []}  # stopwords only: nothing ranked
    assert lexical_answer(bm25, 10)("cats") == [1]


def test_reciprocal_rank_fusion_by_hand():
    """k = 60: a scores 1/61 + 1/62, c 1/63 + 1/61, b 1/62, d 1/62; b and d tie and keep the first run's order."""
    fused = reciprocal_rank_fusion([{"q": ["a", "b", "c"]}, {"q": ["c", "a", "d"]}], 60, 10)
    assert 1 / 61 + 1 / 62 > 1 / 63 + 1 / 61 > 1 / 62
    assert fused == {"q": ["a", "c", "b", "d"]}
    assert reciprocal_rank_fusion([{"q": ["a", "b", "c"]}, {"q": ["c", "a", "d"]}], 60, 2) == {"q": ["a", "c"]}
    # the constant is in every term: at k = 1, c (1/2 + 1/3) is above a (1/4 + 1/2), and x (1/3) last
    assert reciprocal_rank_fusion([{"q": ["c", "x", "a"]}, {"q": ["a", "c"]}], 1, 3) == {"q": ["c", "a", "x"]}
    # a query one run does not rank keeps the other's order
    assert reciprocal_rank_fusion([{"q": ["a", "b"]}, {}], 60, 10) == {"q": ["a", "b"]}


def test_the_hybrid_answers_one_query_as_the_evaluation_fuses_it():
    bm25 = Bm25(DOCUMENTS, LUCENE)
    answer = hybrid_search(lambda encoded: encoded, bm25, 60, 3)  # the dense ranking from the query's encoding
    # BM25 ranks 2 then 0: document 2 scores 1/63 + 1/61 = 0.032266, 0 scores 2/62 = 0.032258, 1 scores 1/61
    assert answer("cat dog", [1, 0, 2]) == [2, 0, 1] == reciprocal_rank_fusion([{0: [1, 0, 2]}, {0: [2, 0]}], 60, 3)[0]


def test_compressed_indexes_store_a_byte_or_a_bit_per_dimension():
    rng = np.random.default_rng(0)
    documents = rng.normal(size=(50, 64)).astype(np.float32)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    sizes = {precision: CompressedIndex(documents, precision, 4).bytes() / 50
             for precision in ("int8", "binary", "binary_rescored")}
    assert sizes == {"int8": 64, "binary": 8, "binary_rescored": 8}
    # each document is its own nearest neighbour at every precision
    for precision in sizes:
        assert CompressedIndex(documents, precision, 4).search(documents, 1)[:, 0].tolist() == list(range(50))
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        CompressedIndex(documents, "int4", 4)


def test_binary_rescoring_is_never_worse_than_binary_alone(minilm):
    """On the synthetic claims collection encoded by the packaged MiniLM (the default profile's base model), at
    the Matryoshka family's dims: rescoring the Hamming candidates with the float query ranks at least as well as
    the Hamming ranking, and int8 stays within a point of float32."""
    from retrieval_pipeline.core.retrieval import search, truncate_and_normalise
    from retrieval_pipeline.core.world import build_world
    from retrieval_pipeline.families.colbert.synthetic import claim_collection

    corpus, queries, qrels = claim_collection(build_world(7, facilities=48, companies=12), 1, 7)
    document_ids = [row["_id"] for row in corpus]
    judged: dict[str, dict[str, int]] = {}
    for row in qrels:
        judged.setdefault(row["query-id"], {})[row["corpus-id"]] = 1
    texts = {row["_id"]: row["text"] for row in queries}
    query_ids = [query for query in texts if query in judged]
    documents = minilm.encode([row["text"] for row in corpus], convert_to_numpy=True, batch_size=64)
    questions = minilm.encode([texts[query] for query in query_ids], convert_to_numpy=True, batch_size=64)
    assert len(query_ids) >= 50 and len(document_ids) >= 200

    def ndcg(positions) -> float:
        run = {query: [document_ids[i] for i in row] for query, row in zip(query_ids, positions)}
        return evaluate_run(run, {query: judged[query] for query in query_ids})[0]["ndcg@10"]

    for dim in (384, 128, 32):
        docs, queries_at = truncate_and_normalise(documents, dim), truncate_and_normalise(questions, dim)
        scores = {precision: ndcg(CompressedIndex(docs, precision, 4).search(queries_at, 100))
                  for precision in ("int8", "binary", "binary_rescored")}
        full = ndcg(search(queries_at, docs, 100)[1])
        assert scores["binary_rescored"] >= scores["binary"], (dim, scores)
        assert abs(scores["int8"] - full) <= 0.01, (dim, scores, full)


def test_a_report_entry_may_name_the_comparison_rows_but_not_a_misspelling():
    labels = comparison_labels(("base", "finetuned"))
    assert {"bm25", "hybrid", "finetuned/int8", "finetuned/binary", "finetuned/binary_rescored"} <= set(labels)
    assert "bm52" not in labels
