"""What every retrieval family's evaluate stage sets beside its own models (params.yaml's top-level `comparisons`):
BM25 over the same test queries and corpus, the hybrid (reciprocal rank fusion of BM25 with the model the family
recommends), and that model's embeddings compressed to int8 and to binary, for the dense families. None of it
trains: the rows are scored in the evaluate stage, on the queries every other row of the family is scored on.

The labels these rows carry, beside the family's own: `bm25`, `hybrid`, and `<model>/<precision>` for a compressed
model. The resolve stage accepts them in a family's report entry; a family that does not evaluate one (the reranker
reorders a first stage, so it has none) shows it as not in this run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from retrieval_pipeline.core.errors import ParamsError
from retrieval_pipeline.core.params import Section, read_params_file, validate_section

COMPARISONS = "comparisons"  # the top-level key of params.yaml
BM25, HYBRID = "bm25", "hybrid"
# int8: a byte per dimension (faiss's 8-bit scalar quantizer, ranges trained on the corpus); binary: a bit per
# dimension (sentence-transformers' ubinary), searched by Hamming distance; binary_rescored: the same index, its top
# `rescore_multiplier` x k candidates rescored with the float query (sentence-transformers' semantic_search_faiss)
PRECISIONS = ("int8", "binary", "binary_rescored")


class Bm25Params(Section):
    """BM25 as bm25s computes it; the tokenisation is bm25s's own (docs/comparisons.md)."""

    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"]
    k1: float = Field(gt=0)
    b: float = Field(ge=0, le=1)
    stopwords: Literal["en"] | None  # bm25s's English list, or none


class CompressionParams(Section):
    rescore_multiplier: PositiveInt  # binary_rescored: candidates rescored per result kept


class ComparisonParams(Section):
    bm25: Bm25Params
    fusion_k: PositiveInt  # reciprocal rank fusion's constant: a document at rank r adds 1 / (fusion_k + r)
    compression: CompressionParams


def load_comparisons(params_file: Path) -> ComparisonParams:
    section = read_params_file(params_file).get(COMPARISONS)
    if not isinstance(section, dict):
        raise ParamsError(f"{params_file}: no '{COMPARISONS}' section; expected {COMPARISONS}.bm25, "
                          f"{COMPARISONS}.fusion_k and {COMPARISONS}.compression")
    return validate_section(section, ComparisonParams, params_file, COMPARISONS)


def compressed_label(model: str, precision: str) -> str:
    return f"{model}/{precision}"


def comparison_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """Every label an evaluate stage may add beside a family's own `labels`."""
    return (BM25, HYBRID, *(compressed_label(label, precision) for label in labels for precision in PRECISIONS))
