"""DPR's synthetic data: claims and evidence from the shared world, with pietrolesci/nli_fever's columns."""

from __future__ import annotations

import random

from retrieval_pipeline.core.sources import SyntheticSource
from retrieval_pipeline.core.world import ATTRIBUTE_BY_KEY, Fact, World, build_world


def synthetic_rows(source: SyntheticSource, seed: int) -> list[dict]:
    """Claims and evidence from the shared world, with pietrolesci/nli_fever's columns and labels."""
    return fever_claims(build_world(seed, source.facilities, source.companies), seed)


def evidence_passage(world: World, fact: Fact) -> str:
    """One fact in the register's formal wording, as a retrievable evidence passage."""
    subject = world.entities[fact.subject]
    attribute = ATTRIBUTE_BY_KEY[fact.attribute]
    return f"{subject.name} ({attribute.section}). " + attribute.statement.format(name=subject.name, value=fact.value)


def fever_claims(world: World, seed: int, other_label_rate: float = 0.5) -> list[dict]:
    """FEVER-style rows with nli_fever's columns: premise = claim, hypothesis = evidence passage.

    Each fact gets one supported claim (label 0); about `other_label_rate` of the facts also get
    a neutral row (1: the passage states another fact of the subject) and a refuted row
    (2: the claim gives the value of the same attribute of another subject).
    """
    rng = random.Random(seed)
    by_attribute: dict[str, list[Fact]] = {}
    for fact in world.facts.values():
        by_attribute.setdefault(fact.attribute, []).append(fact)
    rows: list[dict] = []

    def claim(fact: Fact, value: str) -> str:
        alias = rng.choice(world.entities[fact.subject].aliases)
        return rng.choice(ATTRIBUTE_BY_KEY[fact.attribute].claims).format(alias=alias, value=value)

    def add(fact: Fact, premise: str, hypothesis: str, label: int) -> None:
        gold = ("SUPPORTS", "NOT ENOUGH INFO", "REFUTES")[label]
        rows.append({"cid": len(rows), "fid": fact.fact_id, "premise": premise, "hypothesis": hypothesis,
                     "verifiable": int(label != 1), "fever_gold_label": gold, "label": label})

    for fact in world.facts.values():
        evidence = evidence_passage(world, fact)
        add(fact, claim(fact, fact.value), evidence, 0)
        if rng.random() < other_label_rate:
            siblings = [f for f in world.facts.values() if f.subject == fact.subject and f is not fact]
            if siblings:
                sibling = rng.choice(siblings)
                add(fact, claim(sibling, sibling.value), evidence, 1)
            rivals = [f for f in by_attribute[fact.attribute] if f.value != fact.value]
            if rivals:
                add(fact, claim(fact, rng.choice(rivals).value), evidence, 2)
    return rows
