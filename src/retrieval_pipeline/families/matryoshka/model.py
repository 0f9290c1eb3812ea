"""The base model (or a checkpoint) as a sentence-transformers model, checked against the params' dims."""

from __future__ import annotations

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.models import check_length, load_sentence_transformer
from retrieval_pipeline.families.matryoshka import Matryoshka


def check_dims(model, dims: list[int], model_name: str, key: str) -> None:
    size = model.get_sentence_embedding_dimension()
    if max(dims) > size:
        raise DataError(f"{key}: {max(dims)} is larger than the embedding size {size} of {model_name}; expected "
                        f"dims <= {size}")


def load_model(family: Matryoshka, reference: str, name: str):
    """A sentence-transformers model from safetensors, its length set and its size checked against the dims."""
    model_params = family.params.model
    key = family.key("model.base") if reference == model_params.base else reference
    model = load_sentence_transformer(reference, key, trust_remote_code=model_params.trust_remote_code)
    if model_params.max_seq_length:
        check_length(model[0].auto_model, model_params.max_seq_length, family.key("model.max_seq_length"))
        model.max_seq_length = model_params.max_seq_length
    check_dims(model, model_params.dims, name, family.key("model.dims"))
    return model
