"""What the documents' padding costs a ColBERT training step: pylate's ColBERTCollator (every document padded to
model.document_length) against the family's TrimmedColBERTCollator, on the same examples and model.

Two groups, each comparing the two collators: the base stage's step (pylate's Contrastive, a batch of claims with
a positive and a negative one-chunk abstract, as `model.pretrain` trains) and the train stage's step (the pooling
distillation, each query with its candidate abstracts at the collection's length). Collation is inside the timed
step, as in the trainer.
"""

from __future__ import annotations

import pytest
import torch
from helpers import split_features

from retrieval_pipeline.core.world import build_world
from retrieval_pipeline.families.colbert.losses import pooling_distillation
from retrieval_pipeline.families.colbert.model import colbert_of_model_base
from retrieval_pipeline.families.colbert.synthetic import claim_collection

BASE_BATCH, QUERIES, N_WAYS = 32, 8, 4
BASE_GROUP = f"colbert base step ({BASE_BATCH} claims, positive and negative one-chunk abstracts)"
TRAIN_GROUP = f"colbert train step ({QUERIES} queries x {N_WAYS} abstracts of the embedded collection)"


@pytest.fixture(scope="module")
def triplets(colbert_family):
    pretrain = colbert_family.params.model.pretrain
    corpus, queries, qrels = claim_collection(build_world(pretrain.world_seed, 16, 4), 1, pretrain.world_seed)
    text_of = {document["_id"]: document["text"] for document in corpus}
    ids = list(text_of)
    return [{"query": query["text"], "positive": text_of[judgement["corpus-id"]],
             "negative": text_of[ids[(ids.index(judgement["corpus-id"]) + 1) % len(ids)]]}
            for query, judgement in zip(queries[:BASE_BATCH], qrels)]


@pytest.fixture(scope="module")
def lists(colbert_family):
    synthetic = colbert_family.params.data.synthetic
    corpus, queries, _ = claim_collection(build_world(0, 16, 4), 1, 0, synthetic.chunks_per_abstract)
    texts = [document["text"] for document in corpus]
    return [{"query": query["text"], "documents": texts[index * N_WAYS:(index + 1) * N_WAYS],
             "scores": [1.0] + [0.0] * (N_WAYS - 1)} for index, query in enumerate(queries[:QUERIES])]


def training_step(model, loss, collator, examples, columns):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step():
        batch = collator(examples)
        loss(split_features(batch, columns), batch.get("label")).backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def collator_of(name: str, model):
    from pylate.utils import ColBERTCollator

    from retrieval_pipeline.families.colbert.collator import TrimmedColBERTCollator

    return {"pylate": ColBERTCollator, "trimmed": TrimmedColBERTCollator}[name](tokenize_fn=model.tokenize)


@pytest.mark.parametrize("collator", ["pylate", "trimmed"])
@pytest.mark.benchmark(group=BASE_GROUP)
def test_base_stage_step(benchmark, colbert_family, triplets, collator):
    from pylate.losses import Contrastive

    model = colbert_of_model_base(colbert_family)
    benchmark.pedantic(training_step(model, Contrastive(model), collator_of(collator, model), triplets,
                                     ("query", "positive", "negative")), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("collator", ["pylate", "trimmed"])
@pytest.mark.benchmark(group=TRAIN_GROUP)
def test_train_stage_step(benchmark, colbert_family, lists, collator):
    model = colbert_of_model_base(colbert_family)
    train = colbert_family.params.train
    loss = pooling_distillation(model, train.pool_factors, colbert_family.params.seed, train.pool_method,
                                colbert_family.params.model.pooling, train.normalize_scores)
    benchmark.pedantic(training_step(model, loss, collator_of(collator, model), lists, ("query", "documents")),
                       rounds=3, warmup_rounds=1)
