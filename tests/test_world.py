from __future__ import annotations

import re

from retrieval_pipeline.core.world import build_world
from retrieval_pipeline.families.matryoshka.synthetic import knowledge_base_questions


def test_same_seed_and_sizes_give_the_same_world_and_questions():
    first = knowledge_base_questions(build_world(3, 10, 3), 3, 3)
    second = knowledge_base_questions(build_world(3, 10, 3), 3, 3)
    assert first == second
    assert knowledge_base_questions(build_world(4, 10, 3), 3, 4) != first


def test_every_chunk_gets_several_questions_tagged_with_its_global_id():
    world = build_world(0, 8, 2)
    rows = knowledge_base_questions(world, 3, 0)
    chunk_text = {chunk.chunk_id: chunk.text for chunk in world.chunks}
    assert {row["global_chunk_id"] for row in rows} == set(chunk_text)
    assert all(row["text"] == chunk_text[row["global_chunk_id"]] for row in rows)
    per_chunk = {}
    for row in rows:
        per_chunk[row["global_chunk_id"]] = per_chunk.get(row["global_chunk_id"], 0) + 1
    sections = {chunk.chunk_id: chunk.section for chunk in world.chunks}
    assert all(count == 3 for chunk, count in per_chunk.items() if sections[chunk] not in ("Overview",))
    assert len({row["question_id"] for row in rows}) == len(rows)


def test_acronyms_are_defined_only_in_the_overview_chunk():
    world = build_world(1, 12, 3)
    for entity in (e for e in world.entities.values() if e.kind == "facility"):
        acronym = entity.aliases[2]
        mentions = [c.section for c in world.chunks if re.search(rf"\b{acronym}\b", c.text)]
        assert mentions == ["Overview"], (entity.name, mentions)


def test_questions_paraphrase_rather_than_copy_the_chunk():
    world = build_world(2, 12, 3)
    rows = knowledge_base_questions(world, 3, 2)
    def words(text):
        return set(re.findall(r"[a-z]+", text.lower()))
    overlap = [len(words(r["question"]) & words(r["text"])) / len(words(r["question"])) for r in rows]
    assert sum(overlap) / len(overlap) < 0.6
    uses_alias = sum("asset " in r["question"] or bool(re.search(r"\b[A-Z]{3,}\b", r["question"])) for r in rows)
    assert uses_alias > len(rows) // 5


def test_near_duplicate_distractors_share_name_parts_and_sections():
    world = build_world(5, 48, 8)
    facilities = [e for e in world.entities.values() if e.kind == "facility"]
    first_words = [f.name.split()[0] for f in facilities]
    assert len(set(first_words)) < len(first_words)
    safety = [c for c in world.chunks if c.section == "Safety"]
    assert len(safety) == len(facilities)
