"""The reranker's synthetic data: multi-hop (bridge) and factual questions over the shared world, with contexts
in TIGER-Lab/LongRAG's layout."""

from __future__ import annotations

import random

from retrieval_pipeline.core.world import World, build_world, question_about
from retrieval_pipeline.families.reranker.params import SyntheticQuestions

# Multi-hop questions go from a facility to its operator and ask about the operator,
# so the answer sits in a passage that never names the facility (HotpotQA's "bridge" type).
BRIDGE_QUESTIONS = {
    "chief_executive": ("Who is the chief executive of the company that operates {alias}?",
                        "Who leads the firm that runs {alias}?"),
    "headquarters": ("In which town does the operator of {alias} have its head office?",
                     "Where is the company behind {alias} based?"),
    "founded": ("In what year was the company that operates {alias} incorporated?",
                "When was the operating firm of {alias} founded?"),
}
# Single-hop questions ask only for values that are rare in the world, so that "the sentence
# contains the answer string" (NQ's positive rule) mostly picks the sentence that states the fact.
FACTUAL_ATTRIBUTES = ("rated_output", "max_pressure", "licence", "headcount", "chief_engineer", "discharge_limit",
                      "shutdown_trigger", "noise_limit")


def document_text(world: World, entity_id: str) -> str:
    """All chunks of one entity as a single document, as LongRAG groups Wikipedia pages."""
    return " ".join(chunk.text for chunk in world.chunks if chunk.document_id == entity_id)


def _context(world: World, entity_ids: list[str]) -> tuple[list[str], str]:
    """LongRAG's layout: the documents concatenated, each opening with its title on a line of its own."""
    titles = [world.entities[entity_id].name for entity_id in entity_ids]
    text = "\n\n".join(f"{title}\n{document_text(world, entity_id)}" for title, entity_id in zip(titles, entity_ids))
    return titles, text


def multihop_questions(world: World, questions_per_facility: int, seed: int) -> list[dict]:
    """Bridge questions with LongRAG `hotpot_qa` columns; `sp` holds the two supporting titles.

    Each context holds the facility, its operator, another facility of the same operator
    (it names the bridge entity too), another company and a random facility, shuffled.
    """
    rng = random.Random(seed)
    facilities = [e for e in world.entities.values() if e.kind == "facility"]
    companies = [e for e in world.entities.values() if e.kind == "company"]
    operator_of = {fact.subject: fact.value_entity for fact in world.facts.values() if fact.attribute == "operator"}
    rows = []
    for facility in facilities:
        company = world.entities[operator_of[facility.entity_id]]
        siblings = [f for f in facilities if f is not facility and operator_of[f.entity_id] == company.entity_id]
        others = [c for c in companies if c is not company]
        strangers = [f for f in facilities if f is not facility and f not in siblings]
        distractors = [rng.choice(pool).entity_id for pool in (siblings, others, strangers) if pool]
        for key in rng.sample(sorted(BRIDGE_QUESTIONS), min(questions_per_facility, len(BRIDGE_QUESTIONS))):
            documents = [facility.entity_id, company.entity_id, *distractors]
            rng.shuffle(documents)
            titles, context = _context(world, documents)
            alias = rng.choice(facility.aliases)
            rows.append({"query_id": len(rows), "query": rng.choice(BRIDGE_QUESTIONS[key]).format(alias=alias),
                         "answer": [world.facts[f"{company.entity_id}:{key}"].value],
                         "sp": [facility.name, company.name], "type": "bridge",
                         "context_titles": titles, "context": context})
    return rows


def factual_questions(world: World, questions_per_facility: int, distractors: int, seed: int) -> list[dict]:
    """Single-hop questions with LongRAG `nq` columns: the answer strings and a context of documents."""
    rng = random.Random(seed)
    facilities = [e for e in world.entities.values() if e.kind == "facility"]
    rows = []
    for facility in facilities:
        for key in rng.sample(FACTUAL_ATTRIBUTES, min(questions_per_facility, len(FACTUAL_ATTRIBUTES))):
            fact = world.facts[f"{facility.entity_id}:{key}"]
            others = rng.sample([f.entity_id for f in facilities if f is not facility],
                                min(distractors, len(facilities) - 1))
            documents = [facility.entity_id, *others]
            rng.shuffle(documents)
            titles, context = _context(world, documents)
            rows.append({"query_id": f"nq-{len(rows):05d}", "query": question_about(world, fact, rng),
                         "answer": [fact.value], "context_titles": titles, "context": context})
    return rows


def synthetic_multihop(source: SyntheticQuestions, seed: int) -> list[dict]:
    world = build_world(seed, source.facilities, source.companies)
    return multihop_questions(world, source.questions_per_facility, seed)


def synthetic_factual(source: SyntheticQuestions, seed: int) -> list[dict]:
    world = build_world(seed, source.facilities, source.companies)
    return factual_questions(world, source.questions_per_facility, source.distractors, seed + 1)


SYNTHETIC = {"multihop": synthetic_multihop, "factual": synthetic_factual}
