"""Cross-encoders (one logit per (query, text) pair) as the reranker family trains them and ColBERT's teacher is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import set_seed

from retrieval_pipeline.core.models import check_length, device, loading, locate
from retrieval_pipeline.core.training import shared_arguments


def new_cross_encoder(reference: str, key: str, max_length: int, seed: int, length_key: str = "max_length"):
    """The encoder of `reference` with a freshly initialised one-logit head, seeded; `length_key` names the params
    key of `max_length` in errors."""
    from sentence_transformers.cross_encoder import CrossEncoder

    source = locate(reference, key)
    set_seed(seed)
    with loading(key, reference):
        model = CrossEncoder(source.location, revision=source.revision, num_labels=1, max_length=max_length,
                             device=device(), model_kwargs={"use_safetensors": True})
    check_length(model.model, max_length, length_key)
    return model


def load_cross_encoder(reference: str, key: str, max_length: int | None = None):
    from sentence_transformers.cross_encoder import CrossEncoder

    source = locate(reference, key)
    with loading(key, reference):
        return CrossEncoder(source.location, revision=source.revision, max_length=max_length, device=device(),
                            model_kwargs={"use_safetensors": True})


def shortest_first(items: list, lengths: list[int], score) -> np.ndarray:
    """`score` of the items handed over shortest first, so that each batch pads to nearly its own length, and
    returned in the items' own order."""
    order = np.argsort(lengths, kind="stable")
    scores = np.empty(len(items), dtype=np.float32)
    if items:
        scores[order] = np.asarray(score([items[i] for i in order]), dtype=np.float32).reshape(len(items))
    return scores


def predict_pairs(model, pairs: list[tuple[str, str]], batch_size: int, activation_fn=None) -> np.ndarray:
    """The model's score of every (query, text) pair, in the pairs' order, scored shortest first
    (CrossEncoder.predict batches them as given; tests/benchmarks/test_cross_encoder_scoring.py compares the two)."""
    return shortest_first(pairs, [len(query) + len(text) for query, text in pairs],
                          lambda ordered: model.predict(ordered, batch_size=batch_size, activation_fn=activation_fn,
                                                        show_progress_bar=True))


def binary_trainer(model, pairs, output_dir: Path, *, epochs: int, learning_rate: float, batch_size: int,
                   pos_weight: float, seed: int, bf16: bool, warmup_ratio: float, weight_decay: float = 0.01,
                   logging_steps: int = 10):
    """A trainer for binary cross-entropy with logits over (query, text, label) pairs, weighting positives."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    args = CrossEncoderTrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, learning_rate=learning_rate,
        per_device_train_batch_size=batch_size, weight_decay=weight_decay, save_strategy="no",
        logging_steps=logging_steps, **shared_arguments(seed, bf16, warmup_ratio))
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(pos_weight))
    return CrossEncoderTrainer(model=model, args=args, train_dataset=pairs, loss=loss)
