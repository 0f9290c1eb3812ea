"""A dense model's document embeddings stored compressed, searched through faiss: int8 (faiss's 8-bit scalar
quantizer, one byte per dimension, its per-dimension ranges trained on the corpus; the query stays float) and
binary (sentence-transformers' ubinary quantization, one bit per dimension, Hamming search), the latter also with
its top candidates rescored by the float query (sentence-transformers' semantic_search_faiss), as
sentence-transformers documents it. The labels are core/comparisons.py's PRECISIONS."""

from __future__ import annotations

import faiss
import numpy as np


class CompressedIndex:
    """Normalised float32 document embeddings, stored at `precision`."""

    def __init__(self, documents: np.ndarray, precision: str, rescore_multiplier: int) -> None:
        from sentence_transformers.quantization import quantize_embeddings

        documents = np.ascontiguousarray(documents, dtype=np.float32)
        self.precision, self.rescore_multiplier = precision, rescore_multiplier
        if precision == "int8":
            self.index = faiss.IndexScalarQuantizer(documents.shape[1], faiss.ScalarQuantizer.QT_8bit,
                                                    faiss.METRIC_INNER_PRODUCT)
            self.index.train(documents)
            self.index.add(documents)
        elif precision in ("binary", "binary_rescored"):
            self.index = faiss.IndexBinaryFlat(documents.shape[1])
            self.index.add(quantize_embeddings(documents, precision="ubinary"))
        else:
            raise ValueError(f"unknown precision {precision!r}; expected int8, binary or binary_rescored")

    def bytes(self) -> int:
        """The codes the index stores: a byte per dimension (int8), a bit per dimension (binary)."""
        return self.index.code_size * self.index.ntotal

    def search(self, queries: np.ndarray, top_k: int) -> np.ndarray:
        """Each query's top_k document positions, best first."""
        from sentence_transformers.quantization import semantic_search_faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(top_k, self.index.ntotal)
        if self.precision == "int8":
            return self.index.search(queries, k)[1]
        rescore = self.precision == "binary_rescored"
        # the candidates rescored are at most the whole corpus
        multiplier = max(1, min(self.rescore_multiplier, self.index.ntotal // k)) if rescore else 1
        results, _ = semantic_search_faiss(queries, corpus_index=self.index, corpus_precision="ubinary", top_k=k,
                                           rescore=rescore, rescore_multiplier=multiplier)
        return np.asarray([[hit["corpus_id"] for hit in hits] for hits in results])

