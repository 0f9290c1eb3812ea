"""ColBERT's mine stage: for every training query a candidate list in pylate's distillation layout, built as the
recipe author's data scripts build theirs (stefan-jo/pylate, examples/pooling/train/data/): the positives, the
dense miner's top documents (hard candidates) and random ones, all scored by the teacher; negatives scoring above a
share of the positives' median dropped as likely unlabelled positives; the best-scored positive, hard negatives,
medium ones drawn from the other hard candidates and random ones kept, labelled, best-scored first. A list the
filter left short of its negatives is topped up with more random documents scored by the same teacher, so no training
query is lost (the recipe's 150 candidates a query leave none short; a smaller candidate pool can). Or the recipe's
published mined set, read as it is. Each list is then cut to its `n_ways` best-scored documents, and one without a
positive there or shorter is dropped, as the recipe's training script does. A mining report says how many of each."""

from __future__ import annotations

import random
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import numpy as np
import polars as pl
from transformers import set_seed

from retrieval_pipeline.core.collection import load_collection
from retrieval_pipeline.core.errors import DataError, ParamsError
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json
from retrieval_pipeline.core.models import load_sentence_transformer
from retrieval_pipeline.core.reading import read_hub
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.core.training import console_lines, shared_arguments
from retrieval_pipeline.families.colbert import Colbert
from retrieval_pipeline.families.colbert.params import SelectionParams
from retrieval_pipeline.families.colbert.teachers import (
    BiEncoderTeacher,
    CrossEncoderTeacher,
    YesLogitTeacher,
    teacher_warning,
)

POSITIVE = "positive"
KINDS = (POSITIVE, "hard_negative", "medium_negative", "random_negative")


@dataclass(frozen=True)
class CandidateList:
    """A training query's candidates: its relevant documents, the miner's top others (hard candidates, best first)
    and random others."""

    query_id: str
    query: str
    positives: list[str]
    hard: list[str]
    random: list[str]

    @property
    def documents(self) -> list[str]:
        return [*self.positives, *self.hard, *self.random]


def pairs_of(lists: Sequence[CandidateList], text_of: dict[str, str]) -> list[tuple[str, str]]:
    return [(candidates.query, text_of[document]) for candidates in lists for document in candidates.documents]


def split_scores(scores: np.ndarray, lists: Sequence[CandidateList]) -> list[np.ndarray]:
    """Flat pair scores back into one array per candidate list."""
    bounds = np.cumsum([len(candidates.documents) for candidates in lists])[:-1]
    return np.split(np.asarray(scores, dtype=np.float32), bounds)


def threshold_of(candidates: CandidateList, scores: np.ndarray, share: float) -> float:
    """The score above which a negative of this list counts as a likely unlabelled positive."""
    return share * median(float(score) for score in scores[:len(candidates.positives)])


def select(candidates: CandidateList, scores: np.ndarray, selection: SelectionParams, share: float,
           rng: random.Random) -> tuple[list[tuple[str, float, str]], list[tuple[str, float]]]:
    """The recipe's list for one query, best-scored first: (document, teacher score, kind) kept, and (document,
    score) of the negatives dropped for scoring above `share` x the median of the positives' scores. `rng` is one
    generator for every query in turn, as the recipe's script draws."""
    scored = dict(zip(candidates.documents, (float(score) for score in scores)))
    positives = sorted(((d, scored[d]) for d in candidates.positives), key=lambda item: item[1], reverse=True)
    threshold = threshold_of(candidates, scores, share)
    hard = [(d, scored[d]) for d in candidates.hard]
    randoms = [(d, scored[d]) for d in candidates.random]
    dropped = [(d, score) for d, score in hard + randoms if score > threshold]
    hard = sorted((item for item in hard if item[1] <= threshold), key=lambda item: item[1], reverse=True)
    randoms = [item for item in randoms if item[1] <= threshold]
    chosen_hard, medium_pool = hard[:selection.hard], hard[selection.hard:]
    rng.shuffle(medium_pool)
    chosen_medium, medium_pool = medium_pool[:selection.medium], medium_pool[selection.medium:]
    random_pool = list(randoms)
    rng.shuffle(random_pool)
    chosen_random, random_pool = random_pool[:selection.random], random_pool[selection.random:]
    short = selection.hard + selection.medium + selection.random - len(chosen_hard) - len(chosen_medium) - len(
        chosen_random)
    extra_medium = medium_pool[:max(short, 0)]
    chosen_medium += extra_medium
    chosen_random += random_pool[:max(short - len(extra_medium), 0)]
    kept = [(d, score, kind) for kind, items in zip(KINDS, (positives[:selection.positives], chosen_hard,
                                                           chosen_medium, chosen_random)) for d, score in items]
    return sorted(kept, key=lambda item: item[1], reverse=True), dropped


Kept = list[tuple[str, float, str]]
Scorer = Callable[[list[int], list[CandidateList]], list[np.ndarray]]


def top_up(lists: list[CandidateList], kept: list[Kept], thresholds: list[float], negatives: int,
           others: Callable[[int], list[str]], draw: np.random.Generator, per_round: int,
           scorer: Scorer) -> tuple[dict[str, int], list[tuple[int, str, float]]]:
    """Fill each list holding fewer than `negatives` negatives with random documents the teacher scores at or below
    its threshold: rounds of `per_round` new draws from `others(i)` (list i's documents not yet scored for it), until
    every list is full or has no document left. Changes `kept` in place; returns the counts and the drawn documents
    dropped above the threshold (list index, document, score)."""
    short = [i for i in range(len(lists)) if negatives_in(kept[i]) < negatives]
    counts = {"topped_up_queries": len(short), "top_up_scored": 0, "top_up_kept": 0}
    scored: dict[int, set[str]] = {}
    dropped: list[tuple[int, str, float]] = []
    while short:
        drawn: dict[int, list[str]] = {}
        for i in short:
            pool = [document for document in others(i) if document not in scored.setdefault(i, set())]
            if pool:
                chosen = draw.choice(len(pool), size=min(per_round, len(pool)), replace=False)
                drawn[i] = [pool[j] for j in sorted(chosen)]
                scored[i].update(drawn[i])
        if not drawn:
            break
        indices = list(drawn)
        extra = [CandidateList(lists[i].query_id, lists[i].query, [], [], drawn[i]) for i in indices]
        for i, candidates, row in zip(indices, extra, scorer(indices, extra)):
            counts["top_up_scored"] += len(candidates.random)
            for document, score in zip(candidates.random, (float(value) for value in row)):
                if score > thresholds[i]:
                    dropped.append((i, document, score))
                elif negatives_in(kept[i]) < negatives:
                    kept[i].append((document, score, "random_negative"))
                    counts["top_up_kept"] += 1
            kept[i].sort(key=lambda item: item[1], reverse=True)
        short = [i for i in indices if negatives_in(kept[i]) < negatives]
    return counts, dropped


def negatives_in(kept: Kept) -> int:
    return sum(kind != POSITIVE for _, _, kind in kept)


def distillation_rows(rows: list[dict], n_ways: int) -> tuple[list[dict], dict[str, int]]:
    """The recipe training script's rule: each list (best-scored first) cut to its first `n_ways` documents; a
    list shorter than that, or without a positive among them, dropped. Returns the rows kept and the counts."""
    kept, counts = [], {"capped": 0, "dropped_short": 0, "dropped_without_positive": 0}
    for row in rows:
        if len(row["document_ids"]) > n_ways:
            counts["capped"] += 1
        cut = {key: row[key][:n_ways] for key in ("document_ids", "scores", "labels")}
        if len(cut["document_ids"]) < n_ways:
            counts["dropped_short"] += 1
        elif POSITIVE not in cut["labels"]:
            counts["dropped_without_positive"] += 1
        else:
            kept.append({"query_id": row["query_id"], **cut})
    return kept, counts


def positive_mrr(rows: list[dict]) -> float:
    """How high the teacher scores each list's positive among its documents: the mean of 1 / its rank."""
    return float(np.mean([1 / (sum(score > row["scores"][row["labels"].index(POSITIVE)] for score in row["scores"])
                               + 1) for row in rows]))


def candidate_positive_mrr(lists: Sequence[CandidateList], scores: Sequence[np.ndarray]) -> float:
    """How high the teacher scores each query's first positive among all its candidates, before any is dropped or
    chosen (in a kept list, the threshold has already put the positive first)."""
    return float(np.mean([1 / (int((row[len(candidates.positives):] > row[0]).sum()) + 1)
                          for candidates, row in zip(lists, scores)]))


def load_teacher(family: Colbert) -> BiEncoderTeacher | CrossEncoderTeacher | YesLogitTeacher:
    teacher = family.params.mine.teacher
    key = family.key("mine.teacher.model")
    reference = Path(teacher.model)
    outputs = [family.paths.root / folder for folder in ("data", "models", "eval")]
    if reference.exists() and any(reference.resolve().is_relative_to(folder.resolve()) for folder in outputs):
        raise ParamsError(f"{key}: {teacher.model} is another stage's output, which "
                          f"mine@{family.name} does not depend on in dvc.yaml, so DVC would not mine again when it "
                          "changes; expected a hub id, a package or a folder outside data/, models/ and eval/ "
                          "(or teacher.fine_tune, which trains an in-domain teacher in this stage)")
    if teacher.kind == "cross_encoder":
        return CrossEncoderTeacher.load(teacher.model, teacher.max_length, teacher.batch_size, key)
    if teacher.kind == "bi_encoder":
        return BiEncoderTeacher(bi_encoder(family), teacher.scale, teacher.batch_size)
    return YesLogitTeacher(teacher.model, teacher.prompt, teacher.max_length, teacher.batch_size, key)


def bi_encoder(family: Colbert):
    teacher = family.params.mine.teacher
    model = load_sentence_transformer(teacher.model, family.key("mine.teacher.model"))
    model.max_seq_length = teacher.max_length
    return model


def training_collection(family: Colbert) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, list[str]]]:
    """The corpus, the training queries with a relevant document, and each one's relevant documents."""
    collection = load_collection(family.paths.prepared)
    qrels = collection.positives("train")
    positives = {query: group["document_id"].to_list()
                 for (query,), group in qrels.group_by("query_id", maintain_order=True)}
    queries = collection.queries.filter(pl.col("query_id").is_in(list(positives)))
    return collection.corpus, queries, positives


def mine(family: Colbert) -> None:
    if family.params.mine.source == "hub":
        read_published_mined_set(family)
        return
    mine = family.params.mine
    corpus, queries, positives = training_collection(family)
    miner = load_sentence_transformer(mine.miner_model, family.key("mine.miner_model"))
    document_vectors = miner.encode(corpus["text"].to_list(), batch_size=mine.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=True)
    query_vectors = miner.encode(queries["text"].to_list(), batch_size=mine.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=True)
    most = max(len(relevant) for relevant in positives.values())
    _, neighbours = search(query_vectors, document_vectors, min(mine.candidates + most, corpus.height))
    del miner
    document_ids, texts = corpus["document_id"].to_list(), corpus["text"].to_list()
    text_of = dict(zip(document_ids, texts))
    draw = np.random.default_rng(family.params.seed)
    lists, miner_ranks = [], []
    for (query_id, query), row in zip(queries.select("query_id", "text").iter_rows(), neighbours):
        relevant = positives[query_id]
        ranked = [document_ids[i] for i in row]
        hard = [document for document in ranked if document not in relevant][:mine.candidates]
        others = sorted(set(document_ids) - set(relevant) - set(hard))
        chosen = draw.choice(len(others), size=min(mine.random_candidates, len(others)), replace=False)
        lists.append(CandidateList(query_id, query, relevant, hard, [others[i] for i in sorted(chosen)]))
        miner_ranks.append(ranked.index(relevant[0]) + 1 if relevant[0] in ranked else len(ranked) + 1)
    scorer = teacher_scorer(family, lists, text_of)
    scores = scorer(list(range(len(lists))), lists)
    rng = random.Random(family.params.seed)
    kept, dropped = [], []
    for candidates, list_scores in zip(lists, scores):
        chosen, above = select(candidates, list_scores, mine.selection, mine.negative_threshold_share, rng)
        kept.append(chosen)
        dropped += [{"query_id": candidates.query_id, "document_id": document, "teacher_score": score}
                    for document, score in above]

    def unseen(index: int) -> list[str]:
        seen = set(lists[index].documents)
        return [document for document in document_ids if document not in seen]

    selection = mine.selection
    share = mine.negative_threshold_share
    thresholds = [threshold_of(candidates, row, share) for candidates, row in zip(lists, scores)]
    topped, above = top_up(lists, kept, thresholds, selection.hard + selection.medium + selection.random, unseen, draw,
                           max(mine.random_candidates, 1), scorer)
    dropped += [{"query_id": lists[i].query_id, "document_id": document, "teacher_score": score}
                for i, document, score in above]
    rows = [{"query_id": candidates.query_id, "document_ids": [d for d, _, _ in chosen],
             "scores": [score for _, score, _ in chosen], "labels": [kind for _, _, kind in chosen]}
            for candidates, chosen in zip(lists, kept)]
    examples, counts = distillation_rows(rows, mine.n_ways)
    if not examples:
        raise DataError(f"{family.paths.prepared}: no training query keeps {mine.n_ways} documents with its positive "
                        f"among them; lower {family.key('mine.n_ways')} or raise {family.key('mine.selection')}")
    kinds = {kind: sum(row["labels"].count(kind) for row in examples) for kind in KINDS}
    negatives = sum(len(candidates.documents) - len(candidates.positives) for candidates in lists) + topped[
        "top_up_scored"]
    report = {"source": "mined", "training_queries": len(examples), **counts, **topped,
              "skipped_queries": counts["dropped_short"] + counts["dropped_without_positive"],
              "skipped_share": (counts["dropped_short"] + counts["dropped_without_positive"]) / len(lists),
              "documents": kinds, "false_negatives_dropped": len(dropped),
              "false_negatives_dropped_share": len(dropped) / negatives if negatives else 0.0,
              "teacher_positive_mrr": candidate_positive_mrr(lists, scores),
              "miner_positive_mrr": float(np.mean([1 / rank for rank in miner_ranks]))}
    write_mined(family, examples, queries, corpus, dropped, report)
    print(f"mine: {len(examples)} training queries x {mine.n_ways} teacher-scored documents ("
          + ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in kinds.items())
          + f"); {len(dropped)} negatives above {mine.negative_threshold_share:g} x the median positive score dropped "
          f"({report['false_negatives_dropped_share']:.0%} of the candidates); {topped['topped_up_queries']} lists "
          f"topped up with {topped['top_up_kept']} random negatives ({topped['top_up_scored']} scored); "
          f"{report['skipped_queries']} lists short of documents or of a positive dropped")
    report_path = family.paths.mined / "mining_report.json"
    for warning in (teacher_warning(report["teacher_positive_mrr"], report["miner_positive_mrr"], report_path,
                                    family.key("mine.teacher")),
                    skipped_warning(report["skipped_queries"], len(lists), report_path, family)):
        if warning:
            print(warning, file=sys.stderr)


def teacher_scorer(family: Colbert, lists: list[CandidateList], text_of: dict[str, str]) -> Scorer:
    """scorer(indices, candidate lists): the teacher's score of every candidate of each list, where list k belongs to
    training query indices[k]. Cross-fitted when the teacher is fine-tuned here: a query is scored by the teacher
    trained on the folds without it, for its first candidates and its top-up alike."""
    teacher = family.params.mine.teacher
    if teacher.fine_tune is None:
        loaded = load_teacher(family)
        return lambda indices, candidates: split_scores(loaded(pairs_of(candidates, text_of)), candidates)
    tune = teacher.fine_tune
    fold_of = np.random.default_rng(family.params.seed).permutation(len(lists)) % tune.folds
    teachers = []
    for fold in range(tune.folds):
        training = [lists[index] for index in range(len(lists)) if fold_of[index] != fold]
        teachers.append(BiEncoderTeacher(fine_tuned_teacher(family, training, text_of, fold), teacher.scale,
                                         teacher.batch_size))
        print(f"mine: teacher fold {fold + 1}/{tune.folds}: trained on {len(training)} queries")

    def scorer(indices: list[int], candidates: list[CandidateList]) -> list[np.ndarray]:
        scores: list[np.ndarray] = [np.zeros(0)] * len(candidates)
        for fold, fold_teacher in enumerate(teachers):
            members = [k for k, index in enumerate(indices) if fold_of[index] == fold]
            fold_lists = [candidates[k] for k in members]
            if fold_lists:
                for k, row in zip(members, split_scores(fold_teacher(pairs_of(fold_lists, text_of)), fold_lists)):
                    scores[k] = row
        return scores
    return scorer


def fine_tuned_teacher(family: Colbert, lists: list[CandidateList], text_of: dict[str, str], fold: int):
    """The teacher bi-encoder fine-tuned on these lists: each query with its positive and the miner's top
    other candidates as hard negatives, in-batch negatives besides (MultipleNegativesRankingLoss)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    teacher = family.params.mine.teacher
    tune = teacher.fine_tune
    usable = [candidates for candidates in lists if len(candidates.hard) >= tune.negatives]
    columns = {"query": [candidates.query for candidates in usable],
               "positive": [text_of[candidates.positives[0]] for candidates in usable],
               **{f"negative_{k + 1}": [text_of[candidates.hard[k]] for candidates in usable]
                  for k in range(tune.negatives)}}
    set_seed(family.params.seed + fold)
    model = bi_encoder(family)
    scratch = family.paths.scratch("teacher-trainer")
    args = SentenceTransformerTrainingArguments(
        output_dir=str(scratch), num_train_epochs=tune.epochs, per_device_train_batch_size=tune.batch_size,
        learning_rate=tune.learning_rate, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no",
        logging_steps=1,  # every step, for the epoch line's mean loss
        **shared_arguments(family.params.seed + fold, True, tune.warmup_ratio))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                                         loss=MultipleNegativesRankingLoss(model, scale=teacher.scale))
    console_lines(trainer, f"mine: teacher fold {fold + 1}/{tune.folds}")
    trainer.train()
    shutil.rmtree(scratch, ignore_errors=True)
    return model


def labels_of(value, documents: int, origin: str, row: int) -> list[str]:
    """A published list's labels as the recipe's set writes them (positive, hard_negative, medium_negative,
    random_negative); 1 and 0 (an older layout) read as positive and negative, no labels as the first positive."""
    if value is None:
        return [POSITIVE] + ["negative"] * (documents - 1)
    labels = []
    for label in value:
        if isinstance(label, str):
            labels.append(label)
        elif isinstance(label, (bool, int)) and label in (0, 1):
            labels.append(POSITIVE if label == 1 else "negative")
        else:
            raise DataError(f"{origin}: row {row}: label {label!r}; expected a string such as 'positive' or "
                            "'hard_negative' (or 1 / 0)")
    return labels


def read_published_mined_set(family: Colbert) -> None:
    """The recipe's own mined set (query_id, document_ids, scores, labels: each list best-scored first, so its
    positive is not always first) in place of mining again, cut and filtered as the recipe's training does."""
    mine = family.params.mine
    frame, origin = read_hub(mine.hub)
    missing = [column for column in ("query_id", "document_ids", "scores") if column not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {', '.join(missing)}; a mined set has query_id, "
                        f"document_ids, scores (and labels) (got {', '.join(frame.columns)})")
    corpus, queries, _ = training_collection(family)
    known_queries, known_documents = set(queries["query_id"]), set(corpus["document_id"])
    rows = []
    for row, record in enumerate(frame.iter_rows(named=True), start=1):
        query_id, documents = str(record["query_id"]), [str(d) for d in record["document_ids"]]
        scores = [float(score) for score in record["scores"]]
        labels = labels_of(record.get("labels"), len(documents), origin, row)
        if not len(documents) == len(scores) == len(labels):
            raise DataError(f"{origin}: row {row}: document_ids, scores and labels differ in length; expected "
                            "one score and one label per document")
        if query_id not in known_queries:
            raise DataError(f"{origin}: row {row}: query_id {query_id!r} is not a training query of the prepared "
                            "collection")
        unknown = [document for document in documents if document not in known_documents]
        if unknown:
            raise DataError(f"{origin}: row {row}: document {unknown[0]!r} is not in the corpus of the prepared "
                            "collection")
        rows.append({"query_id": query_id, "document_ids": documents, "scores": scores, "labels": labels})
    examples, counts = distillation_rows(rows, mine.n_ways)
    if not examples:
        raise DataError(f"{origin}: no row has {mine.n_ways} documents with a positive among its first "
                        f"{mine.n_ways}; lower {family.key('mine.n_ways')}")
    skipped = counts["dropped_short"] + counts["dropped_without_positive"]
    report = {"source": origin, "training_queries": len(examples), **counts, "skipped_queries": skipped,
              "skipped_share": skipped / frame.height,
              "documents": {kind: sum(row["labels"].count(kind) for row in examples)
                            for kind in dict.fromkeys(label for row in examples for label in row["labels"])},
              "false_negatives_dropped": 0, "false_negatives_dropped_share": 0.0,
              "teacher_positive_mrr": positive_mrr(examples), "miner_positive_mrr": None}
    write_mined(family, examples, queries, corpus, [], report)
    print(f"mine: {origin}: {len(examples)} training queries x {mine.n_ways} teacher-scored documents; "
          f"{counts['capped']} lists cut to {mine.n_ways}, {counts['dropped_short']} shorter and "
          f"{counts['dropped_without_positive']} without a positive among them dropped")
    warning = skipped_warning(skipped, frame.height, family.paths.mined / "mining_report.json", family)
    if warning:
        print(warning, file=sys.stderr)


SKIPPED_WARNING_SHARE = 0.05  # above this share of skipped training queries, the mining says so


def skipped_warning(skipped: int, queries: int, report: Path, family: Colbert) -> str | None:
    """Training queries dropped (a list short of n_ways documents, or without its positive among them) are training
    data lost: past a few percent, say so."""
    if not queries or skipped / queries <= SKIPPED_WARNING_SHARE:
        return None
    return (f"warning: {report}: {skipped} of {queries} training queries ({skipped / queries:.0%}) kept fewer than "
            f"{family.params.mine.n_ways} documents or no positive among them and were dropped; lower "
            f"{family.key('mine.n_ways')} or raise {family.key('mine.selection')}")


def write_mined(family: Colbert, examples: list[dict], queries: pl.DataFrame, corpus: pl.DataFrame,
                dropped: list[dict], report: dict) -> None:
    """pylate's distillation layout (train, queries, documents) with each document's label, the negatives dropped as
    likely unlabelled positives, and the report."""
    train = pl.DataFrame(examples, schema={"query_id": pl.String, "document_ids": pl.List(pl.String),
                                           "scores": pl.List(pl.Float32), "labels": pl.List(pl.String)})
    used = set(train["query_id"])
    with atomic_directory(family.paths.mined) as out:
        train.write_parquet(out / "train.parquet")
        used_queries = queries.filter(pl.col("query_id").is_in(used)).select("query_id", "text")
        used_queries.write_parquet(out / "queries.parquet")
        corpus.write_parquet(out / "documents.parquet")
        pl.DataFrame(dropped, schema={"query_id": pl.String, "document_id": pl.String,
                                      "teacher_score": pl.Float32}).write_parquet(out / "false_negatives.parquet")
        atomic_write_json(out / "mining_report.json", report)
