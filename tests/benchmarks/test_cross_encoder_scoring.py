"""Scoring a reranker's candidate lists: the family's path (pairs sorted by length, so each batch pads to nearly
its own length) against CrossEncoder.predict on the pairs as they come. Same model, same pairs, same batch size;
compare the two in the `--benchmark-group-by=group` table."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import FamilyStages, write_params

from retrieval_pipeline.families.reranker.features import model_input
from retrieval_pipeline.families.reranker.ranking import candidate_lists
from retrieval_pipeline.families.reranker.scoring import predict
from retrieval_pipeline.families.reranker.train import base_cross_encoder

GROUP = "reranker scoring of the test candidates"


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """The embedded profile's reranker data as `dvc repro` builds it: its test candidate lists are what the train
    stage scores with every checkpoint."""
    root = tmp_path_factory.mktemp("bench")
    write_params(root)
    family = FamilyStages("reranker", root)
    family.prepare()
    family.mine()
    return family


@pytest.fixture(scope="module")
def model(family):
    return base_cross_encoder(family.params.model.base, family.params.model.max_length, None, family.params.seed,
                              family.family.key("model.base"), family.family.key("model.max_length"))


@pytest.fixture(scope="module")
def candidates(family):
    lists, _ = candidate_lists(family.stage("baseline"), "test")
    return pl.concat(list(lists.values()))


@pytest.fixture(scope="module")
def pairs(candidates):
    """The candidates as (query, sentence) pairs, the input the family builds for a checkpoint without features."""
    return [(model_input(query, None), sentence) for query, sentence in candidates.select("query", "sentence").rows()]


@pytest.mark.benchmark(group=GROUP)
def test_family_scoring_shortest_first(benchmark, family, model, candidates, pairs):
    scores = benchmark.pedantic(predict, args=(family.stage("train"), model, False, candidates), rounds=2,
                                warmup_rounds=0)
    benchmark.extra_info["pairs"] = candidates.height
    as_given = model.predict(pairs[:256], batch_size=family.params.evaluate.batch_size)
    assert np.allclose(scores[:256], as_given, atol=1e-5)  # the same scores, in the same order


@pytest.mark.benchmark(group=GROUP)
def test_cross_encoder_predict_as_given(benchmark, family, model, pairs):
    benchmark.pedantic(model.predict, args=(pairs,), kwargs={"batch_size": family.params.evaluate.batch_size},
                       rounds=2, warmup_rounds=0)
    benchmark.extra_info["pairs"] = len(pairs)
