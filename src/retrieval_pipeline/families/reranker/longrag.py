"""LongRAG's rows (a question, its answers and a context of titled documents) as labelled sentences: for multi-hop
questions the sentences of the supporting documents, for factual ones those holding the answer, each by the rule
the params name (the recipe's code, or this project's).

A context is read in either of two layouts, as the real one cannot be checked offline: documents headed by a
"Title: <title>" line and separated by a blank line (what the recipe's code splits on, r"\n\nTitle: "), or each
document opening with its bare title, found through the row's context_titles."""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from retrieval_pipeline.core.errors import DataError

# A sentence ends at . ! ? before a capital or digit, but not after an initial ("T.S.") or a title ("Jr.").
SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!\b(?:Jr|Sr|Mr|Dr|St)\.)\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


def split_sentences(text: str) -> list[str]:
    return [sentence.strip() for sentence in SENTENCE_END.split(text) if sentence and sentence.strip()]


RECIPE_HEADER = "Title: "


def split_documents(context: str, titles: Sequence[str], where: str) -> list[tuple[str, str]]:
    """(title, body) for each document of a LongRAG context, in either layout (the module's docstring)."""
    if context.lstrip().startswith(RECIPE_HEADER) or f"\n\n{RECIPE_HEADER}" in context:
        return split_headed(context)
    return split_titled(context, titles, where)


def split_headed(context: str) -> list[tuple[str, str]]:
    """The recipe's reading: split on a blank line before "Title: ", each part's first line its title."""
    parts = re.split(rf"\n\n{re.escape(RECIPE_HEADER)}", context.strip())
    documents = []
    for part in parts:
        title, _, body = part.partition("\n")
        documents.append((title.removeprefix(RECIPE_HEADER).strip(), body.strip()))
    return [(title, body) for title, body in documents if title or body]


def split_titled(context: str, titles: Sequence[str], where: str) -> list[tuple[str, str]]:
    """The documents in `titles` order, each opening with its title (at the start of a line where the title also
    occurs inside an earlier document's text)."""
    starts, position = [], 0
    for title in titles:
        at_line_start = re.compile(rf"(?m)^{re.escape(title)}").search(context, position)
        found = at_line_start.start() if at_line_start else context.find(title, position)
        if found < 0:
            raise DataError(f"{where}: context title {title!r} does not occur in the context after the previous "
                            "title; expected the context to be the context_titles' documents in order, each "
                            "opening with its title (or each headed by a 'Title: <title>' line)")
        starts.append(found)
        position = found + len(title)
    ends = starts[1:] + [len(context)]
    return [(title, context[start + len(title):end]) for title, start, end in zip(titles, starts, ends)]


def contains_answer(sentence: str, answers: Sequence[str]) -> bool:
    """Whether an answer string occurs as whole words (1964 is not in licence CZ-1964), ignoring case."""
    return any(answer.strip() and re.search(rf"(?<![\w-]){re.escape(answer.strip())}(?![\w-])", sentence, re.I)
               for answer in answers)


def label_multihop(documents: list[tuple[str, list[str]]], supporting: Sequence[str], answers: Sequence[str],
                   rule: str) -> list[list[int]]:
    """Multi-hop positives from LongRAG's supporting titles.

    supporting_documents (the recipe's code): every sentence of a supporting document. supporting_facts: LongRAG
    keeps HotpotQA's supporting titles, not its sentence ids, so a supporting document's sentence is a supporting
    fact when it states the answer or names another supporting document (the bridge); a supporting document where
    neither holds contributes its opening sentence, where Wikipedia defines the subject.
    """
    if rule == "supporting_documents":
        return [[int(title in supporting)] * len(sentences) for title, sentences in documents]
    answers = [answer for answer in answers if answer.strip().lower() not in {"yes", "no"}]
    labels = []
    for title, sentences in documents:
        if title not in supporting:
            labels.append([0] * len(sentences))
            continue
        bridges = [other for other in supporting if other != title]
        flags = [int(contains_answer(s, answers) or contains_answer(s, bridges)) for s in sentences]
        if sentences and not any(flags):
            flags[0] = 1
        labels.append(flags)
    return labels


def label_factual(documents: list[tuple[str, list[str]]], answers: Sequence[str], rule: str) -> list[list[int]]:
    """Factual positives, NQ's rule: first_answer (the recipe's code), a sentence holding the first gold answer,
    lower-cased, anywhere in it; any_answer, a sentence holding any gold answer as whole words."""
    if rule == "first_answer":
        first = answers[0].lower().strip() if answers else ""
        return [[int(bool(first) and first in s.lower()) for s in sentences] for _, sentences in documents]
    return [[int(contains_answer(s, answers)) for s in sentences] for _, sentences in documents]


def _string_list(value, column: str, where: str) -> list[str]:
    if value is None or isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise DataError(f"{where}: column '{column}' must be a list of strings (got {value!r:.80})")
    return list(value)


def sentence_rows(frame: pl.DataFrame, dataset: str, origin: str, positives: str,
                  min_length: int) -> tuple[list[dict], int]:
    """One row per (query, context sentence longer than `min_length` characters) with its label by the
    `positives` rule; queries with no positive are dropped."""
    rows, dropped, seen = [], 0, {}
    for number, record in enumerate(frame.iter_rows(named=True), start=1):
        where = f"{origin}: row {number}"
        identifier = record["query_id"]
        if identifier is None or isinstance(identifier, float) or not str(identifier).strip():
            raise DataError(f"{where}: query_id {identifier!r}; expected a string or integer id")
        if str(identifier) in seen:
            raise DataError(f"{where}: query_id {str(identifier)!r} was already used by row {seen[str(identifier)]}; "
                            "expected each question its own id")
        seen[str(identifier)] = number
        for column in ("query", "context"):
            if not isinstance(record[column], str) or not record[column].strip():
                raise DataError(f"{where}: column '{column}' is empty; expected non-empty text")
        titles = _string_list(record["context_titles"], "context_titles", where)
        answers = _string_list(record["answer"], "answer", where)
        documents = [(title, [sentence for sentence in split_sentences(body) if len(sentence) > min_length])
                     for title, body in split_documents(record["context"], titles, where)]
        if dataset == "multihop":
            supporting = _string_list(record["supporting_titles"], "supporting_titles", where)
            unknown = [title for title in supporting if title not in titles]
            if unknown:
                raise DataError(f"{where}: supporting title(s) {unknown} are not among the context titles")
            labels = label_multihop(documents, supporting, answers, positives)
        else:
            labels = label_factual(documents, answers, positives)
        if not any(any(flags) for flags in labels):
            dropped += 1
            continue
        query_id = str(record["query_id"])
        index = 0
        for (title, sentences), flags in zip(documents, labels):
            for sentence, label in zip(sentences, flags):
                rows.append({"query_id": query_id, "query": record["query"], "sentence_id": f"{query_id}/{index}",
                             "document": title, "sentence": sentence, "label": label})
                index += 1
    return rows, dropped
