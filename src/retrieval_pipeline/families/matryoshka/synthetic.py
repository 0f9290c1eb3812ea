"""Matryoshka's synthetic data: the shared world as a question/chunk dataset with the hub dataset's columns."""

from __future__ import annotations

import random

from retrieval_pipeline.core.sources import SyntheticSource
from retrieval_pipeline.core.world import World, build_world, question_about


def synthetic_rows(source: SyntheticSource, seed: int) -> list[dict]:
    """The shared world as a question/chunk dataset with the hub dataset's column names."""
    world = build_world(seed, source.facilities, source.companies)
    return knowledge_base_questions(world, source.questions_per_chunk, seed)


def knowledge_base_questions(world: World, questions_per_chunk: int, seed: int) -> list[dict]:
    """Questions about chunks, several per chunk, each tagged with its chunk's global id."""
    rng = random.Random(seed)
    rows = []
    for chunk in world.chunks:
        askable = [world.facts[fact_id] for fact_id in chunk.fact_ids]
        for fact in rng.sample(askable, min(questions_per_chunk, len(askable))):
            rows.append({"question_id": f"q{len(rows):06d}", "question": question_about(world, fact, rng),
                         "text": chunk.text, "global_chunk_id": chunk.chunk_id})
    return rows
