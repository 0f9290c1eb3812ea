"""The training batches of the base and train stages: pylate's ColBERTCollator without the documents' dead padding.

pylate's collator tokenizes every column with `pad=True`, so each document is padded to model.document_length
(equal shapes are what gathering embeddings across devices needs). Neither loss here gathers (pylate's Contrastive
without `gather_across_devices`, and Distillation), and both mask the padding out of every score, so the trailing
positions that are padding in every document of a batch are cut: the same tokens, masks and scores, for a fraction
of the encoder's work where documents are short (the base stage's one-chunk abstracts are ~50 tokens, padded to
256 before). Queries keep their padding: with query expansion their [MASK] positions are scored.
"""

from __future__ import annotations

import torch
from pylate.utils import ColBERTCollator


def is_query_column(column: str) -> bool:
    """pylate's own test of which columns the collator tokenizes as queries."""
    return "query" in column or "anchor" in column


class TrimmedColBERTCollator(ColBERTCollator):
    """ColBERTCollator whose document columns end at the last position any document of the batch uses."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        documents = [key.removesuffix("_attention_mask") for key in batch
                     if key.endswith("_attention_mask") and not is_query_column(key.removesuffix("_attention_mask"))]
        if not documents:
            return batch
        used = torch.stack([batch[f"{column}_attention_mask"].bool().any(dim=0) for column in documents]).any(dim=0)
        width = int(used.nonzero().max()) + 1 if used.any() else 1
        for key in list(batch):
            if any(key.startswith(f"{column}_") for column in documents) and isinstance(batch[key], torch.Tensor) \
                    and batch[key].dim() == 2:
                batch[key] = batch[key][:, :width]
        return batch
