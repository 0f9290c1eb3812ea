"""Recipe 3: a cross-encoder reranker with feature-token inputs and a two-stage curriculum.

Each (query, sentence) pair can be prefixed with feature tokens,
`[HOP:h] [ROLE:r] [ENT:e1,e2] [CAUSAL] [REASONING] query [SEP] sentence`, added to the
tokenizer as special tokens. Stage 1 trains on multi-hop data (HotpotQA), stage 2
continues from the stage-1 weights on factual data (NQ) at a lower learning rate.
The recipe's own results show why the pipeline measures both classification (F1,
AUC) and ranking (NDCG@10, MAP, MRR@10) and trains a plain model beside the
featured one: its model learned to read the feature tokens instead of the text.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from retrieval_pipeline.core.beir import Collection, load_collection, read_beir_folder, with_dev_split, write_collection
from retrieval_pipeline.core.cross_encoders import binary_trainer, load_cross_encoder, new_cross_encoder, predict_pairs
from retrieval_pipeline.core.family import Family, Scores, concat_tables, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.metrics import evaluate_run
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.models import device, load_sentence_transformer, loading, locate
from retrieval_pipeline.core.params import FamilyParams, Section, TrainingSection
from retrieval_pipeline.core.preflight import Requirement, TrainingRun
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.core.sources import DataError, SourceParams, SyntheticSource, map_columns, read_source
from retrieval_pipeline.core.splits import add_split_column, split_counts
from retrieval_pipeline.core.training import log_training
from retrieval_pipeline.data.world import build_world, factual_questions, multihop_questions

DATASETS = ("multihop", "factual")  # stage 1 data, stage 2 data
CURRICULUM = ("stage1", "stage2")
STAGE_TEXT = {"stage1": "stage 1 of the curriculum, trained on multi-hop data",
              "stage2": "stage 2 of the curriculum, continued from the stage-1 checkpoint on factual data",
              "stage2_replay": "the replay variant of stage 2, not in the recipe: continued from the stage-1 "
                               "checkpoint on factual data with {replay:.0%} of the multi-hop pairs replayed"}
VARIANTS = {True: "features", False: "plain"}
RANKING_METRICS = {"ndcg@10": "ndcg@10", "map": "map@1000", "mrr@10": "mrr@10"}
CHECKPOINT_CONFIG = "reranker_config.json"

# ---------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------


class MultihopColumns(Section):
    query_id: str
    query: str
    answer: str
    supporting_titles: str
    context_titles: str
    context: str


class FactualColumns(Section):
    query_id: str
    query: str
    answer: str
    context_titles: str
    context: str


class SyntheticQuestions(SyntheticSource):
    questions_per_facility: PositiveInt = 2
    distractors: PositiveInt = 2  # other facilities' documents in a factual question's context


class MultihopSource(SourceParams):
    columns: MultihopColumns
    synthetic: SyntheticQuestions = SyntheticQuestions()


class FactualSource(SourceParams):
    columns: FactualColumns
    synthetic: SyntheticQuestions = SyntheticQuestions()


class DataParams(Section):
    multihop: MultihopSource
    factual: FactualSource
    test_size: float = Field(gt=0, lt=1)  # of the queries, per dataset
    dev_size: float = Field(ge=0, lt=1)  # of the remaining queries, held out to choose the F1 threshold


class ModelParams(Section):
    base: str = Field(min_length=1)
    max_length: PositiveInt


class FeatureParams(Section):
    entities: Literal["ner", "rules"]  # ner: a token-classification model; rules: no download
    ner_model: str = Field(min_length=1)
    max_hop: PositiveInt
    max_entities: PositiveInt
    reasoning_entity_density: float = Field(gt=0, le=1)


class MineParams(Section):
    first_stage_model: str = Field(min_length=1)
    candidates: PositiveInt  # first-stage top-k per query: the list the reranker reorders
    hard_negatives: int = Field(ge=0)  # per positive, from the top of the first-stage ranking
    easy_negatives: int = Field(ge=0)  # per positive, random
    batch_size: PositiveInt
    features: FeatureParams

    @model_validator(mode="after")
    def _some_negatives(self) -> MineParams:
        if self.hard_negatives + self.easy_negatives == 0:
            raise ValueError("hard_negatives and easy_negatives are both 0; expected at least one negative per "
                             "positive, or the reranker trains on positives only")
        return self


class StageParams(Section):
    learning_rate: PositiveFloat
    epochs: PositiveInt


class ReplayParams(StageParams):
    """Stage 2 again from the same stage-1 checkpoint, with `replay` of the stage-1 training pairs (a fraction,
    sampled with the seed) mixed into the factual pairs: a variant beside the published curriculum, trained for
    the feature settings in `variants`."""

    replay: float = Field(gt=0, le=1)
    variants: list[Literal["features", "plain"]] = Field(min_length=1)


class TrainParams(TrainingSection):
    use_features: bool
    feature_ablation: bool  # also train the other setting of use_features, for the ablation
    pos_weight: PositiveFloat
    stage1: StageParams
    stage2: StageParams
    stage2_replay: ReplayParams | None = None  # not in the recipe; null trains the published curriculum only
    weight_decay: float = Field(ge=0)


class EvaluateParams(Section):
    batch_size: PositiveInt
    # sigmoid score at or above which a sentence is called relevant (F1); "dev": the one that maximises each
    # checkpoint's F1 over the dev queries' candidates
    threshold: Literal["dev"] | float = Field(default="dev")

    @field_validator("threshold")
    @classmethod
    def _threshold_is_a_probability(cls, threshold):
        if threshold != "dev" and not 0 < threshold < 1:
            raise ValueError(f"expected 'dev' or a number between 0 and 1 (got {threshold})")
        return threshold


class RerankerParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams


# ---------------------------------------------------------------------------
# Feature extraction: each part is a small function of the sentence (and, for the
# hop, of the other candidates), so each can be tested and swapped on its own.
# ---------------------------------------------------------------------------

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
# A sentence ends at . ! ? before a capital or digit, but not after an initial ("T.S.") or a title ("Jr.").
SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[A-Z]\.)(?<!\b(?:Jr|Sr|Mr|Dr|St)\.)\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


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

    def __init__(self, model: str, batch_size: int, key: str = "reranker.mine.features.ner_model") -> None:
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


# ---------------------------------------------------------------------------
# Contexts to labelled sentences
# ---------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    return [sentence.strip() for sentence in SENTENCE_END.split(text) if sentence and sentence.strip()]


def split_documents(context: str, titles: Sequence[str], where: str) -> list[tuple[str, str]]:
    """(title, body) for each document of a LongRAG context: the documents in `titles` order, each opening
    with its title (at the start of a line where the title also occurs inside an earlier document's text)."""
    starts, position = [], 0
    for title in titles:
        at_line_start = re.compile(rf"(?m)^{re.escape(title)}").search(context, position)
        found = at_line_start.start() if at_line_start else context.find(title, position)
        if found < 0:
            raise DataError(f"{where}: context title {title!r} does not occur in the context after the previous "
                            "title; expected the context to be the context_titles' documents in order, each "
                            "opening with its title")
        starts.append(found)
        position = found + len(title)
    ends = starts[1:] + [len(context)]
    return [(title, context[start + len(title):end]) for title, start, end in zip(titles, starts, ends)]


def contains_answer(sentence: str, answers: Sequence[str]) -> bool:
    """Whether an answer string occurs as whole words (1964 is not in licence CZ-1964), ignoring case."""
    return any(answer.strip() and re.search(rf"(?<![\w-]){re.escape(answer.strip())}(?![\w-])", sentence, re.I)
               for answer in answers)


def label_multihop(documents: list[tuple[str, list[str]]], supporting: Sequence[str],
                   answers: Sequence[str]) -> list[list[int]]:
    """HotpotQA's supporting-fact sentences, from LongRAG's supporting titles.

    LongRAG keeps HotpotQA's supporting titles, not its sentence ids, so a supporting
    document's sentence is a supporting fact when it states the answer or names another
    supporting document (the bridge); a supporting document where neither holds
    contributes its opening sentence, where Wikipedia defines the subject.
    """
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


def label_factual(documents: list[tuple[str, list[str]]], answers: Sequence[str]) -> list[list[int]]:
    """NQ's rule: a sentence is positive when it contains a gold answer string."""
    return [[int(contains_answer(s, answers)) for s in sentences] for _, sentences in documents]


def _string_list(value, column: str, where: str) -> list[str]:
    if value is None or isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise DataError(f"{where}: column '{column}' must be a list of strings (got {value!r:.80})")
    return list(value)


def sentence_rows(frame: pl.DataFrame, dataset: str, origin: str) -> tuple[list[dict], int]:
    """One row per (query, context sentence) with its label; queries with no positive are dropped."""
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
        documents = [(title, split_sentences(body))
                     for title, body in split_documents(record["context"], titles, where)]
        if dataset == "multihop":
            supporting = _string_list(record["supporting_titles"], "supporting_titles", where)
            unknown = [title for title in supporting if title not in titles]
            if unknown:
                raise DataError(f"{where}: supporting title(s) {unknown} are not among the context titles")
            labels = label_multihop(documents, supporting, answers)
        else:
            labels = label_factual(documents, answers)
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


def synthetic_multihop(source: SyntheticQuestions, seed: int) -> list[dict]:
    world = build_world(seed, source.facilities, source.companies)
    return multihop_questions(world, source.questions_per_facility, seed)


def synthetic_factual(source: SyntheticQuestions, seed: int) -> list[dict]:
    world = build_world(seed, source.facilities, source.companies)
    return factual_questions(world, source.questions_per_facility, source.distractors, seed + 1)


SYNTHETIC = {"multihop": synthetic_multihop, "factual": synthetic_factual}

# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


def base_cross_encoder(base: str, max_length: int, feature_tokens: list[str] | None, seed: int,
                       key: str = "reranker.model.base"):
    """The base encoder with a freshly initialised one-logit head (seeded), and the feature tokens added."""
    model = new_cross_encoder(base, key, max_length, seed, length_key="reranker.model.max_length")
    if feature_tokens:
        model.tokenizer.add_special_tokens({"additional_special_tokens": feature_tokens})
        model.model.resize_token_embeddings(len(model.tokenizer))
    return model


def pairs_dataset(pairs: pl.DataFrame, use_features: bool):
    from datasets import Dataset

    first = [model_input(query, tokens if use_features else None)
             for query, tokens in pairs.select("query", "feature_tokens").iter_rows()]
    return Dataset.from_dict({"query": first, "sentence": pairs["sentence"].to_list(),
                              "label": pairs["label"].cast(pl.Float32).to_list()})


# ---------------------------------------------------------------------------
# Candidate pools and scoring
# ---------------------------------------------------------------------------


def select_pool(scored: pl.DataFrame, candidates: int, hard: int, easy: int, rng: np.random.Generator) -> pl.DataFrame:
    """The rows each query needs: its first-stage top-k (`candidate`, what evaluation reranks) and, for training
    queries, each positive with `hard` top-ranked non-evidence sentences and `easy` random ones (`train_pair`)."""
    kept = []
    for _, group in scored.sort("first_stage_rank").group_by("query_id", maintain_order=True):
        n_positive = int(group["label"].sum())
        negatives = group.filter(pl.col("label") == 0)
        hard_ids = negatives["sentence_id"].head(hard * n_positive).to_list()
        rest = negatives["sentence_id"].slice(len(hard_ids)).to_list()
        easy_ids = [rest[i] for i in rng.permutation(len(rest))[:easy * n_positive]] if rest else []
        is_train = group["split"][0] == "train"
        pair = (pl.when(pl.col("label") == 1).then(pl.lit("positive"))
                .when(pl.col("sentence_id").is_in(hard_ids)).then(pl.lit("hard"))
                .when(pl.col("sentence_id").is_in(easy_ids)).then(pl.lit("easy")).otherwise(None))
        group = group.with_columns(pair=pair, candidate=pl.col("first_stage_rank") <= candidates)
        group = group.with_columns(train_pair=pl.lit(is_train) & pl.col("pair").is_not_null())
        kept.append(group.filter(pl.col("candidate") | pl.col("train_pair")))
    return pl.concat(kept).sort("query_id", "first_stage_rank")


def positives_of(sentences: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Every positive of each query, also those the first stage left out of the candidate list."""
    qrels: dict[str, dict[str, int]] = {}
    for query_id, sentence_id in sentences.filter(pl.col("label") == 1).select("query_id", "sentence_id").iter_rows():
        qrels.setdefault(query_id, {})[sentence_id] = 1
    return qrels


def ranking(frame: pl.DataFrame, score: str, qrels) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """NDCG@10, MAP and MRR@10 of each query's candidate list ordered by `score` (ties by first-stage rank)."""
    ordered = frame.sort(["query_id", score, "first_stage_rank"], descending=[False, True, False])
    run = {query_id: group["sentence_id"].to_list()
           for (query_id,), group in ordered.group_by("query_id", maintain_order=True)}
    judged = {query: qrels[query] for query in run}
    means, per_query = evaluate_run(run, judged, map_k=1000)
    pick = lambda values: {name: values[source] for name, source in RANKING_METRICS.items()}  # noqa: E731
    return pick(means), {query: pick(values) for query, values in per_query.items()}


def best_f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (a sentence at or above it is called relevant)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)[:-1]
    return float(thresholds[int(np.argmax(f1))])


def classification(labels: np.ndarray, scores: np.ndarray, threshold: float, what: str) -> dict[str, float]:
    """F1 at `threshold` and ROC AUC over sentences."""
    from sklearn.metrics import f1_score, roc_auc_score

    if len(set(labels.tolist())) < 2:
        raise DataError(f"{what}: every sentence has label {labels[0]}; expected positives and negatives for AUC "
                        "(raise mine.candidates or data.test_size)")
    return {"f1": float(f1_score(labels, scores >= threshold)), "auc": float(roc_auc_score(labels, scores))}


def print_summary(metrics: dict) -> None:
    for dataset in DATASETS:
        first = metrics["first_stage"][dataset]
        print(f"evaluate: {dataset:8s} first stage          NDCG@10 {first['ndcg@10']:.4f}  MAP {first['map']:.4f}  "
              f"MRR@10 {first['mrr@10']:.4f}")
        for variant in VARIANTS.values():
            for stage, by_dataset in metrics.get(variant, {}).items():
                m = by_dataset[dataset]
                print(f"evaluate: {dataset:8s} {variant:8s} {stage}  NDCG@10 {m['ndcg@10']:.4f}  MAP {m['map']:.4f}  "
                      f"MRR@10 {m['mrr@10']:.4f}  F1 {m['f1']:.4f} at {m['threshold']:.3f}  AUC {m['auc']:.4f}")


class Reranker(Family):
    name = "reranker"
    recipe = "cross-encoder with feature-rich inputs and a two-stage curriculum (recipe 3 in docs/recipes.md)"
    Params = RerankerParams
    params: RerankerParams

    # prepare -----------------------------------------------------------------

    def prepare(self) -> None:
        data = self.params.data
        with atomic_directory(self.paths.prepared) as out:
            for dataset in DATASETS:
                source = getattr(data, dataset)
                if source.is_collection():
                    self._prepare_collection(dataset, out / dataset)
                    continue
                frame, origin = read_source(source, self.params.seed, SYNTHETIC[dataset])
                frame = map_columns(frame, source.columns.model_dump(), origin, f"{self.name}.data.{dataset}.columns")
                rows, dropped = sentence_rows(frame, dataset, origin)
                if not rows:
                    raise DataError(f"{origin}: no query has a positive sentence; expected answers or supporting "
                                    "titles that occur in the contexts")
                sentences = pl.DataFrame(rows)
                queries = add_split_column(sentences.select("query_id").unique(maintain_order=True),
                                           data.test_size, data.dev_size, self.params.seed, origin)
                sentences = sentences.join(queries, on="query_id", how="left", maintain_order="left")
                sentences.write_parquet(out / f"{dataset}.parquet")
                positives = sentences["label"].sum()
                print(f"prepare: {dataset}: {origin}: queries {split_counts(queries)}; {sentences.height} sentences, "
                      f"{positives} positive" + (f"; {dropped} queries without a positive dropped" if dropped else ""))

    def _prepare_collection(self, dataset: str, folder: Path) -> None:
        """A BEIR folder as a dataset: the reranker reorders the first stage's top documents over its whole corpus
        (query -> document), with its train, dev (else a share of train) and test qrels."""
        source = getattr(self.params.data, dataset)
        names = source.local.splits
        collection = read_beir_folder(source.local.path, [names.train, names.test], [names.dev])
        collection = with_dev_split(collection, names.train, names.dev, self.params.data.dev_size, self.params.seed)
        renamed = {names.train: "train", names.dev: "dev", names.test: "test"}
        collection = Collection(collection.corpus, collection.queries, collection.qrels.with_columns(
            pl.col("split").replace(renamed)).filter(pl.col("split").is_in(["train", "dev", "test"])))
        folder.mkdir()
        write_collection(collection, folder)
        counts = dict(collection.judged_queries()["split"].value_counts().iter_rows())
        print(f"prepare: {dataset}: BEIR folder {source.local.path}: {collection.corpus.height} documents; queries "
              f"train {counts.get('train', 0)}, dev {counts.get('dev', 0)}, test {counts.get('test', 0)}")

    def requirements(self) -> list[Requirement]:
        data, mine = self.params.data, self.params.mine
        needs = [requirement for dataset in DATASETS
                 for requirement in getattr(data, dataset).requirements(f"{self.name}.data.{dataset}")]
        needs.append(Requirement("model", f"{self.name}.mine.first_stage_model", "mine", model=mine.first_stage_model))
        if mine.features.entities == "ner":
            needs.append(Requirement("model", f"{self.name}.mine.features.ner_model", "mine",
                                     model=mine.features.ner_model))
        needs.append(Requirement("model", f"{self.name}.model.base", "train", model=self.params.model.base))
        return needs

    def training_runs(self) -> list[TrainingRun]:
        train = self.params.train
        return [TrainingRun("train (each variant, both stages)", self.params.model.base, f"{self.name}.model.base",
                            train.batch_size, self.params.model.max_length, train.bf16)]

    # mine --------------------------------------------------------------------

    def _entity_extractor(self) -> EntityExtractor:
        features = self.params.mine.features
        if features.entities == "rules":
            return rule_extractor
        return NerEntities(features.ner_model, self.params.mine.batch_size)

    def mine(self) -> None:
        mine = self.params.mine
        encoder = load_sentence_transformer(mine.first_stage_model, f"{self.name}.mine.first_stage_model")
        extract = self._entity_extractor()
        rng = np.random.default_rng(self.params.seed)
        with atomic_directory(self.paths.mined) as out:
            for dataset in DATASETS:
                if getattr(self.params.data, dataset).is_collection():
                    scored = self._retrieve(encoder, load_collection(self.paths.prepared / dataset))
                else:
                    scored = self._first_stage(encoder, pl.read_parquet(self.paths.prepared / f"{dataset}.parquet"))
                pool = select_pool(scored, mine.candidates, mine.hard_negatives, mine.easy_negatives, rng)
                pool = self._with_features(pool, extract)
                pool.write_parquet(out / f"{dataset}.parquet")
                train = pool.filter(pl.col("split") == "train")
                kinds = dict(train.filter(pl.col("train_pair"))["pair"].value_counts().iter_rows())
                print(f"mine: {dataset}: training pairs {kinds}; test candidate lists of up to {mine.candidates}")

    def _retrieve(self, encoder, collection: Collection) -> pl.DataFrame:
        """Each judged query's first-stage top documents over the whole corpus (faiss over normalised
        embeddings), as rows like the sentence layout's; training queries also get their relevant documents the
        first stage missed, ranked after the list, so every training query has its positives."""
        mine = self.params.mine
        queries = collection.judged_queries()
        corpus_ids, texts = collection.corpus["document_id"].to_list(), collection.corpus["text"].to_list()
        encode = lambda items: encoder.encode(items, batch_size=mine.batch_size, normalize_embeddings=True,  # noqa: E731
                                              convert_to_numpy=True, show_progress_bar=True)
        documents, questions = encode(texts), encode(queries["text"].to_list())
        scores, indices = search(questions, documents, mine.candidates)
        relevant = {(query, document) for query, document, grade in
                    collection.qrels.select("query_id", "document_id", "relevance").iter_rows() if grade > 0}
        position = {document: i for i, document in enumerate(corpus_ids)}
        rows = []
        for q, (query_id, query, split) in enumerate(queries.select("query_id", "text", "split").iter_rows()):
            found = [corpus_ids[i] for i in indices[q]]
            missed = [document for (owner, document) in sorted(relevant) if owner == query_id
                      and document not in found] if split == "train" else []
            extra = [float(questions[q] @ documents[position[document]]) for document in missed]
            for rank, (document, score) in enumerate(zip(found + missed, [*scores[q].tolist(), *extra]), start=1):
                rows.append({"query_id": query_id, "query": query, "sentence_id": document, "document": document,
                             "sentence": texts[position[document]], "label": int((query_id, document) in relevant),
                             "split": split, "first_stage_score": score, "first_stage_rank": rank})
        return pl.DataFrame(rows, schema_overrides={"first_stage_score": pl.Float32, "first_stage_rank": pl.UInt32})

    def _first_stage(self, encoder, sentences: pl.DataFrame) -> pl.DataFrame:
        """Cosine score of every sentence for its query under the first-stage bi-encoder, encoded once."""
        batch = self.params.mine.batch_size
        unique_sentences = sentences["sentence"].unique(maintain_order=True).to_list()
        unique_queries = sentences["query"].unique(maintain_order=True).to_list()
        sentence_vectors = encoder.encode(unique_sentences, batch_size=batch, normalize_embeddings=True,
                                          convert_to_numpy=True, show_progress_bar=True)
        query_vectors = encoder.encode(unique_queries, batch_size=batch, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=True)
        sentence_index = {text: i for i, text in enumerate(unique_sentences)}
        query_index = {text: i for i, text in enumerate(unique_queries)}
        s = np.array([sentence_index[text] for text in sentences["sentence"]])
        q = np.array([query_index[text] for text in sentences["query"]])
        scores = (sentence_vectors[s] * query_vectors[q]).sum(axis=1)
        return sentences.with_columns(first_stage_score=pl.Series(scores, dtype=pl.Float32)).with_columns(
            first_stage_rank=pl.col("first_stage_score").rank("ordinal", descending=True).over("query_id"))

    def _with_features(self, pool: pl.DataFrame, extract: EntityExtractor) -> pl.DataFrame:
        features = self.params.mine.features
        queries = pool["query"].unique(maintain_order=True).to_list()
        query_entities = dict(zip(queries, extract(queries)))
        sentence_entities = extract(pool["sentence"].to_list())
        pool = pool.with_columns(entities=pl.Series(sentence_entities, dtype=pl.List(pl.String)))
        hop_column = []
        for _, group in pool.group_by("query_id", maintain_order=True):
            hop_column += hops(query_entities[group["query"][0]], group["entities"].to_list(), features.max_hop)
        # group_by keeps each query's rows contiguous in their original order, as the pool is sorted by query
        tokens = [SentenceFeatures(hop, rhetorical_role(sentence), tuple(names[:features.max_entities]),
                                   is_causal(sentence),
                                   entity_density(sentence, names) >= features.reasoning_entity_density).tokens()
                  for hop, sentence, names in zip(hop_column, pool["sentence"], pool["entities"])]
        return pool.with_columns(hop=pl.Series(hop_column, dtype=pl.Int32),
                                 feature_tokens=pl.Series(tokens, dtype=pl.String))

    # train -------------------------------------------------------------------

    def variants(self) -> list[bool]:
        train = self.params.train
        return [train.use_features] + ([not train.use_features] if train.feature_ablation else [])

    def stages(self, variant: str) -> list[str]:
        """The checkpoints a variant trains: the published curriculum, then the replay variant where it is set."""
        replay = self.params.train.stage2_replay
        return [*CURRICULUM, *(["stage2_replay"] if replay and variant in replay.variants else [])]

    def build_trainer(self, model, stage: str, pairs, output_dir: Path):
        train = self.params.train
        schedule: StageParams = getattr(train, stage)
        return binary_trainer(model, pairs, output_dir, epochs=schedule.epochs, learning_rate=schedule.learning_rate,
                              batch_size=train.batch_size, pos_weight=train.pos_weight, seed=self.params.seed,
                              bf16=train.bf16, warmup_ratio=train.warmup_ratio, weight_decay=train.weight_decay,
                              logging_steps=train.logging_steps)

    def training_pairs(self, dataset: str) -> pl.DataFrame:
        pool = pl.read_parquet(self.paths.mined / f"{dataset}.parquet")
        return pool.filter((pl.col("split") == "train") & pl.col("train_pair"))

    def stage_pairs(self, stage: str) -> pl.DataFrame:
        """A stage's training pairs: multi-hop (stage 1), factual (stage 2), or factual with replayed multi-hop."""
        if stage == "stage1":
            return self.training_pairs("multihop")
        factual = self.training_pairs("factual")
        if stage == "stage2":
            return factual
        multihop = self.training_pairs("multihop")
        replayed = multihop.sample(fraction=self.params.train.stage2_replay.replay, seed=self.params.seed)
        return pl.concat([factual, replayed]).sample(fraction=1.0, shuffle=True, seed=self.params.seed)

    def train(self) -> None:
        scratch = self.paths.scratch("trainer")
        max_hop = self.params.mine.features.max_hop
        scores: dict[str, Scores] = {}
        with atomic_directory(self.paths.model) as out:
            for use_features in self.variants():
                variant = VARIANTS[use_features]
                for stage in self.stages(variant):
                    if stage == "stage1":
                        model = base_cross_encoder(self.params.model.base, self.params.model.max_length,
                                                   special_tokens(max_hop) if use_features else None, self.params.seed)
                    else:  # stage 2 (and its replay variant) continues from the saved stage-1 checkpoint
                        model = load_cross_encoder(str(out / variant / "stage1"), "the stage-1 checkpoint")
                    pairs = pairs_dataset(self.stage_pairs(stage), use_features)
                    trainer = self.build_trainer(model, stage, pairs, scratch)
                    log_training(trainer, self.paths.training_log / f"{variant}_{stage}", f"train {variant} {stage}")
                    print(f"train: {variant} {stage}: {len(pairs)} pairs")
                    trainer.train()
                    label = f"{variant}/{stage}"
                    scores[label] = self.score(model, use_features, label)
                    self._save(model, out / variant / stage, variant, stage, use_features, scores[label], len(pairs))
        write_scores(self.paths.trained_scores, scores)
        shutil.rmtree(scratch, ignore_errors=True)

    def _save(self, model, folder: Path, variant: str, stage: str, use_features: bool, scores: Scores,
              training_pairs: int) -> None:
        model.save_pretrained(str(folder))  # its own card is replaced by ours below
        (folder / CHECKPOINT_CONFIG).write_text(json.dumps({"use_features": use_features}) + "\n", encoding="utf-8")
        test_queries = scores.tables["per_query"].select("dataset", "query_id").unique().height
        self.card(variant, stage, use_features, scores.metrics, test_queries, training_pairs).write(folder)

    def card(self, variant: str, stage: str, use_features: bool, metrics: dict[str, dict], test_queries: int,
             training_pairs: int) -> ModelCard:
        train, data = self.params.train, self.params.data
        schedule: StageParams = getattr(train, stage)
        stage_text = STAGE_TEXT[stage].format(replay=getattr(schedule, "replay", 0))
        trained_on = [("multihop",)] if stage == "stage1" else [("factual",)] if stage == "stage2" else \
            [("factual",), ("multihop",)]
        sources = " and ".join(f"{getattr(data, name).describe()} ({name})" for (name,) in trained_on)
        input_format = ("`[HOP:h] [ROLE:r] [ENT:e1,e2] [CAUSAL] [REASONING] query [SEP] sentence`, the feature "
                        "tokens being special tokens of this checkpoint's tokenizer (build them with "
                        "`retrieval_pipeline.families.reranker.SentenceFeatures`, as the mine stage does)"
                        if use_features else "`query [SEP] sentence`")
        return self.model_card(
            title=f"Reranker ({variant}, {stage})",
            summary=(f"A cross-encoder that scores (query, sentence) pairs with one logit (sigmoid = relevance): "
                     f"{stage_text}, with binary cross-entropy (pos_weight {train.pos_weight}) at learning rate "
                     f"{schedule.learning_rate}. Input: {input_format}. F1 is at each dataset's threshold "
                     f"(`evaluate.threshold`: {self.params.evaluate.threshold})."),
            base_model=self.params.model.base,
            training_data=f"{sources}: {training_pairs} labelled pairs, positives with hard and easy negatives",
            hub_datasets=[name for source in DATASETS for name in getattr(data, source).hub_datasets()],
            metrics=CardMetrics(dataset=", ".join(dict.fromkeys(getattr(data, name).describe() for name in DATASETS)),
                                queries=test_queries, task="reranking", baseline="the first-stage ranking",
                                rows={f"{source} test candidates": metrics[source] for source in DATASETS},
                                columns=["ndcg@10", "map", "mrr@10", "f1", "threshold", "auc"]),
            usage=f"""from sentence_transformers.cross_encoder import CrossEncoder
model = CrossEncoder("models/{self.name}/{variant}/{stage}")
scores = model.predict([("Who runs the Kestrel plant?", "Kestrel is run by Sable.")])""",
            library_name="sentence-transformers", pipeline_tag="text-ranking",
            tags=["cross-encoder", "reranker", variant, stage])

    # evaluate ----------------------------------------------------------------

    def candidate_lists(self, split: str) -> tuple[dict[str, pl.DataFrame], dict[str, dict]]:
        """Each dataset's candidate lists (the first stage's top-k) for the queries of `split`, and all their
        positives."""
        lists = {dataset: pl.read_parquet(self.paths.mined / f"{dataset}.parquet")
                 .filter((pl.col("split") == split) & pl.col("candidate")) for dataset in DATASETS}
        qrels = {}
        for dataset in DATASETS:
            if getattr(self.params.data, dataset).is_collection():
                qrels[dataset] = load_collection(self.paths.prepared / dataset).split(split)[1]
            else:
                qrels[dataset] = positives_of(pl.read_parquet(self.paths.prepared / f"{dataset}.parquet")
                                              .filter(pl.col("split") == split))
        return lists, qrels

    def test_set(self) -> tuple[dict[str, pl.DataFrame], dict[str, dict]]:
        return self.candidate_lists("test")

    def predict(self, model, use_features: bool, frame: pl.DataFrame) -> np.ndarray:
        """The checkpoint's relevance (sigmoid of its logit) of every (query, sentence) row."""
        pairs = [(model_input(query, tokens if use_features else None), sentence)
                 for query, tokens, sentence in frame.select("query", "feature_tokens", "sentence").iter_rows()]
        return predict_pairs(model, pairs, self.params.evaluate.batch_size)

    def thresholds(self, model, use_features: bool) -> dict[str, float]:
        """Per dataset, evaluate.threshold, or the one that maximises the checkpoint's F1 over the dev queries'
        candidates of that dataset."""
        if self.params.evaluate.threshold != "dev":
            return {dataset: self.params.evaluate.threshold for dataset in DATASETS}
        dev, _ = self.candidate_lists("dev")
        chosen = {}
        for dataset, frame in dev.items():
            labels = frame["label"].to_numpy()
            if len(set(labels.tolist())) < 2:
                raise DataError(f"{self.name}.data.dev_size: the {dataset} dev queries' candidates hold "
                                f"{'no sentence' if frame.is_empty() else 'one label only'}; expected positives and "
                                "negatives to choose the F1 threshold on (raise data.dev_size, or set "
                                "evaluate.threshold to a number)")
            chosen[dataset] = best_f1_threshold(labels, self.predict(model, use_features, frame))
        return chosen

    def score(self, model, use_features: bool, label: str) -> Scores:
        """One checkpoint's ranking and classification metrics per dataset (F1 at that dataset's threshold, which
        is reported too), per-query rows and pair scores."""
        test, qrels = self.test_set()
        thresholds = self.thresholds(model, use_features)
        metrics: dict = {}
        query_rows, score_frames = [], []
        for dataset, frame in test.items():
            scored = frame.with_columns(score=pl.Series(self.predict(model, use_features, frame)))
            means, per_query = ranking(scored, "score", qrels[dataset])
            means.update(classification(scored["label"].to_numpy(), scored["score"].to_numpy(), thresholds[dataset],
                                        f"{dataset} test candidates"))
            metrics[dataset] = {**means, "threshold": thresholds[dataset]}
            query_rows += [{"model": label, "dataset": dataset, "query_id": q, **v} for q, v in per_query.items()]
            score_frames.append(scored.select("query_id", "sentence_id", "label", "first_stage_score", "score")
                                .with_columns(model=pl.lit(label), dataset=pl.lit(dataset)))
        return Scores(metrics, {"per_query": pl.DataFrame(query_rows), "scores": pl.concat(score_frames)})

    def baseline_scores(self) -> dict[str, Scores]:
        """The first stage's own ranking of the candidate lists: what reranking is measured against."""
        test, qrels = self.test_set()
        metrics, query_rows = {}, []
        for dataset, frame in test.items():
            metrics[dataset], per_query = ranking(frame, "first_stage_score", qrels[dataset])
            query_rows += [{"model": "first_stage", "dataset": dataset, "query_id": q, **v}
                           for q, v in per_query.items()]
        return {"first_stage": Scores(metrics, {"per_query": pl.DataFrame(query_rows)})}

    def compare(self, scores: dict[str, Scores]) -> None:
        metrics: dict = {"first_stage": scores["first_stage"].metrics}
        for label, result in scores.items():
            if label != "first_stage":
                variant, stage = label.split("/")
                metrics.setdefault(variant, {})[stage] = result.metrics
        self.write_evaluation(metrics, {"per_query": concat_tables(scores, "per_query"),
                                        "scores": concat_tables(scores, "scores")})
        print_summary(metrics)


FAMILY = Reranker
