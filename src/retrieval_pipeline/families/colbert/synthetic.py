"""ColBERT's synthetic data: the shared world as a SciFact-like collection of abstracts and claims."""

from __future__ import annotations

import random

from retrieval_pipeline.core.world import ATTRIBUTE_BY_KEY, Chunk, World


def abstracts(world: World, chunks_per_abstract: int) -> list[list[Chunk]]:
    """Each entity's chunks in order, grouped `chunks_per_abstract` at a time: the register as abstract-length
    documents of a few hundred tokens, as SciFact's are."""
    by_entity: dict[str, list[Chunk]] = {}
    for chunk in world.chunks:
        by_entity.setdefault(chunk.document_id, []).append(chunk)
    return [chunks[start:start + chunks_per_abstract] for chunks in by_entity.values()
            for start in range(0, len(chunks), chunks_per_abstract)]


def claim_collection(world: World, claims_per_abstract: int, seed: int,
                     chunks_per_abstract: int = 1) -> tuple[list[dict], list[dict], list[dict]]:
    """A SciFact-like collection in BEIR form: corpus (_id, title, text), queries (_id, text) and qrels
    (query-id, corpus-id, score). Each abstract is `chunks_per_abstract` consecutive chunks of one entity; each
    claim asserts one of its facts, naming the entity by one of its aliases."""
    rng = random.Random(seed)
    corpus, queries, qrels = [], [], []
    for chunks in abstracts(world, chunks_per_abstract):
        document_id = f"doc{chunks[0].chunk_id:05d}"
        name = world.entities[chunks[0].document_id].name
        corpus.append({"_id": document_id, "title": f"{name}: {', '.join(chunk.section for chunk in chunks)}",
                       "text": " ".join(chunk.text for chunk in chunks)})
        facts = [world.facts[fact_id] for chunk in chunks for fact_id in chunk.fact_ids]
        for fact in rng.sample(facts, min(claims_per_abstract, len(facts))):
            alias = rng.choice(world.entities[fact.subject].aliases)
            query_id = f"claim{len(queries):05d}"
            claim = rng.choice(ATTRIBUTE_BY_KEY[fact.attribute].claims)
            queries.append({"_id": query_id, "text": claim.format(alias=alias, value=fact.value)})
            qrels.append({"query-id": query_id, "corpus-id": document_id, "score": 1})
    return corpus, queries, qrels
