"""Recipe 2: ColBERT late interaction (pylate), distilled from a cross-encoder teacher, pooling-aware.

Inside every training forward pass each document's token embeddings are pooled with
k-means into ceil(tokens / pool_factor) cluster means, the pool factor drawn once per
batch from a seeded generator, so the model learns to keep its quality when the
stored vectors are compressed. Evaluation measures that claim: base, fine-tuned
without pooling and pooling-aware fine-tuned, at every pool factor, with k-means and
with pylate's own hierarchical pooling.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from transformers import set_seed

from retrieval_pipeline.core.beir import (
    Collection,
    collection_from_frames,
    load_collection,
    read_beir_folder,
    write_collection,
)
from retrieval_pipeline.core.family import Family, Scores, write_scores
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json
from retrieval_pipeline.core.late_interaction import maxsim_search, plaid_search
from retrieval_pipeline.core.metrics import evaluate_run
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.models import check_length, device, load_sentence_transformer, loading, locate
from retrieval_pipeline.core.params import FamilyParams, ParamsError, Section, TrainingSection
from retrieval_pipeline.core.pooling import PoolFactorSampler, PoolingDistillation, hierarchical_pool, kmeans_pool
from retrieval_pipeline.core.preflight import Requirement, TrainingRun
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.core.sources import DataError, HubSource, read_hub
from retrieval_pipeline.core.splits import add_split_column
from retrieval_pipeline.core.teachers import (
    BiEncoderTeacher,
    CrossEncoderTeacher,
    YesLogitTeacher,
    false_negatives,
    relevance,
    teacher_warning,
)
from retrieval_pipeline.core.training import log_training, shared_arguments
from retrieval_pipeline.data.world import build_world, claim_collection

# ---------------------------------------------------------------------------
# Params
# ---------------------------------------------------------------------------


class BeirHub(Section):
    corpus: HubSource
    queries: HubSource
    qrels: HubSource  # its split is ignored: data.train_split and data.test_split are read


class BeirLocal(Section):
    path: Path


class SyntheticClaims(Section):
    facilities: PositiveInt = 48
    companies: PositiveInt = 8
    chunks_per_abstract: PositiveInt = 1  # register chunks per document
    claims_per_abstract: PositiveInt = 1
    test_size: float = Field(default=0.2, gt=0, lt=1)


class DataParams(Section):
    source: Literal["synthetic", "hf", "local"]
    hf: BeirHub | None = None
    local: BeirLocal | None = None
    synthetic: SyntheticClaims = SyntheticClaims()
    train_split: str = "train"
    test_split: str = "test"
    nanobeir: list[str] = []  # hub ids of NanoBEIR collections evaluated beside the test split

    @model_validator(mode="after")
    def _selected_source_is_configured(self) -> DataParams:
        if self.source in ("hf", "local") and getattr(self, self.source) is None:
            raise ValueError(f"source is '{self.source}' but the '{self.source}' section is missing")
        return self

    def describe(self) -> str:
        if self.source == "hf":
            return f"BEIR {self.hf.corpus.path} with qrels {self.hf.qrels.path}"
        if self.source == "local":
            return f"BEIR folder {self.local.path}"
        return "synthetic world (claims)"

    def hub_datasets(self) -> list[str]:
        return list(dict.fromkeys([self.hf.corpus.path, self.hf.queries.path, self.hf.qrels.path])) \
            if self.source == "hf" else []


class PoolingParams(Section):
    """How document tokens are k-means pooled, the same in training and evaluation."""
    kmeans_iterations: PositiveInt
    protected_tokens: int = Field(ge=0)  # leading tokens ([CLS]) kept out of pooling


class ModelParams(Section):
    base: str = Field(min_length=1)
    query_length: PositiveInt
    document_length: PositiveInt
    embedding_size: PositiveInt
    pooling: PoolingParams


class TeacherTraining(Section):
    """Fine-tune a bi-encoder teacher in-domain before it scores (MultipleNegativesRankingLoss), cross-fitted: the
    training queries are cut into `folds`, and each fold's candidate lists are scored by a teacher trained on the
    other folds, so no query is scored by a model that has seen its own relevance label."""

    folds: int = Field(ge=2)
    negatives: int = Field(ge=0)  # per pair: the miner's top-ranked other candidates, as hard negatives
    epochs: PositiveInt
    learning_rate: PositiveFloat
    batch_size: PositiveInt
    warmup_ratio: float = Field(ge=0, lt=1)


class TeacherParams(Section):
    kind: Literal["cross_encoder", "yes_logit", "bi_encoder"]
    model: str = Field(min_length=1)
    prompt: str = ""  # yes_logit only
    scale: PositiveFloat = 20.0  # bi_encoder only: score = scale x cosine
    max_length: PositiveInt
    batch_size: PositiveInt
    fine_tune: TeacherTraining | None = None  # bi_encoder only: train it on the collection first

    @model_validator(mode="after")
    def _fine_tune_needs_a_bi_encoder(self) -> TeacherParams:
        if self.fine_tune is not None and self.kind != "bi_encoder":
            raise ValueError("fine_tune: expected kind 'bi_encoder' (rerankers are used as they are)")
        return self


class MineParams(Section):
    source: Literal["mine", "hub"]  # mine: dense candidates scored by the teacher; hub: a published mined set
    hub: HubSource | None = None  # the published set (query_id, document_ids, scores, labels), ids of the collection
    miner_model: str = Field(min_length=1)
    candidates: PositiveInt  # dense top-k per training query
    n_ways: int = Field(ge=2)  # documents per query in a training example: the positive and n_ways - 1 others
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt
    teacher: TeacherParams

    @model_validator(mode="after")
    def _hub_source_is_configured(self) -> MineParams:
        if self.source == "hub" and self.hub is None:
            raise ValueError("source is 'hub' but the 'hub' section (path, split) naming the mined set is missing")
        return self


class TrainParams(TrainingSection):
    pool_factors: list[PositiveInt] = Field(min_length=1)  # drawn uniformly, once per batch
    pooling_ablation: bool  # also train with pool factor 1 only, to separate pooling-aware training from fine-tuning
    epochs: PositiveInt
    learning_rate: PositiveFloat


class IndexParams(Section):
    """Above `above_documents` documents, search a PLAID index rather than scoring every document exactly."""

    above_documents: PositiveInt
    nbits: PositiveInt  # bits per residual dimension
    kmeans_iterations: PositiveInt
    n_ivf_probe: PositiveInt  # nearest centroids probed per query token
    n_full_scores: PositiveInt  # candidates scored with their decompressed vectors


class EvaluateParams(Section):
    pool_factors: list[PositiveInt] = Field(min_length=1)
    methods: list[Literal["kmeans", "hierarchical"]] = Field(min_length=1)
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)
    index: IndexParams


class ColbertParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams


# ---------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------


def base_colbert(params: ModelParams, seed: int):
    """The base model as a pylate ColBERT; a new projection layer is initialised from `seed`."""
    from pylate.models import ColBERT

    set_seed(seed)
    source = locate(params.base, "colbert.model.base")
    with loading("colbert.model.base", params.base):
        model = ColBERT(source.location, revision=source.revision, embedding_size=params.embedding_size,
                        query_length=params.query_length, document_length=params.document_length, device=device(),
                        model_kwargs={"use_safetensors": True})
    for length, key in ((params.query_length, "query_length"), (params.document_length, "document_length")):
        check_length(model[0].auto_model, length, f"colbert.model.{key}")
    return model


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


def collection_name(repo: str) -> str:
    return repo.rstrip("/").split("/")[-1]


def read_nanobeir(repo: str) -> Collection:
    """A NanoBEIR collection from the hub: configs corpus, queries and qrels, each in split `train` (evaluated as
    a test split); its qrels list only relevant pairs (no score column), so each counts as relevance 1."""
    frames, origins = {}, {}
    for config in ("corpus", "queries", "qrels"):
        frames[config], origins[config] = read_hub(HubSource(path=repo, name=config, split="train"))
    qrels = frames["qrels"]
    if "score" not in qrels.columns:
        qrels = qrels.with_columns(score=pl.lit(1))
    return collection_from_frames(frames["corpus"], frames["queries"], {"test": qrels},
                                  {**origins, "test": origins["qrels"]})


class Colbert(Family):
    name = "colbert"
    recipe = "late interaction with pooling-aware distillation (recipe 2 in docs/recipes.md)"
    Params = ColbertParams
    params: ColbertParams

    # prepare -----------------------------------------------------------------

    def _read(self) -> Collection:
        data = self.params.data
        splits = (data.train_split, data.test_split)
        if data.source == "synthetic":
            synthetic = data.synthetic
            world = build_world(self.params.seed, synthetic.facilities, synthetic.companies)
            corpus, queries, qrels = claim_collection(world, synthetic.claims_per_abstract, self.params.seed,
                                                      synthetic.chunks_per_abstract)
            queries = pl.DataFrame(queries)
            split = add_split_column(queries, synthetic.test_size, 0.0, self.params.seed, "synthetic world")
            split = split.with_columns(pl.col("split").replace({"train": data.train_split, "test": data.test_split}))
            qrels = pl.DataFrame(qrels).join(split.select(pl.col("_id").alias("query-id"), "split"), on="query-id")
            origins = {"corpus": "synthetic corpus", "queries": "synthetic queries",
                       **{name: f"synthetic qrels[{name}]" for name in splits}}
            return collection_from_frames(pl.DataFrame(corpus), queries, {
                name: qrels.filter(pl.col("split") == name).drop("split") for name in splits}, origins)
        if data.source == "local":
            return read_beir_folder(data.local.path, splits)
        hub = data.hf
        corpus, corpus_origin = read_hub(hub.corpus)
        queries, queries_origin = read_hub(hub.queries)
        loaded = {split: read_hub(hub.qrels.model_copy(update={"split": split})) for split in splits}
        origins = {"corpus": corpus_origin, "queries": queries_origin,
                   **{split: origin for split, (_, origin) in loaded.items()}}
        return collection_from_frames(corpus, queries, {split: frame for split, (frame, _) in loaded.items()}, origins)

    def prepare(self) -> None:
        collection = self._read()
        nanobeir = {repo: read_nanobeir(repo) for repo in self.params.data.nanobeir}
        with atomic_directory(self.paths.prepared) as out:
            write_collection(collection, out)
            for repo, judged in nanobeir.items():
                folder = out / "nanobeir" / collection_name(repo)
                folder.mkdir(parents=True)
                write_collection(judged, folder)
        counts = dict(collection.qrels.unique(["query_id", "split"])["split"].value_counts().iter_rows())
        extra = f"; NanoBEIR: {', '.join(collection_name(repo) for repo in nanobeir)}" if nanobeir else ""
        print(f"prepare: {collection.corpus.height} documents; judged queries {counts}{extra}")

    def requirements(self) -> list[Requirement]:
        data, mine, model = self.params.data, self.params.mine, self.params.model
        needs = []
        if data.source == "hf":
            hub = data.hf
            needs += [Requirement("dataset", f"{self.name}.data.hf.corpus", "prepare", dataset=hub.corpus),
                      Requirement("dataset", f"{self.name}.data.hf.queries", "prepare", dataset=hub.queries),
                      *[Requirement("dataset", f"{self.name}.data.hf.qrels", "prepare",
                                    dataset=hub.qrels.model_copy(update={"split": split}))
                        for split in (data.train_split, data.test_split)]]
        needs += [Requirement("dataset", f"{self.name}.data.nanobeir", "prepare",
                              dataset=HubSource(path=repo, name=config, split="train"))
                  for repo in data.nanobeir for config in ("corpus", "queries", "qrels")]
        if mine.source == "hub":
            needs.append(Requirement("dataset", f"{self.name}.mine.hub", "mine", dataset=mine.hub))
        else:
            needs += [Requirement("model", f"{self.name}.mine.miner_model", "mine", model=mine.miner_model),
                      Requirement("model", f"{self.name}.mine.teacher.model", "mine", model=mine.teacher.model)]
        needs.append(Requirement("model", f"{self.name}.model.base", "train, evaluate", model=model.base))
        return needs

    def training_runs(self) -> list[TrainingRun]:
        mine, train = self.params.mine, self.params.train
        runs = [TrainingRun("train (each variant)", self.params.model.base, f"{self.name}.model.base",
                            train.batch_size * (1 + mine.n_ways), self.params.model.document_length, train.bf16)]
        tune = mine.teacher.fine_tune
        if mine.source == "mine" and tune is not None:
            runs.append(TrainingRun("mine (teacher, each fold)", mine.teacher.model, f"{self.name}.mine.teacher.model",
                                    tune.batch_size * (2 + tune.negatives), mine.teacher.max_length, True))
        return runs

    # mine --------------------------------------------------------------------

    def _teacher(self) -> BiEncoderTeacher | CrossEncoderTeacher | YesLogitTeacher:
        teacher = self.params.mine.teacher
        reference = Path(teacher.model)
        outputs = [self.paths.root / folder for folder in ("data", "models", "eval")]
        if reference.exists() and any(reference.resolve().is_relative_to(folder.resolve()) for folder in outputs):
            raise ParamsError(f"{self.name}.mine.teacher.model: {teacher.model} is another stage's output, which "
                              f"mine@{self.name} does not depend on in dvc.yaml, so DVC would not mine again when it "
                              "changes; expected a hub id, a package or a folder outside data/, models/ and eval/ "
                              "(or teacher.fine_tune, which trains an in-domain teacher in this stage)")
        if teacher.kind == "cross_encoder":
            return CrossEncoderTeacher.load(teacher.model, teacher.max_length, teacher.batch_size)
        if teacher.kind == "bi_encoder":
            return BiEncoderTeacher(self._bi_encoder(), teacher.scale, teacher.batch_size)
        return YesLogitTeacher(teacher.model, teacher.prompt, teacher.max_length, teacher.batch_size)

    def _bi_encoder(self):
        teacher = self.params.mine.teacher
        model = load_sentence_transformer(teacher.model, f"{self.name}.mine.teacher.model")
        model.max_seq_length = teacher.max_length
        return model

    def _training_collection(self) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, list[str]]]:
        """The corpus, the training queries with a relevant document, and each one's relevant documents."""
        collection = load_collection(self.paths.prepared)
        qrels = collection.positives(self.params.data.train_split)
        positives = {query: group["document_id"].to_list()
                     for (query,), group in qrels.group_by("query_id", maintain_order=True)}
        queries = collection.queries.filter(pl.col("query_id").is_in(list(positives)))
        return collection.corpus, queries, positives

    def mine(self) -> None:
        if self.params.mine.source == "hub":
            self._read_published_mined_set()
            return
        mine = self.params.mine
        corpus, queries, positives = self._training_collection()
        miner = load_sentence_transformer(mine.miner_model, f"{self.name}.mine.miner_model")
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
        scores = self._teacher_scores(lists, text_of)
        examples, filtered, short = [], [], 0
        for candidates, list_scores in zip(lists, scores):
            documents = candidates.documents
            relevant = relevance(list_scores, mine.teacher.kind, mine.teacher.scale)
            dropped = false_negatives(relevant[0], relevant[1:], mine.relative_margin)
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
            raise DataError(f"{self.paths.prepared}: no training query keeps {mine.n_ways} candidates after the "
                            "false-negative filter; lower mine.n_ways or raise mine.candidates")
        # Is the teacher worth distilling? How high it and the dense miner rank each training query's positive.
        teacher_mrr = float(np.mean([1 / (int((row[1:] > row[0]).sum()) + 1) for row in scores]))
        report = {"source": "mined", "training_queries": len(examples), "skipped_queries": short,
                  "false_negatives_dropped": len(filtered), "teacher_positive_mrr": teacher_mrr,
                  "miner_positive_mrr": float(np.mean([1 / rank for rank in miner_ranks]))}
        self._write_mined(examples, queries, corpus, filtered, report)
        print(f"mine: {len(examples)} training queries x {mine.n_ways} teacher-scored documents; "
              f"{len(filtered)} likely false negatives dropped; {short} queries with too few candidates skipped")
        warning = teacher_warning(teacher_mrr, report["miner_positive_mrr"], self.paths.mined / "mining_report.json")
        if warning:
            print(warning, file=sys.stderr)

    def _teacher_scores(self, lists: list[CandidateList], text_of: dict[str, str]) -> list[np.ndarray]:
        """The teacher's score of every candidate of every list; cross-fitted when the teacher is fine-tuned here."""
        teacher = self.params.mine.teacher
        if teacher.fine_tune is None:
            return split_scores(self._teacher()(pairs_of(lists, text_of)), lists)
        tune = teacher.fine_tune
        fold_of = np.random.default_rng(self.params.seed).permutation(len(lists)) % tune.folds
        scores: list[np.ndarray] = [np.zeros(0)] * len(lists)
        for fold in range(tune.folds):
            held_out = [index for index in range(len(lists)) if fold_of[index] == fold]
            training = [lists[index] for index in range(len(lists)) if fold_of[index] != fold]
            model = self._fine_tuned_teacher(training, text_of, fold)
            fold_lists = [lists[index] for index in held_out]
            predicted = BiEncoderTeacher(model, teacher.scale, teacher.batch_size)(pairs_of(fold_lists, text_of))
            for index, row in zip(held_out, split_scores(predicted, fold_lists)):
                scores[index] = row
            print(f"mine: teacher fold {fold + 1}/{tune.folds}: trained on {len(training)} queries, "
                  f"scored {len(held_out)}")
        return scores

    def _fine_tuned_teacher(self, lists: list[CandidateList], text_of: dict[str, str], fold: int):
        """The teacher bi-encoder fine-tuned on these lists: each query with its positive and the miner's top
        other candidates as hard negatives, in-batch negatives besides (MultipleNegativesRankingLoss)."""
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers

        teacher = self.params.mine.teacher
        tune = teacher.fine_tune
        usable = [candidates for candidates in lists if len(candidates.documents) > tune.negatives]
        columns = {"query": [candidates.query for candidates in usable],
                   "positive": [text_of[candidates.documents[0]] for candidates in usable],
                   **{f"negative_{k}": [text_of[candidates.documents[k]] for candidates in usable]
                      for k in range(1, tune.negatives + 1)}}
        set_seed(self.params.seed + fold)
        model = self._bi_encoder()
        scratch = self.paths.scratch("teacher-trainer")
        args = SentenceTransformerTrainingArguments(
            output_dir=str(scratch), num_train_epochs=tune.epochs, per_device_train_batch_size=tune.batch_size,
            learning_rate=tune.learning_rate, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no",
            logging_steps=10 ** 6, **shared_arguments(self.params.seed + fold, True, tune.warmup_ratio))
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(columns),
                                             loss=MultipleNegativesRankingLoss(model, scale=teacher.scale))
        trainer.train()
        shutil.rmtree(scratch, ignore_errors=True)
        return model

    def _read_published_mined_set(self) -> None:
        """The recipe's own mined set (query_id, document_ids, scores, labels) in place of mining again."""
        mine = self.params.mine
        frame, origin = read_hub(mine.hub)
        missing = [column for column in ("query_id", "document_ids", "scores") if column not in frame.columns]
        if missing:
            raise DataError(f"{origin}: missing column(s) {', '.join(missing)}; a mined set has query_id, "
                            f"document_ids, scores (and labels) (got {', '.join(frame.columns)})")
        corpus, queries, _ = self._training_collection()
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
                raise DataError(f"{origin}: row {row}: query_id {query_id!r} is not a "
                                f"{self.params.data.train_split} query of {self.params.data.describe()}")
            unknown = [document for document in documents if document not in known_documents]
            if unknown:
                raise DataError(f"{origin}: row {row}: document {unknown[0]!r} is not in the corpus of "
                                f"{self.params.data.describe()}")
            if len(documents) < mine.n_ways:
                short += 1
                continue
            order = sorted(range(len(documents)), key=lambda index: -labels[index])[:mine.n_ways]  # positive first
            examples.append({"query_id": query_id, "document_ids": [documents[i] for i in order],
                             "scores": [scores[i] for i in order]})
        if not examples:
            raise DataError(f"{origin}: no row has {mine.n_ways} documents; lower mine.n_ways")
        teacher_mrr = float(np.mean([1 / (sum(score > example["scores"][0] for score in example["scores"][1:]) + 1)
                                     for example in examples]))
        report = {"source": origin, "training_queries": len(examples), "skipped_queries": short,
                  "false_negatives_dropped": 0, "teacher_positive_mrr": teacher_mrr, "miner_positive_mrr": None}
        self._write_mined(examples, queries, corpus, [], report)
        print(f"mine: {origin}: {len(examples)} training queries x {mine.n_ways} teacher-scored documents; "
              f"{short} rows with fewer documents skipped")

    def _write_mined(self, examples: list[dict], queries: pl.DataFrame, corpus: pl.DataFrame, filtered: list[dict],
                     report: dict) -> None:
        """pylate's distillation layout (train, queries, documents), the dropped false negatives and the report."""
        train = pl.DataFrame(examples, schema={"query_id": pl.String, "document_ids": pl.List(pl.String),
                                               "scores": pl.List(pl.Float32)})
        used = set(train["query_id"])
        with atomic_directory(self.paths.mined) as out:
            train.write_parquet(out / "train.parquet")
            used_queries = queries.filter(pl.col("query_id").is_in(used)).select("query_id", "text")
            used_queries.write_parquet(out / "queries.parquet")
            corpus.write_parquet(out / "documents.parquet")
            pl.DataFrame(filtered, schema={"query_id": pl.String, "document_id": pl.String, "teacher_score": pl.Float32,
                                           "positive_score": pl.Float32}).write_parquet(out / "false_negatives.parquet")
            atomic_write_json(out / "mining_report.json", report)

    # train -------------------------------------------------------------------

    def variants(self) -> dict[str, list[int]]:
        """Each trained model and the pool factors its training draws from; the ablation comes first."""
        train = self.params.train
        without_pooling = {"without_pooling": [1]} if train.pooling_ablation else {}
        return {**without_pooling, "pooling_aware": train.pool_factors}

    def training_examples(self):
        from datasets import Dataset

        train = pl.read_parquet(self.paths.mined / "train.parquet")
        queries = dict(pl.read_parquet(self.paths.mined / "queries.parquet").iter_rows())
        documents = dict(pl.read_parquet(self.paths.mined / "documents.parquet").iter_rows())
        return Dataset.from_dict({"query": [queries[q] for q in train["query_id"]],
                                  "documents": [[documents[d] for d in ids] for ids in train["document_ids"]],
                                  "scores": train["scores"].to_list()})

    def build_trainer(self, model, pool_factors: list[int], examples, output_dir: Path):
        from pylate.utils import ColBERTCollator
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

        train, pooling = self.params.train, self.params.model.pooling
        loss = PoolingDistillation(model, PoolFactorSampler(pool_factors, self.params.seed),
                                   pooling.kmeans_iterations, pooling.protected_tokens)
        args = SentenceTransformerTrainingArguments(
            output_dir=str(output_dir), num_train_epochs=train.epochs, per_device_train_batch_size=train.batch_size,
            learning_rate=train.learning_rate, save_strategy="no", logging_steps=train.logging_steps,
            **shared_arguments(self.params.seed, train.bf16, train.warmup_ratio))
        return SentenceTransformerTrainer(model=model, args=args, train_dataset=examples, loss=loss,
                                          data_collator=ColBERTCollator(tokenize_fn=model.tokenize))

    def train(self) -> None:
        scratch = self.paths.scratch("trainer")
        examples = self.training_examples()
        scores: dict[str, Scores] = {}
        with atomic_directory(self.paths.model) as out:
            for variant, pool_factors in self.variants().items():
                model = base_colbert(self.params.model, self.params.seed)
                trainer = self.build_trainer(model, pool_factors, examples, scratch)
                log_training(trainer, self.paths.training_log / variant, f"train {variant}")
                print(f"train: {variant}: pool factors {pool_factors}, {len(examples)} queries")
                trainer.train()
                model.save_pretrained(str(out / variant), create_model_card=False)
                scores[variant] = self.score(model, variant)
                self.card(variant, pool_factors, scores[variant], len(examples)).write(out / variant)
        write_scores(self.paths.trained_scores, scores)
        shutil.rmtree(scratch, ignore_errors=True)

    def card(self, variant: str, pool_factors: list[int], scores: Scores, training_queries: int) -> ModelCard:
        model, mine, data = self.params.model, self.params.mine, self.params.data
        pooling = (f"Trained pooling-aware: in every training step the documents' token embeddings were k-means "
                   f"pooled at a pool factor drawn uniformly from {pool_factors}, so that it keeps its quality when "
                   "stored documents are pooled." if pool_factors != [1] else
                   "Trained without pooling (pool factor 1): the ablation that separates the gain of pooling-aware "
                   "training from the gain of fine-tuning.")
        return self.model_card(
            title=f"ColBERT ({variant})",
            summary=(f"A ColBERT late-interaction retriever ({model.embedding_size}-dim token embeddings), distilled "
                     f"with pylate's KL loss from the teacher `{mine.teacher.model}` ({mine.teacher.kind}) on each "
                     f"query's {mine.n_ways} mined candidates. {pooling}"),
            base_model=model.base,
            training_data=(f"{data.describe()}: {training_queries} training queries (split `{data.train_split}`), "
                           f"candidates from `{mine.miner_model}`, likely false negatives dropped"),
            hub_datasets=data.hub_datasets(),
            metrics=CardMetrics(dataset=data.describe(), queries=scores.metrics["queries"], task="retrieval",
                                rows={f"{method} pooling, pool factor {key[3:]}": values
                                      for method, by_factor in scores.metrics["test"].items()
                                      for key, values in by_factor.items()},
                                columns=["ndcg@10", "mrr@10", "recall@100", "vectors_per_document"]),
            usage=f"""from pylate import models
model = models.ColBERT("models/{self.name}/{variant}")
# pool_factor: pylate's hierarchical pooling of the stored document vectors
documents = model.encode(["The wind farm opened in 2019 with forty turbines."], is_query=False, pool_factor=2)
queries = model.encode(["When did the wind farm open?"], is_query=True)""",
            library_name="PyLate", pipeline_tag="sentence-similarity",
            tags=["ColBERT", "late-interaction", "knowledge-distillation", "token-pooling", variant])

    # evaluate ----------------------------------------------------------------

    def test_set(self) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, int]]]:
        """The collection's test split: its queries, the whole corpus and its qrels."""
        return self._collection(self.paths.prepared, self.params.data.test_split)

    def evaluation_sets(self) -> dict[str, tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, int]]]]:
        """The test split, then each NanoBEIR collection named in data.nanobeir."""
        sets = {self.params.data.test_split: self.test_set()}
        for repo in self.params.data.nanobeir:
            sets[collection_name(repo)] = self._collection(self.paths.prepared / "nanobeir" / collection_name(repo),
                                                           "test")
        return sets

    @staticmethod
    def _collection(folder: Path, split: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, int]]]:
        collection = load_collection(folder)
        queries, qrels = collection.split(split)
        return queries, collection.corpus, qrels

    def score(self, model, label: str) -> Scores:
        """One model on the test split and on each NanoBEIR collection: metrics per pooling method and pool factor
        (`test`, `nanobeir`), the test query count, and per-query rows."""
        metrics: dict = {"nanobeir": {}}
        query_rows: list[dict] = []
        for position, (name, collection) in enumerate(self.evaluation_sets().items()):
            by_method, rows = self._score_collection(model, label, *collection, dataset=name)
            if position == 0:
                metrics["test"], metrics["queries"] = by_method, collection[0].height
            else:
                metrics["nanobeir"][name] = by_method
            query_rows += rows
        return Scores(metrics, {"per_query": pl.DataFrame(query_rows)})

    def _score_collection(self, model, label: str, queries: pl.DataFrame, corpus: pl.DataFrame,
                          qrels: dict[str, dict[str, int]], dataset: str) -> tuple[dict[str, dict], list[dict]]:
        evaluate = self.params.evaluate
        document_ids = corpus["document_id"].to_list()
        query_vectors = [torch.as_tensor(v) for v in model.encode(
            queries["text"].to_list(), is_query=True, batch_size=evaluate.batch_size, show_progress_bar=True)]
        token_vectors = [torch.as_tensor(v) for v in model.encode(
            corpus["text"].to_list(), is_query=False, batch_size=evaluate.batch_size, show_progress_bar=True)]
        metrics: dict[str, dict] = {}
        query_rows = []
        for method in evaluate.methods:
            for pool_factor in evaluate.pool_factors:
                pooled = self._pool(token_vectors, method, pool_factor)
                top = self.search(query_vectors, pooled)
                run = {query: [document_ids[i] for i in row if i >= 0] for query, row in zip(queries["query_id"], top)}
                means, per_query = evaluate_run(run, qrels, cutoffs=(10, 100))
                vectors = [len(document) for document in pooled]
                metrics.setdefault(method, {})[f"pf_{pool_factor}"] = {
                    "ndcg@10": means["ndcg@10"], "mrr@10": means["mrr@10"], "recall@100": means["recall@100"],
                    "vectors_per_document": float(np.mean(vectors)), "stored_vectors": int(np.sum(vectors))}
                query_rows += [{"model": label, "dataset": dataset, "method": method, "pool_factor": pool_factor,
                                "query_id": query, **values} for query, values in per_query.items()]
        return metrics, query_rows

    def search(self, queries: list[torch.Tensor], documents: list[torch.Tensor]) -> np.ndarray:
        """Each query's top_k document positions: exact MaxSim up to evaluate.index.above_documents documents, a
        PLAID index above (padded with -1 where it returns fewer)."""
        evaluate = self.params.evaluate
        if len(documents) <= evaluate.index.above_documents:
            return maxsim_search(queries, documents, evaluate.top_k)
        return plaid_search(queries, documents, evaluate.top_k, evaluate.index,
                            self.paths.scratch("index"), self.params.seed)

    def baseline_scores(self) -> dict[str, Scores]:
        return {"base": self.score(base_colbert(self.params.model, self.params.seed), "base")}

    def compare(self, scores: dict[str, Scores]) -> None:
        labels = ["base", *self.variants()]  # the plot's columns in a fixed order
        metrics: dict = {"mining": json.loads((self.paths.mined / "mining_report.json").read_text())}
        for label in labels:
            metrics[label] = scores[label].metrics["test"]
            for name, by_method in scores[label].metrics["nanobeir"].items():
                metrics.setdefault("nanobeir", {}).setdefault(name, {})[label] = by_method
        first_method = self.params.evaluate.methods[0]
        plot = "pool_factor," + ",".join(labels) + "\n" + "".join(
            f"{pf}," + ",".join(f"{metrics[label][first_method][f'pf_{pf}']['ndcg@10']:.6f}" for label in labels)
            + "\n" for pf in sorted(self.params.evaluate.pool_factors))
        per_query = pl.concat([scores[label].tables["per_query"] for label in labels])
        self.write_evaluation(metrics, {"per_query": per_query}, {"ndcg_by_pool_factor": plot})
        for label in labels:
            for method, by_factor in metrics[label].items():
                print(f"evaluate: {label:16s} {method:12s} " + "  ".join(
                    f"PF{key[3:]} {values['ndcg@10']:.4f}" for key, values in by_factor.items()))

    def _pool(self, token_vectors: list[torch.Tensor], method: str, pool_factor: int) -> list[torch.Tensor]:
        if pool_factor == 1:
            return token_vectors
        pooling = self.params.model.pooling
        if method == "hierarchical":
            return [hierarchical_pool(vectors, pool_factor, pooling.protected_tokens) for vectors in token_vectors]
        return [kmeans_pool(vectors, pool_factor, pooling.kmeans_iterations, pooling.protected_tokens)
                for vectors in token_vectors]


FAMILY = Colbert
