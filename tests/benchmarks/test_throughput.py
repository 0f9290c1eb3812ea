"""Throughput of the family's training step and encoding path against a bare sentence-transformers loop.

Both sides work on the same batch; compare them in the `--benchmark-group-by=group` table.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch
from helpers import TINY_MATRYOSHKA, write_params

from retrieval_pipeline.core.params import deep_merge
from retrieval_pipeline.core.stage import load_family
from retrieval_pipeline.families.matryoshka import rank_at_dims

BATCH = 32


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    params = write_params(root, deep_merge(TINY_MATRYOSHKA, {"matryoshka": {"embedded": {
        "train": {"batch_size": BATCH}, "data": {"synthetic": {"facilities": 8}}}}}))
    family = load_family("matryoshka", params, root)
    family.prepare()
    return family


@pytest.fixture(scope="module")
def pairs(family):
    """One batch of pairs with distinct texts, so the no-duplicates sampler keeps all of them."""
    train = pl.read_parquet(family.paths.prepared / "train.parquet")
    distinct = train.unique("positive", keep="first", maintain_order=True) \
        .unique("anchor", keep="first", maintain_order=True)
    return distinct.head(BATCH).select("anchor", "positive")


def fresh_model(family):
    return family.load_model(family.params.model.base, "the base model")


@pytest.mark.benchmark(group="train step (batch 32)")
def test_family_training_step(benchmark, family, pairs, tmp_path):
    from datasets import Dataset

    model = fresh_model(family)
    trainer = family.build_trainer(model, tmp_path / "checkpoints")
    trainer.train_dataset = Dataset.from_polars(pairs)
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["anchor_input_ids"].shape[0] == BATCH

    def step():
        trainer.compute_loss(trainer.model, batch).backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="train step (batch 32)")
def test_bare_training_step(benchmark, family, pairs):
    from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    model = fresh_model(family)
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), family.params.model.dims)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)

    def step():
        features = [model.tokenize(pairs["anchor"].to_list()), model.tokenize(pairs["positive"].to_list())]
        loss(features, None).backward()
        optimizer.step()
        optimizer.zero_grad()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.fixture(scope="module")
def texts(family):
    queries, corpus, _ = family.held_out("test")
    return queries, corpus


@pytest.mark.benchmark(group="encode queries + corpus")
def test_family_encoding_and_ranking(benchmark, family, minilm, texts):
    queries, corpus = texts
    benchmark.pedantic(rank_at_dims, args=(minilm, queries, corpus, family.params.model.dims, BATCH, 100),
                       rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group="encode queries + corpus")
def test_bare_encoding(benchmark, minilm, texts):
    queries, corpus = texts

    def encode():
        minilm.encode(corpus["text"].to_list(), batch_size=BATCH)
        minilm.encode(queries["text"].to_list(), batch_size=BATCH)

    benchmark.pedantic(encode, rounds=3, warmup_rounds=1)
