"""Feature extraction for the reranker's inputs: each part is a small function of the sentence (and, for the hop,
of the other candidates), so each can be tested and swapped on its own. A pair's input is
`[HOP:h] [ROLE:r] [ENT:e1,e2] [CAUSAL] [REASONING] query [SEP] sentence`, the feature tokens being special tokens.

Two rule sets (`mine.features.rules`): `recipe`, the recipe's code (alberttrann/neural_reranker_training_script,
NeuralReranker.ipynb: keyword lists for the role and [CAUSAL], [REASONING] for more than one entity or a causal
sentence, [ENT:...] only where there are entities), and `project`, this project's regex rules; and two hops
(`mine.features.hop`): `constant`, [HOP:0] everywhere, as that code never sets it, or `entity_distance`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from retrieval_pipeline.core.models import device, loading, locate

# First match wins; a sentence no rule claims is Background.
ROLE_RULES = (
    ("Conclusion", re.compile(r"\b(therefore|thus|hence|consequently|in conclusion|overall)\b", re.I)),
    ("Supporting_Evidence", re.compile(
        r"\b(according to|reported|records? show|measured|found that|stud(y|ies)|survey|data)\b|\d", re.I)),
    ("Main_Claim", re.compile(r"\b(is|are|was|were|has|have|holds?|employs?)\b", re.I)),
)
DEFAULT_ROLE = "Background"
ROLES = tuple(role for role, _ in ROLE_RULES) + (DEFAULT_ROLE,)
CAUSAL = re.compile(r"\b(because|due to|caus(e|es|ed|ing)|lead(s|ing)? to|led to|result(s|ed|ing)? in|as a result"
                    r"|therefore|consequently|so that|owing to|trigger(s|ed)?)\b", re.I)
WORD = re.compile(r"[\w][\w'/.-]*[\w]|\w")
# Capitalised words that open a sentence or a question without naming anything.
LEADING_FUNCTION_WORDS = {"the", "a", "an", "this", "that", "these", "those", "who", "what", "which", "when", "where",
                          "how", "why", "in", "on", "at", "under", "upper", "is", "are", "was", "does", "did"}


# The recipe's code: a role's keywords anywhere in the lower-cased sentence, the first role matching in this order.
RECIPE_ROLE_RULES = (
    ("Main_Claim", ("argue", "claim", "assert", "believe", "conclude")),
    ("Supporting_Evidence", ("evidence", "data", "research", "study", "found")),
    ("Expert_Opinion", ("expert", "according to", "stated", "opinion")),
)
RECIPE_DEFAULT_ROLE = "Background_Information"
RECIPE_ROLES = tuple(role for role, _ in RECIPE_ROLE_RULES) + (RECIPE_DEFAULT_ROLE,)
RECIPE_CAUSAL = ("cause", "because", "due to", "result", "lead to")


def rhetorical_role(sentence: str) -> str:
    """The sentence's rhetorical function from the regex rules (ROLE_RULES), Background by default."""
    for role, pattern in ROLE_RULES:
        if pattern.search(sentence):
            return role
    return DEFAULT_ROLE


def is_causal(sentence: str) -> bool:
    return bool(CAUSAL.search(sentence))


def recipe_role(sentence: str) -> str:
    """The recipe's role: the first role one of whose keywords occurs in the lower-cased sentence."""
    text = sentence.lower()
    return next((role for role, words in RECIPE_ROLE_RULES if any(word in text for word in words)),
                RECIPE_DEFAULT_ROLE)


def recipe_causal(sentence: str) -> bool:
    """The recipe's [CAUSAL]: one of its causal words anywhere in the lower-cased sentence ("result" in "results")."""
    text = sentence.lower()
    return any(word in text for word in RECIPE_CAUSAL)


def _is_name_token(token: str) -> bool:
    return token[0].isupper() or (any(c.isdigit() for c in token) and "-" in token)


def rule_entities(text: str) -> list[str]:
    """Named entities without a model: runs of capitalised words, acronyms and codes such as KV-123.

    A run ends at a lower-case word or at punctuation. A single capitalised word that opens the
    text is taken for an ordinary word unless it is an acronym or a code, and leading function
    words ("The", "Who") are dropped from a run.
    """
    runs: list[tuple[bool, list[str]]] = []  # (opens the text, words)
    extendable, previous_end = False, None
    for match in WORD.finditer(text):
        token = match.group()
        if not _is_name_token(token):
            extendable, previous_end = False, match.end()
            continue
        if extendable and text[previous_end:match.start()].isspace():
            runs[-1][1].append(token)
        else:
            runs.append((previous_end is None, [token]))
        extendable, previous_end = True, match.end()
    entities = []
    for opening, words in runs:
        while words and words[0].lower() in LEADING_FUNCTION_WORDS:
            words, opening = words[1:], False
        ordinary_opening_word = opening and len(words) == 1 and not (words[0].isupper() and len(words[0]) > 1) \
            and "-" not in words[0]
        if words and not ordinary_opening_word and " ".join(words) not in entities:
            entities.append(" ".join(words))
    return entities


def _acronym(name: str) -> str:
    return "".join(word[0] for word in name.split() if word[:1].isupper())


def entities_match(first: str, second: str) -> bool:
    """The same entity under two surface forms: equal, one inside the other, or an acronym of it."""
    a, b = first.lower(), second.lower()
    if a == b or re.search(rf"\b{re.escape(a)}\b", b) or re.search(rf"\b{re.escape(b)}\b", a):
        return True
    return (len(first) > 1 and first.isupper() and first == _acronym(second)) or \
        (len(second) > 1 and second.isupper() and second == _acronym(first))


def hops(query_entities: Sequence[str], sentence_entities: Sequence[Sequence[str]], max_hop: int) -> list[int]:
    """Each sentence's logical distance from the query's topic over shared entities.

    0: names an entity of the query; k: shares an entity with a sentence at k - 1;
    max_hop: farther, or not linked at all.
    """
    distance = [max_hop] * len(sentence_entities)
    frontier = list(query_entities)
    for level in range(max_hop):
        reached = [i for i, names in enumerate(sentence_entities) if distance[i] == max_hop
                   and any(entities_match(name, known) for name in names for known in frontier)]
        if not reached:
            break
        for i in reached:
            distance[i] = level
        frontier = [name for i in reached for name in sentence_entities[i]]
    return distance


def entity_density(sentence: str, entities: Sequence[str]) -> float:
    words = len(WORD.findall(sentence))
    return len(entities) / words if words else 0.0


@dataclass(frozen=True)
class SentenceFeatures:
    hop: int
    role: str
    entities: tuple[str, ...]
    causal: bool
    reasoning: bool
    empty_entities: bool = True  # write [ENT:] for a sentence without entities (the recipe's code leaves it out)

    def tokens(self) -> str:
        parts = [f"[HOP:{self.hop}]", f"[ROLE:{self.role}]"]
        parts += [f"[ENT:{','.join(self.entities)}]"] if self.entities or self.empty_entities else []
        return " ".join(parts + ["[CAUSAL]"] * self.causal + ["[REASONING]"] * self.reasoning)


def sentence_features(sentence: str, entities: Sequence[str], hop: int, settings) -> SentenceFeatures:
    """A sentence's features under `settings` (mine.features): its rules, hop and entity list length."""
    listed = tuple(entities[:settings.max_entities])
    if settings.rules == "recipe":
        causal = recipe_causal(sentence)
        return SentenceFeatures(hop, recipe_role(sentence), listed, causal, len(entities) > 1 or causal,
                                empty_entities=False)
    return SentenceFeatures(hop, rhetorical_role(sentence), listed, is_causal(sentence),
                            entity_density(sentence, entities) >= settings.reasoning_entity_density)


def special_tokens(settings) -> list[str]:
    """Every feature token of `settings` (mine.features), added to the tokenizer so none is split into word pieces:
    the recipe's list (its [HOP:0] and [HOP:1], its four roles) or this project's."""
    hops = range(2) if settings.hop == "constant" else range(settings.max_hop + 1)
    roles = RECIPE_ROLES if settings.rules == "recipe" else ROLES
    return [f"[HOP:{hop}]" for hop in hops] + [f"[ROLE:{role}]" for role in roles] + ["[ENT:", "[CAUSAL]",
                                                                                    "[REASONING]"]


def model_input(query: str, feature_tokens: str | None) -> str:
    """The first text of the pair; the tokenizer adds [SEP] before the sentence."""
    return f"{feature_tokens} {query}" if feature_tokens else query


EntityExtractor = Callable[[list[str]], list[list[str]]]


class NerEntities:
    """Entities from a token-classification model (the recipe: dslim/bert-base-NER), safetensors only: as the
    recipe's code groups them (`simple` aggregation, every mention kept) or, with `unique`, the first aggregation's
    words once each."""

    def __init__(self, model: str, batch_size: int, key: str, unique: bool) -> None:
        from transformers import pipeline

        source = locate(model, key)
        self.batch_size, self.unique = batch_size, unique
        with loading(key, model):
            self.pipeline = pipeline("token-classification", model=source.location, revision=source.revision,
                                     aggregation_strategy="first" if unique else "simple", device=device(),
                                     model_kwargs={"use_safetensors": True})

    def __call__(self, texts: list[str]) -> list[list[str]]:
        found = self.pipeline(texts, batch_size=self.batch_size)
        words = [[entity["word"].strip() for entity in entities if entity["word"].strip()] for entities in found]
        return [list(dict.fromkeys(names)) for names in words] if self.unique else words


def rule_extractor(texts: list[str]) -> list[list[str]]:
    return [rule_entities(text) for text in texts]
