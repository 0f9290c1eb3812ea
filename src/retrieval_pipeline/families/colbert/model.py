"""The base model as a pylate ColBERT: the family's base encoder with a new projection to the token embedding size."""

from __future__ import annotations

from transformers import set_seed

from retrieval_pipeline.core.models import check_length, device, loading, locate
from retrieval_pipeline.families.colbert import Colbert


def base_colbert(family: Colbert):
    """The base model as a pylate ColBERT; a new projection layer is initialised from the seed."""
    from pylate.models import ColBERT

    params, key = family.params.model, family.key("model.base")
    set_seed(family.params.seed)
    source = locate(params.base, key)
    with loading(key, params.base):
        model = ColBERT(source.location, revision=source.revision, embedding_size=params.embedding_size,
                        query_length=params.query_length, document_length=params.document_length, device=device(),
                        model_kwargs={"use_safetensors": True})
    for length, name in ((params.query_length, "query_length"), (params.document_length, "document_length")):
        check_length(model[0].auto_model, length, family.key(f"model.{name}"))
    return model
