"""Cross-encoders (one logit per (query, text) pair) loaded and scored, as the reranker family scores its checkpoints
and ColBERT's teacher scores candidates."""

from __future__ import annotations

import numpy as np

from retrieval_pipeline.core.models import device, loading, locate


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
