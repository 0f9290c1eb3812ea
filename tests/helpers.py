"""Building params files for tests from the repository's own params.yaml."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from retrieval_pipeline.core.params import deep_merge

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def write_params(directory: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The repository's params with `overrides` merged in, written to directory/params.yaml."""
    params = deep_merge(copy.deepcopy(repo_params()), overrides or {})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


TINY_MATRYOSHKA = {
    "matryoshka": {
        "embedded": {
            "data": {"synthetic": {"facilities": 4, "companies": 2, "questions_per_chunk": 2}},
            "model": {"dims": [384, 128, 32]},
            "train": {"epochs": 1, "batch_size": 8, "logging_steps": 1},
            "evaluate": {"batch_size": 32},
        }
    }
}

TINY_DPR = {
    "dpr": {
        "embedded": {
            "data": {"synthetic": {"facilities": 4, "companies": 2}},
            "train": {"epochs": 1, "batch_size": 8, "logging_steps": 1},
        }
    }
}

TINY_RERANKER = {
    "reranker": {
        "embedded": {
            "data": {"multihop": {"synthetic": {"facilities": 4, "companies": 2}},
                     "factual": {"synthetic": {"facilities": 4, "companies": 2}},
                     "test_size": 0.25},
            "mine": {"candidates": 20, "hard_negatives": 2, "easy_negatives": 1},
            "train": {"stage1": {"epochs": 1}, "stage2": {"epochs": 1}, "batch_size": 8, "logging_steps": 1},
        }
    }
}

TINY_COLBERT = {
    "colbert": {
        "embedded": {
            "data": {"synthetic": {"facilities": 4, "companies": 2, "test_size": 0.25}},
            "model": {"query_length": 24, "document_length": 64},
            "mine": {"candidates": 16, "n_ways": 4, "relative_margin": 0.0},  # the tiny teacher barely trains
            "train": {"epochs": 1, "batch_size": 4, "logging_steps": 1},
            "evaluate": {"pool_factors": [1, 2, 4]},
        }
    }
}
