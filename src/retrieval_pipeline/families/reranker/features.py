"""Feature extraction for the reranker's inputs: each part is a small function of the sentence (and, for the hop,
of the other candidates), so each can be tested and swapped on its own. A pair's input is
`[HOP:h] [ROLE:r] [ENT:e1,e2] [CAUSAL] [REASONING] query [SEP] sentence`, the feature tokens being special tokens."""

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


def rhetorical_role(sentence: str) -> str:
    """The sentence's rhetorical function from the regex rules (ROLE_RULES), Background by default."""
    for role, pattern in ROLE_RULES:
        if pattern.search(sentence):
            return role
    return DEFAULT_ROLE


def is_causal(sentence: str) -> bool:
    return bool(CAUSAL.search(sentence))


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

    def tokens(self) -> str:
        parts = [f"[HOP:{self.hop}]", f"[ROLE:{self.role}]", f"[ENT:{','.join(self.entities)}]"]
        return " ".join(parts + ["[CAUSAL]"] * self.causal + ["[REASONING]"] * self.reasoning)


def special_tokens(max_hop: int) -> list[str]:
    """Every feature token, added to the tokenizer so none is split into word pieces."""
    return ([f"[HOP:{hop}]" for hop in range(max_hop + 1)] + [f"[ROLE:{role}]" for role in ROLES]
            + ["[ENT:", "[CAUSAL]", "[REASONING]"])


def model_input(query: str, feature_tokens: str | None) -> str:
    """The first text of the pair; the tokenizer adds [SEP] before the sentence."""
    return f"{feature_tokens} {query}" if feature_tokens else query


EntityExtractor = Callable[[list[str]], list[list[str]]]


class NerEntities:
    """Entities from a token-classification model (the recipe: dslim/bert-base-NER), safetensors only."""

    def __init__(self, model: str, batch_size: int, key: str) -> None:
        from transformers import pipeline

        source = locate(model, key)
        self.batch_size = batch_size
        with loading(key, model):
            self.pipeline = pipeline("token-classification", model=source.location, revision=source.revision,
                                     aggregation_strategy="first", device=device(),
                                     model_kwargs={"use_safetensors": True})

    def __call__(self, texts: list[str]) -> list[list[str]]:
        found = self.pipeline(texts, batch_size=self.batch_size)
        return [list(dict.fromkeys(entity["word"].strip() for entity in entities if entity["word"].strip()))
                for entities in found]


def rule_extractor(texts: list[str]) -> list[list[str]]:
    return [rule_entities(text) for text in texts]
