"""The ColBERT the recipe fine-tunes: the one the base stage made (data/colbert/base/model/) when model.pretrain
is set, else model.base itself as a pylate ColBERT."""

from __future__ import annotations

from transformers import set_seed

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.models import check_length, device, loading, locate
from retrieval_pipeline.families.colbert import Colbert

BASE_MODEL_FOLDER = "model"  # inside the base stage's output, when it trained one


def colbert_of_model_base(family: Colbert):
    """model.base as a pylate ColBERT: a ColBERT as it is; a sentence embedder gets a new projection to the token
    embedding size, initialised from the seed."""
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


def base_colbert(family: Colbert):
    """The ColBERT fine-tuning starts from and is measured against."""
    from pylate.models import ColBERT

    params = family.params.model
    if params.pretrain is None:
        return colbert_of_model_base(family)
    made_here = family.paths.base / BASE_MODEL_FOLDER
    if not made_here.is_dir():
        raise DataError(f"{made_here}: missing; {family.key('model.pretrain')} is set, so the ColBERT to fine-tune "
                        f"is the base stage's (`dvc repro base@{family.name}`)")
    set_seed(family.params.seed)
    return ColBERT(str(made_here), embedding_size=params.embedding_size, query_length=params.query_length,
                   document_length=params.document_length, device=device(), model_kwargs={"use_safetensors": True})
