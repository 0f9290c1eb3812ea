"""A deterministic fictional domain shared by every family's synthetic data.

The world is a regional register of infrastructure facilities, the companies
that operate them and the engineers who run them. Every statement in it is a
typed fact, so each family can render the same facts in its own form: chunks
and questions (matryoshka), claims with evidence (dpr), abstracts (colbert) and
questions that hop from a facility to its operator (reranker).

What makes the retrieval task realistic is the vocabulary gap: chunks state a
fact in the register's formal wording under a facility's full name, while
questions use synonyms, abbreviations (MOP, ESD) and the facility's acronym or
asset tag, which only its overview chunk defines. Facilities share name parts
and every facility has the same sections, so each chunk has near-duplicate
distractors that differ only in the entity and the values.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

PREFIXES = (
    "Kestrel", "Osprey", "Heron", "Marlin", "Juniper", "Basalt", "Cobalt", "Falcon",
    "Granite", "Harrier", "Larch", "Merlin", "Nettle", "Orchid", "Plover", "Quarry",
    "Raven", "Sorrel", "Tansy", "Umber", "Vetch", "Willow", "Yarrow", "Zephyr",
)
PLACES = ("Valley", "Ridge", "Harbour", "Point", "Fen", "Moor", "Crossing", "Bay", "Heath", "Downs")
REGIONS = (
    "the Northern Estuary district", "the Upper Marrow basin", "the Coastal Flats",
    "the Eastern Uplands", "the Lower Tarn corridor", "the Southern Reach",
)
CITIES = ("Port Averly", "Danholm", "Kirkwell", "Sallow Cross", "Bramford", "Ostwick", "Lyndale", "Tarnmouth")
ORG_STEMS = ("Meridian", "Northgate", "Bluewater", "Ironbridge", "Sable", "Highmoor", "Greyfield", "Ashcombe",
             "Cinderford", "Halvard", "Stonecroft", "Wrenfield")
ORG_SUFFIXES = ("Utilities", "Infrastructure Group", "Energy Partners", "Operations Ltd")
REGULATORS = (
    "the Regional Safety Directorate", "the Water Standards Commission",
    "the Energy Licensing Authority", "the Inland Environment Agency",
)
GIVEN_NAMES = ("Amara", "Bastian", "Celia", "Dmitri", "Elsbeth", "Farid", "Greta", "Hugo", "Ines", "Jonah",
               "Katya", "Lionel", "Maren", "Niall", "Odile", "Pavel", "Rosalind", "Soren", "Tamsin", "Viggo")
FAMILY_NAMES = ("Achterberg", "Brannock", "Castellan", "Drummond", "Eskildsen", "Fairweather", "Galloway",
                "Hartigan", "Ivanova", "Jessop", "Kowalczyk", "Lindqvist", "Montague", "Northcott")
CERTIFICATES = ("Level 3 Process Control", "Confined Space Entry", "High Voltage Authorisation",
                "Pressure Systems Competence", "Hazardous Substances Handling")


@dataclass(frozen=True)
class Kind:
    name: str
    short: str
    output_unit: str
    output_range: tuple[int, int]


KINDS = (
    Kind("Desalination Plant", "plant", "megalitres of fresh water per day", (20, 400)),
    Kind("Wind Farm", "wind farm", "megawatts of generating capacity", (40, 900)),
    Kind("Data Centre", "data centre", "megawatts of IT load", (5, 120)),
    Kind("Rail Depot", "depot", "train sets serviced per week", (10, 90)),
    Kind("Hydro Station", "dam", "megawatts of hydroelectric capacity", (15, 600)),
    Kind("Treatment Works", "works", "megalitres of treated water per day", (30, 500)),
)


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how the register states it and how people ask about it."""

    key: str
    section: str
    statement: str  # formal wording in a chunk; {name} and {value}
    questions: tuple[str, ...]  # informal wording; {alias}
    claims: tuple[str, ...]  # an assertion of the fact; {alias} and {value}


ATTRIBUTES = (
    Attribute("rated_output", "Operations", "The rated output of {name} is {value}.",
              ("How much can {alias} produce at full capacity?", "What is the nameplate throughput of {alias}?",
               "What capacity figure is quoted for {alias}?"),
              ("{alias} can deliver {value} when running flat out.",)),
    Attribute("commissioned", "Operations", "{name} was commissioned in {value}.",
              ("When did {alias} first enter service?", "In what year did {alias} start operating?",
               "How long has {alias} been running, i.e. since when?"),
              ("{alias} has been in service since {value}.",)),
    Attribute("shift_pattern", "Operations", "Staff at {name} work a roster of {value}.",
              ("What rota do crews follow at {alias}?", "How is the working day split into shifts at {alias}?"),
              ("Crews at {alias} follow a rota of {value}.",)),
    Attribute("max_pressure", "Safety", "The maximum operating pressure permitted at {name} is {value}.",
              ("What is the MOP at {alias}?", "What's the highest pressure {alias} may run at?",
               "Upper pressure limit for {alias}?"),
              ("The MOP at {alias} is {value}.",)),
    Attribute("shutdown_trigger", "Safety", "An emergency shutdown is initiated at {name} when {value}.",
              ("What trips the ESD at {alias}?", "What makes {alias} halt automatically in an emergency?"),
              ("The ESD at {alias} trips when {value}.",)),
    Attribute("inspection_interval", "Safety", "Pressure vessels at {name} are examined {value}.",
              ("How often are the tanks and boilers at {alias} checked?", "What is the inspection cadence at {alias}?"),
              ("Vessels at {alias} get checked {value}.",)),
    Attribute("discharge_limit", "Environment", "{name} may release no more than {value} into receiving waters.",
              ("What is the effluent cap for {alias}?", "How much can {alias} let out into the river or sea?"),
              ("{alias} is allowed to discharge up to {value}.",)),
    Attribute("noise_limit", "Environment", "Noise from {name} must stay below {value}.",
              ("How loud may {alias} be at its perimeter?", "What sound level ceiling applies to {alias}?"),
              ("{alias} must keep its noise under {value}.",)),
    Attribute("sampling_frequency", "Environment", "Environmental sampling around {name} takes place {value}.",
              ("How often are env samples collected near {alias}?", "What is the monitoring schedule at {alias}?"),
              ("Samples around {alias} are taken {value}.",)),
    Attribute("operator", "Governance", "{name} is operated by {value}.",
              ("Which company runs {alias}?", "Who is the operating firm behind {alias}?"),
              ("{alias} is run by {value}.",)),
    Attribute("regulator", "Governance", "Oversight of {name} rests with {value}.",
              ("Which authority supervises {alias}?", "Who is the watchdog for {alias}?"),
              ("{alias} answers to {value}.",)),
    Attribute("licence", "Governance", "{name} holds operating licence {value}.",
              ("What permit number was issued to {alias}?", "Under which licence ID does {alias} work?"),
              ("{alias} works under permit {value}.",)),
    Attribute("headcount", "Staffing", "{name} employs {value} permanent staff.",
              ("How many people work at {alias}?", "What is the workforce size at {alias}?"),
              ("{alias} has a workforce of {value}.",)),
    Attribute("chief_engineer", "Staffing", "The chief engineer at {name} is {value}.",
              ("Who heads engineering at {alias}?", "Which engineer leads technical work at {alias}?"),
              ("{value} leads engineering at {alias}.",)),
    Attribute("certificate", "Staffing", "Control room operators at {name} must hold the {value} certificate.",
              ("Which qualification do console staff at {alias} need?", "What ticket must operators at {alias} carry?"),
              ("Console staff at {alias} need the {value} ticket.",)),
    Attribute("region", "Overview", "{name} is located in {value}.",
              ("Where is {alias} located?", "In which district does {alias} sit?"),
              ("{alias} lies in {value}.",)),
    Attribute("headquarters", "Profile", "{name} has its head office in {value}.",
              ("Where is {alias} based?", "In which town is {alias} headquartered?"),
              ("{alias} is based in {value}.",)),
    Attribute("founded", "Profile", "{name} was incorporated in {value}.",
              ("When was {alias} set up?", "What year was {alias} founded?"),
              ("{alias} was founded in {value}.",)),
    Attribute("chief_executive", "Profile", "The chief executive of {name} is {value}.",
              ("Who is the CEO of {alias}?", "Who runs {alias} at board level?"),
              ("{value} is the boss of {alias}.",)),
)
ATTRIBUTE_BY_KEY = {attribute.key: attribute for attribute in ATTRIBUTES}
FACILITY_SECTIONS = ("Operations", "Safety", "Environment", "Governance", "Staffing")


@dataclass(frozen=True)
class Entity:
    entity_id: str
    kind: str  # "facility" or "company"
    name: str
    aliases: tuple[str, ...]  # ways questions refer to it, hardest last


@dataclass(frozen=True)
class Fact:
    fact_id: str
    subject: str  # entity_id
    attribute: str
    value: str
    value_entity: str | None = None  # entity_id when the value is itself an entity


@dataclass(frozen=True)
class Chunk:
    chunk_id: int
    document_id: str
    section: str
    text: str
    fact_ids: tuple[str, ...]


@dataclass(frozen=True)
class World:
    entities: dict[str, Entity]
    facts: dict[str, Fact]
    chunks: tuple[Chunk, ...]


LICENCE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"


def _unique(rng: random.Random, make: Callable[[], str], taken: set[str]) -> str:
    for _ in range(10_000):
        candidate = make()
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise ValueError("the synthetic world ran out of distinct names; ask for fewer entities")


def _acronym(name: str) -> str:
    return "".join(word[0] for word in name.split() if word[0].isupper())


def _facility_values(rng: random.Random, kind: Kind, company: Entity, engineer: str) -> dict[str, str]:
    return {
        "rated_output": f"{rng.randint(*kind.output_range)} {kind.output_unit}",
        "commissioned": str(rng.randint(1962, 2023)),
        "shift_pattern": rng.choice(("three eight-hour shifts", "two twelve-hour shifts",
                                     "four crews on a continental rotation", "a day shift with on-call cover")),
        "max_pressure": f"{rng.randint(4, 160)} bar",
        "shutdown_trigger": rng.choice((
            f"bearing vibration exceeds {rng.randint(5, 30)} mm/s",
            f"coolant temperature passes {rng.randint(70, 140)} degrees Celsius",
            f"line pressure drops below {rng.randint(1, 9)} bar",
            f"gas detectors read above {rng.randint(10, 40)} percent of the lower explosive limit",
        )),
        "inspection_interval": rng.choice(("every 6 months", "every 12 months", "every 18 months",
                                           "every 24 months", "every quarter")),
        "discharge_limit": f"{rng.randint(2, 90)} milligrams of "
                           f"{rng.choice(('chloride', 'nitrate', 'suspended solids', 'copper'))} per litre",
        "noise_limit": f"{rng.randint(35, 65)} decibels at the site boundary",
        "sampling_frequency": rng.choice(("weekly", "fortnightly", "monthly", "every quarter", "twice a year")),
        "operator": company.name,
        "regulator": rng.choice(REGULATORS),
        "licence": f"{rng.choice(LICENCE_LETTERS)}{rng.choice(LICENCE_LETTERS)}-{rng.randint(1000, 9999)}",
        "headcount": str(rng.randint(12, 640)),
        "chief_engineer": engineer,
        "certificate": rng.choice(CERTIFICATES),
    }


def build_world(seed: int, facilities: int, companies: int) -> World:
    """Build the world: the same seed and sizes always give the same world."""
    if facilities < 1 or companies < 1:
        raise ValueError("the synthetic world needs at least one facility and one company")
    rng = random.Random(seed)
    taken: set[str] = set()
    people: set[str] = set()

    def person() -> str:
        return _unique(rng, lambda: f"{rng.choice(GIVEN_NAMES)} {rng.choice(FAMILY_NAMES)}", people)

    entities: dict[str, Entity] = {}
    facts: dict[str, Fact] = {}
    chunks: list[Chunk] = []

    def add_fact(subject: str, attribute: str, value: str, value_entity: str | None = None) -> str:
        fact_id = f"{subject}:{attribute}"
        facts[fact_id] = Fact(fact_id, subject, attribute, value, value_entity)
        return fact_id

    def add_chunk(document_id: str, section: str, text: str, fact_ids: tuple[str, ...]) -> None:
        chunks.append(Chunk(len(chunks), document_id, section, text, fact_ids))

    company_entities = []
    for index in range(companies):
        name = _unique(rng, lambda: f"{rng.choice(ORG_STEMS)} {rng.choice(ORG_SUFFIXES)}", taken)
        company = Entity(f"company-{index:03d}", "company", name, (name, name.split()[0]))
        entities[company.entity_id] = company
        company_entities.append(company)
        values = {"headquarters": rng.choice(CITIES), "founded": str(rng.randint(1921, 2015)),
                  "chief_executive": person()}
        fact_ids = tuple(add_fact(company.entity_id, key, value) for key, value in values.items())
        text = f"{name}. " + " ".join(
            ATTRIBUTE_BY_KEY[key].statement.format(name=name, value=value) for key, value in values.items())
        add_chunk(company.entity_id, "Profile", text, fact_ids)

    for index in range(facilities):
        kind = rng.choice(KINDS)
        name = _unique(rng, lambda kind=kind: f"{rng.choice(PREFIXES)} {rng.choice(PLACES)} {kind.name}", taken)
        acronym = _acronym(name)
        tag = f"{acronym[:2]}-{rng.randint(100, 999)}"
        facility = Entity(f"facility-{index:03d}", "facility", name,
                          (name, f"the {name.split()[0]} {kind.short}", acronym, f"asset {tag}"))
        entities[facility.entity_id] = facility
        region = rng.choice(REGIONS)
        overview_facts = (add_fact(facility.entity_id, "region", region),)
        add_chunk(facility.entity_id, "Overview",
                  f"{name} ({acronym}), registered as asset {tag}, is a {kind.name.lower()} in {region}. "
                  f"This register entry describes its operations, safety case, environmental permit, "
                  f"governance and staffing.", overview_facts)
        company = rng.choice(company_entities)
        values = _facility_values(rng, kind, company, person())
        for section in FACILITY_SECTIONS:
            keys = [a.key for a in ATTRIBUTES if a.section == section]
            fact_ids = tuple(add_fact(facility.entity_id, key, values[key],
                                      company.entity_id if key == "operator" else None) for key in keys)
            sentences = " ".join(ATTRIBUTE_BY_KEY[key].statement.format(name=name, value=values[key]) for key in keys)
            add_chunk(facility.entity_id, section, f"{name} - {section}. {sentences}", fact_ids)
    # A short alias shared by two facilities would make a question ambiguous; keep only unique ones.
    alias_counts: dict[str, int] = {}
    for entity in entities.values():
        for alias in entity.aliases:
            alias_counts[alias] = alias_counts.get(alias, 0) + 1
    entities = {key: replace(entity, aliases=tuple(a for a in entity.aliases if alias_counts[a] == 1))
                for key, entity in entities.items()}
    return World(entities, facts, tuple(chunks))


def question_about(world: World, fact: Fact, rng: random.Random) -> str:
    """Ask for a fact's value the way a user would, through one of the subject's aliases."""
    attribute = ATTRIBUTE_BY_KEY[fact.attribute]
    alias = rng.choice(world.entities[fact.subject].aliases)
    return rng.choice(attribute.questions).format(alias=alias)
