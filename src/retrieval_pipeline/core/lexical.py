"""BM25 with bm25s, and reciprocal rank fusion: the lexical baseline every retrieval family is compared with, and
the hybrid that fuses it with the family's recommended model (core/comparisons.py).

Tokenisation is bm25s's Tokenizer for the corpus and the queries alike: lowercased, split on its word pattern
(runs of two or more word characters), the stopwords `comparisons.bm25.stopwords` names removed, no stemming. A
query word the corpus never holds scores nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from retrieval_pipeline.core.comparisons import Bm25Params
from retrieval_pipeline.core.evaluation import Run


class Bm25:
    """A BM25 index over `documents`, searched a batch of queries at once (evaluation) or one (serving)."""

    def __init__(self, documents: Sequence[str], params: Bm25Params) -> None:
        import bm25s
        from bm25s.tokenization import Tokenizer

        self.tokenizer = Tokenizer(stopwords=params.stopwords, stemmer=None)
        self.retriever = bm25s.BM25(method=params.method, k1=params.k1, b=params.b)
        self.retriever.index(self.tokenizer.tokenize(list(documents), return_as="ids", show_progress=False),
                             show_progress=False)
        self.documents = len(documents)

    def search(self, queries: Sequence[str], top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Document positions and scores of each query's top_k, best first."""
        tokens = self.tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        positions, scores = self.retriever.retrieve(tokens, k=min(top_k, self.documents), show_progress=False,
                                                    n_threads=1)
        return positions, scores

    def bytes(self) -> int:
        """What the index stores: its sparse score matrix (values, row indices, column pointers)."""
        return sum(array.nbytes for array in self.retriever.scores.values() if isinstance(array, np.ndarray))

    def run(self, query_ids: Sequence[str], queries: Sequence[str], document_ids: Sequence[str], top_k: int) -> Run:
        """Each query's ranked document ids. Documents BM25 scores zero (no query word in common) are left out:
        their order would be arbitrary."""
        positions, scores = self.search(queries, top_k)
        return {query: [document_ids[i] for i, score in zip(row, row_scores) if score > 0]
                for query, row, row_scores in zip(query_ids, positions, scores)}


def reciprocal_rank_fusion(runs: Sequence[Run], k: int, top_k: int) -> Run:
    """Reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009): a document's score is the sum over the runs of
    1 / (k + its rank there, from 1); the top_k by that score, ties broken by the first run's order then the next's."""
    fused: dict[str, list[str]] = {}
    for query in dict.fromkeys(query for run in runs for query in run):
        scores: dict[str, float] = {}
        for run in runs:
            for rank, document in enumerate(run.get(query, ()), start=1):
                scores[document] = scores.get(document, 0.0) + 1.0 / (k + rank)
        fused[query] = sorted(scores, key=lambda document: -scores[document])[:top_k]  # stable: first seen first
    return fused


def lexical_answer(bm25: Bm25, top_k: int) -> Callable[[str], list[int]]:
    """Answer one query with BM25 alone: the positions of its top_k documents that share a word with it."""
    def answer(query: str) -> list[int]:
        positions, scores = bm25.search([query], top_k)
        return [int(i) for i, score in zip(positions[0], scores[0]) if score > 0]
    return answer


def hybrid_search(dense: Callable[[object], Sequence[int]], bm25: Bm25, fusion_k: int,
                  top_k: int) -> Callable[[str, object], list[int]]:
    """Answer one query with the hybrid, from its text and its dense encoding (core/serving.py's search): the dense
    model's ranking (document positions, from the encoding) and BM25's (from the text), fused as the evaluation
    fuses them (the dense run first)."""
    lexical = lexical_answer(bm25, top_k)
    return lambda query, encoded: reciprocal_rank_fusion([{0: list(dense(encoded))}, {0: lexical(query)}], fusion_k,
                                                         top_k)[0]
