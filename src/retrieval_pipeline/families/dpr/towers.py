"""The dual encoder: a sentence-transformers Router whose query and document routes are independent copies of the
base model, and each route as a model of its own."""

from __future__ import annotations

from retrieval_pipeline.core.models import check_length, device, loading, locate
from retrieval_pipeline.families.dpr import TOWERS, Dpr


def build_towers(base: str, max_seq_length: int | None, key: str, length_key: str):
    """A Router model whose query and document routes are two independent copies of the base model, each
    with mean pooling and L2 normalisation, whatever pooling the base checkpoint itself declares. `key` and
    `length_key` name the params keys of `base` and `max_seq_length` in errors."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Router, Transformer

    source = locate(base, key)

    def tower():
        # each argument dict its own: sentence-transformers adds the maximum length to the tokenizer's in place
        with loading(key, base):
            transformer = Transformer(source.location, max_seq_length=max_seq_length,
                                      model_args={"use_safetensors": True, "revision": source.revision},
                                      tokenizer_args={"revision": source.revision},
                                      config_args={"revision": source.revision})
        check_length(transformer.auto_model, max_seq_length, length_key)
        return [transformer, Pooling(transformer.get_word_embedding_dimension(), "mean"), Normalize()]

    router = Router.for_query_document(query_modules=tower(), document_modules=tower())
    return SentenceTransformer(modules=[router], device=device())


def family_towers(family: Dpr):
    """The untrained two-tower model, built from the family's base model as training starts from it."""
    model = family.params.model
    return build_towers(model.base, model.max_seq_length, family.key("model.base"),
                        family.key("model.max_seq_length"))


def tower_of(model, route: str):
    """One route of a Router model as a standalone SentenceTransformer (shares the weights)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=list(model[0].sub_modules[route]), device=device())


def base_towers(family: Dpr) -> dict:
    """The untrained towers, built exactly as training starts from them (the baseline of mine and evaluate)."""
    model = family_towers(family)
    return {route: tower_of(model, route) for route in TOWERS}
