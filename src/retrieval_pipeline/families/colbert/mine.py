"""ColBERT's mine stage: for every training query, the dense miner's candidates scored by the teacher, likely false
negatives dropped, in pylate's distillation layout (or the recipe's published mined set), with a mining report
that says how the teacher and the miner rank the labelled positives."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from transformers import set_seed

from retrieval_pipeline.core.beir import load_collection
from retrieval_pipeline.core.errors import DataError, ParamsError
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json
from retrieval_pipeline.core.models import load_sentence_transformer
from retrieval_pipeline.core.reading import read_hub
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.core.training import console_lines, shared_arguments
from retrieval_pipeline.families.colbert import Colbert
from retrieval_pipeline.families.colbert.teachers import (
    BiEncoderTeacher,
    CrossEncoderTeacher,
    YesLogitTeacher,
    false_negatives,
    teacher_warning,
)


@dataclass(frozen=True)
class CandidateList:
    """A training query and its candidates for distillation: the labelled positive first, then the miner's others."""

    query_id: str
    query: str
    documents: list[str]


def pairs_of(lists: Sequence[CandidateList], text_of: dict[str, str]) -> list[tuple[str, str]]:
    return [(candidates.query, text_of[document]) for candidates in lists for document in candidates.documents]


def split_scores(scores: np.ndarray, lists: Sequence[CandidateList]) -> list[np.ndarray]:
    """Flat pair scores back into one array per candidate list."""
    bounds = np.cumsum([len(candidates.documents) for candidates in lists])[:-1]
    return np.split(np.asarray(scores, dtype=np.float32), bounds)


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
    _, neighbours = search(query_vectors, document_vectors, min(mine.candidates, corpus.height))
    del miner
    document_ids, texts = corpus["document_id"].to_list(), corpus["text"].to_list()
    text_of = dict(zip(document_ids, texts))
    lists, miner_ranks = [], []
    for (query_id, query), row in zip(queries.select("query_id", "text").iter_rows(), neighbours):
        positive = positives[query_id][0]
        ranked = [document_ids[i] for i in row]
        candidates = [document for document in ranked if document not in positives[query_id]]
        miner_ranks.append(ranked.index(positive) + 1 if positive in ranked else len(ranked) + 1)
        lists.append(CandidateList(query_id, query, [positive] + candidates))
    scores = teacher_scores(family, lists, text_of)
    examples, filtered, short = [], [], 0
    for candidates, list_scores in zip(lists, scores):
        documents = candidates.documents
        dropped = false_negatives(list_scores[0], list_scores[1:], mine.relative_margin)
        filtered += [{"query_id": candidates.query_id, "document_id": document, "teacher_score": float(score),
                      "positive_score": float(list_scores[0])}
                     for document, score, drop in zip(documents[1:], list_scores[1:], dropped) if drop]
        kept = [(documents[0], float(list_scores[0]))] + [
            (document, float(score)) for document, score, drop in zip(documents[1:], list_scores[1:], dropped)
            if not drop][:mine.n_ways - 1]
        if len(kept) < mine.n_ways:
            short += 1
            continue
        examples.append({"query_id": candidates.query_id, "document_ids": [d for d, _ in kept],
                         "scores": [s for _, s in kept]})
    if not examples:
        raise DataError(f"{family.paths.prepared}: no training query keeps {mine.n_ways} candidates after the "
                        f"false-negative filter; lower {family.key('mine.n_ways')} or raise "
                        f"{family.key('mine.candidates')}")
    # Is the teacher worth distilling? How high it and the dense miner rank each training query's positive.
    teacher_mrr = float(np.mean([1 / (int((row[1:] > row[0]).sum()) + 1) for row in scores]))
    negatives = sum(len(candidates.documents) - 1 for candidates in lists)
    report = {"source": "mined", "training_queries": len(examples), "skipped_queries": short,
              "skipped_share": short / len(lists), "false_negatives_dropped": len(filtered),
              "false_negatives_dropped_share": len(filtered) / negatives if negatives else 0.0,
              "teacher_positive_mrr": teacher_mrr,
              "miner_positive_mrr": float(np.mean([1 / rank for rank in miner_ranks]))}
    write_mined(family, examples, queries, corpus, filtered, report)
    print(f"mine: {len(examples)} training queries x {mine.n_ways} teacher-scored documents; "
          f"{len(filtered)} likely false negatives dropped ({report['false_negatives_dropped_share']:.0%} of the "
          f"candidates); {short} queries with too few candidates skipped")
    report_path = family.paths.mined / "mining_report.json"
    for warning in (teacher_warning(teacher_mrr, report["miner_positive_mrr"], report_path, family.key("mine.teacher")),
                    skipped_warning(short, len(lists), report_path, family)):
        if warning:
            print(warning, file=sys.stderr)


def teacher_scores(family: Colbert, lists: list[CandidateList], text_of: dict[str, str]) -> list[np.ndarray]:
    """The teacher's score of every candidate of every list; cross-fitted when the teacher is fine-tuned here."""
    teacher = family.params.mine.teacher
    if teacher.fine_tune is None:
        return split_scores(load_teacher(family)(pairs_of(lists, text_of)), lists)
    tune = teacher.fine_tune
    fold_of = np.random.default_rng(family.params.seed).permutation(len(lists)) % tune.folds
    scores: list[np.ndarray] = [np.zeros(0)] * len(lists)
    for fold in range(tune.folds):
        held_out = [index for index in range(len(lists)) if fold_of[index] == fold]
        training = [lists[index] for index in range(len(lists)) if fold_of[index] != fold]
        model = fine_tuned_teacher(family, training, text_of, fold)
        fold_lists = [lists[index] for index in held_out]
        predicted = BiEncoderTeacher(model, teacher.scale, teacher.batch_size)(pairs_of(fold_lists, text_of))
        for index, row in zip(held_out, split_scores(predicted, fold_lists)):
            scores[index] = row
        print(f"mine: teacher fold {fold + 1}/{tune.folds}: trained on {len(training)} queries, "
              f"scored {len(held_out)}")
    return scores


def fine_tuned_teacher(family: Colbert, lists: list[CandidateList], text_of: dict[str, str], fold: int):
    """The teacher bi-encoder fine-tuned on these lists: each query with its positive and the miner's top
    other candidates as hard negatives, in-batch negatives besides (MultipleNegativesRankingLoss)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    teacher = family.params.mine.teacher
    tune = teacher.fine_tune
    usable = [candidates for candidates in lists if len(candidates.documents) > tune.negatives]
    columns = {"query": [candidates.query for candidates in usable],
               "positive": [text_of[candidates.documents[0]] for candidates in usable],
               **{f"negative_{k}": [text_of[candidates.documents[k]] for candidates in usable]
                  for k in range(1, tune.negatives + 1)}}
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


def read_published_mined_set(family: Colbert) -> None:
    """The recipe's own mined set (query_id, document_ids, scores, labels) in place of mining again."""
    mine = family.params.mine
    frame, origin = read_hub(mine.hub)
    missing = [column for column in ("query_id", "document_ids", "scores") if column not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {', '.join(missing)}; a mined set has query_id, "
                        f"document_ids, scores (and labels) (got {', '.join(frame.columns)})")
    corpus, queries, _ = training_collection(family)
    known_queries, known_documents = set(queries["query_id"]), set(corpus["document_id"])
    examples, short = [], 0
    for row, record in enumerate(frame.iter_rows(named=True), start=1):
        query_id, documents = str(record["query_id"]), [str(d) for d in record["document_ids"]]
        scores = [float(score) for score in record["scores"]]
        labels = record.get("labels") or [1] + [0] * (len(documents) - 1)
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
        if len(documents) < mine.n_ways:
            short += 1
            continue
        order = sorted(range(len(documents)), key=lambda index: -labels[index])[:mine.n_ways]  # positive first
        examples.append({"query_id": query_id, "document_ids": [documents[i] for i in order],
                         "scores": [scores[i] for i in order]})
    if not examples:
        raise DataError(f"{origin}: no row has {mine.n_ways} documents; lower {family.key('mine.n_ways')}")
    teacher_mrr = float(np.mean([1 / (sum(score > example["scores"][0] for score in example["scores"][1:]) + 1)
                                 for example in examples]))
    report = {"source": origin, "training_queries": len(examples), "skipped_queries": short,
              "skipped_share": short / frame.height, "false_negatives_dropped": 0,
              "false_negatives_dropped_share": 0.0, "teacher_positive_mrr": teacher_mrr, "miner_positive_mrr": None}
    write_mined(family, examples, queries, corpus, [], report)
    print(f"mine: {origin}: {len(examples)} training queries x {mine.n_ways} teacher-scored documents; "
          f"{short} rows with fewer documents skipped")
    warning = skipped_warning(short, frame.height, family.paths.mined / "mining_report.json", family)
    if warning:
        print(warning, file=sys.stderr)


SKIPPED_WARNING_SHARE = 0.05  # above this share of skipped training queries, the mining says so


def skipped_warning(skipped: int, queries: int, report: Path, family: Colbert) -> str | None:
    """Training queries skipped for too few candidates are training data lost: past a few percent, say so."""
    if not queries or skipped / queries <= SKIPPED_WARNING_SHARE:
        return None
    return (f"warning: {report}: {skipped} of {queries} training queries ({skipped / queries:.0%}) kept fewer than "
            f"{family.params.mine.n_ways} candidates and were skipped; raise {family.key('mine.candidates')}, lower "
            f"{family.key('mine.n_ways')} or {family.key('mine.relative_margin')}")


def write_mined(family: Colbert, examples: list[dict], queries: pl.DataFrame, corpus: pl.DataFrame,
                filtered: list[dict], report: dict) -> None:
    """pylate's distillation layout (train, queries, documents), the dropped false negatives and the report."""
    train = pl.DataFrame(examples, schema={"query_id": pl.String, "document_ids": pl.List(pl.String),
                                           "scores": pl.List(pl.Float32)})
    used = set(train["query_id"])
    with atomic_directory(family.paths.mined) as out:
        train.write_parquet(out / "train.parquet")
        used_queries = queries.filter(pl.col("query_id").is_in(used)).select("query_id", "text")
        used_queries.write_parquet(out / "queries.parquet")
        corpus.write_parquet(out / "documents.parquet")
        pl.DataFrame(filtered, schema={"query_id": pl.String, "document_id": pl.String, "teacher_score": pl.Float32,
                                       "positive_score": pl.Float32}).write_parquet(out / "false_negatives.parquet")
        atomic_write_json(out / "mining_report.json", report)
