"""Recipe 4: a Matryoshka bi-encoder, MultipleNegativesRankingLoss inside MatryoshkaLoss.

Evaluated at every truncated dimension, so the quality each dimension keeps can be
read next to the storage it saves.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import polars as pl
import torch
from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator
from sentence_transformers.evaluation import SentenceEvaluator

from retrieval_pipeline.core.beir import TrainingSplits, read_beir_folder, training_splits
from retrieval_pipeline.core.family import Family, Scores, concat_tables, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.metrics import evaluate_run
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.models import check_length, load_sentence_transformer
from retrieval_pipeline.core.params import FamilyParams, Section, TrainingSection
from retrieval_pipeline.core.preflight import Requirement, TrainingRun
from retrieval_pipeline.core.retrieval import bounded_corpus, search, truncate_and_normalise
from retrieval_pipeline.core.sources import (
    DataError,
    SourceParams,
    SyntheticSource,
    map_columns,
    read_source,
    require_consistent,
    require_evaluable,
    require_ids,
    require_text,
    require_unique,
)
from retrieval_pipeline.core.splits import add_split_column
from retrieval_pipeline.core.training import log_training, shared_arguments
from retrieval_pipeline.data.world import build_world, knowledge_base_questions

PRIMARY_METRIC = "ndcg@10"


class Columns(Section):
    """Which source column feeds each role; query_id is optional (row numbers otherwise)."""

    anchor: str
    positive: str
    chunk_id: str
    query_id: str | None = None


class DataParams(SourceParams):
    columns: Columns
    test_size: float = Field(gt=0, lt=1)
    dev_size: float = Field(ge=0, lt=1)


class ModelParams(Section):
    base: str = Field(min_length=1)
    dims: list[PositiveInt] = Field(min_length=1)
    max_seq_length: PositiveInt | None = None
    trust_remote_code: bool = False

    @field_validator("dims")
    @classmethod
    def _dims_descend(cls, dims: list[int]) -> list[int]:
        if any(later >= earlier for earlier, later in zip(dims, dims[1:])):
            raise ValueError(f"expected distinct dims from largest to smallest, e.g. [768, 512, 256] (got {dims})")
        return dims


class MineParams(Section):
    num_negatives: PositiveInt
    range_max: PositiveInt
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt


class TrainParams(TrainingSection):
    use_hard_negatives: bool
    epochs: PositiveInt
    gradient_accumulation_steps: PositiveInt
    learning_rate: PositiveFloat
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"]
    optimizer: Literal["adamw_torch", "adamw_torch_fused"]
    tf32: bool
    no_duplicates: bool
    best_checkpoint_dim: PositiveInt


class EvaluateParams(Section):
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)
    dev_corpus_size: PositiveInt  # documents searched by the dev evaluation of each epoch (judged + a fixed sample)


class MatryoshkaParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams

    @model_validator(mode="after")
    def _best_dim_is_trained(self) -> MatryoshkaParams:
        if self.train.best_checkpoint_dim not in self.model.dims:
            raise ValueError(f"train.best_checkpoint_dim: expected one of model.dims {self.model.dims} "
                             f"(got {self.train.best_checkpoint_dim})")
        return self


def synthetic_rows(source: SyntheticSource, seed: int) -> list[dict]:
    """The shared world as a question/chunk dataset with the hub dataset's column names."""
    world = build_world(seed, source.facilities, source.companies)
    return knowledge_base_questions(world, source.questions_per_chunk, seed)


def check_dims(model, dims: list[int], model_name: str) -> None:
    size = model.get_sentence_embedding_dimension()
    if max(dims) > size:
        raise DataError(f"matryoshka.model.dims: {max(dims)} is larger than the embedding size {size} of "
                        f"{model_name}; expected dims <= {size}")


def rank_at_dims(model, queries: pl.DataFrame, corpus: pl.DataFrame, dims: list[int], batch_size: int,
                 top_k: int) -> dict[int, tuple[dict[str, list[str]], dict[str, list[float]]]]:
    """Encode once at full size, then rank the corpus for each truncated dimension."""
    documents = model.encode(corpus["text"].to_list(), batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=True)
    questions = model.encode(queries["text"].to_list(), batch_size=batch_size, convert_to_numpy=True,
                             show_progress_bar=True)
    document_ids = corpus["chunk_id"].to_list()
    ranked = {}
    for dim in dims:
        scores, indices = search(truncate_and_normalise(questions, dim), truncate_and_normalise(documents, dim), top_k)
        run = {query: [document_ids[i] for i in row] for query, row in zip(queries["query_id"], indices)}
        run_scores = {query: row.tolist() for query, row in zip(queries["query_id"], scores)}
        ranked[dim] = (run, run_scores)
    return ranked


def qrels_of(qrels: pl.DataFrame) -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = {}
    for query, chunk, grade in qrels.select("query_id", "chunk_id", "relevance").iter_rows():
        judged.setdefault(query, {})[chunk] = grade
    return judged


class DimensionEvaluator(SentenceEvaluator):
    """Dev-set retrieval at every Matryoshka dim during training (one encode per evaluation)."""

    def __init__(self, queries: pl.DataFrame, corpus: pl.DataFrame, qrels: pl.DataFrame, dims: list[int],
                 primary_dim: int, batch_size: int, name: str = "dev") -> None:
        super().__init__()
        self.queries, self.corpus, self.qrels = queries, corpus, qrels_of(qrels)
        self.dims, self.batch_size, self.name = dims, batch_size, name
        self.primary_metric = f"{name}_dim_{primary_dim}_{PRIMARY_METRIC}"

    def __call__(self, model, output_path=None, epoch=-1, steps=-1) -> dict[str, float]:
        metrics = {}
        for dim, (run, _) in rank_at_dims(model, self.queries, self.corpus, self.dims, self.batch_size, 100).items():
            means, _ = evaluate_run(run, self.qrels)
            metrics.update({f"dim_{dim}_{name}": value for name, value in means.items()})
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics


class Matryoshka(Family):
    name = "matryoshka"
    recipe = "Matryoshka bi-encoder for domain RAG (recipe 4 in docs/recipes.md)"
    Params = MatryoshkaParams
    params: MatryoshkaParams

    # prepare ---------------------------------------------------------------
    def prepare(self) -> None:
        data = self.params.data
        if data.is_collection():
            names = data.local.splits
            splits = training_splits(read_beir_folder(data.local.path, [names.train, names.test], [names.dev]),
                                     names.train, names.dev, names.test, data.dev_size, self.params.seed,
                                     data.describe())
            origin = f"BEIR folder {data.local.path}"
        else:
            splits, origin = self._pair_splits()
        with atomic_directory(self.paths.prepared) as out:
            splits.train.select("query_id", pl.col("query").alias("anchor"), pl.col("document").alias("positive"),
                                pl.col("document_id").alias("chunk_id")).write_parquet(out / "train.parquet")
            splits.corpus.rename({"document_id": "chunk_id"}).write_parquet(out / "corpus.parquet")
            splits.queries.write_parquet(out / "queries.parquet")
            splits.qrels.rename({"document_id": "chunk_id"}).write_parquet(out / "qrels.parquet")
        print(f"prepare: {origin}: {splits.summary()}")

    def _pair_splits(self) -> tuple[TrainingSplits, str]:
        """Question/chunk rows, split 90/10 by question (and a dev share of the training questions); the corpus is
        every chunk. Exact duplicate rows are dropped, and a question asked twice stays in one split."""
        data = self.params.data
        frame, origin = read_source(data, self.params.seed, synthetic_rows)
        columns = data.columns.model_dump(exclude_none=True)
        frame = map_columns(frame, columns, origin, f"{self.name}.data.columns")
        require_ids(frame, {name: columns[name] for name in ("chunk_id", "query_id") if name in columns}, origin)
        frame = require_text(frame, frame.columns, origin, columns)
        rows = frame.height
        frame = frame.unique(["anchor", "positive", "chunk_id"], keep="first", maintain_order=True)
        duplicates = rows - frame.height
        if "query_id" not in frame.columns:
            frame = frame.with_row_index("row").with_columns(
                query_id=pl.format("q{}", pl.col("row").cast(pl.String).str.zfill(7))).drop("row")
        require_unique(frame, "query_id", origin)
        require_consistent(frame, "chunk_id", "positive", origin)
        questions = add_split_column(frame.select("anchor").unique(maintain_order=True), data.test_size,
                                     data.dev_size, self.params.seed, origin)
        frame = frame.join(questions, on="anchor", how="left", maintain_order="left")
        held_out = frame.filter(pl.col("split") != "train")
        corpus = frame.group_by("chunk_id").agg(text=pl.col("positive").first()).sort("chunk_id")
        require_evaluable(held_out.filter(pl.col("split") == "test").height, corpus.height, origin)
        return TrainingSplits(
            train=frame.filter(pl.col("split") == "train").select(
                "query_id", pl.col("anchor").alias("query"), pl.col("chunk_id").alias("document_id"),
                pl.col("positive").alias("document")),
            corpus=corpus.rename({"chunk_id": "document_id"}),
            queries=held_out.select("query_id", pl.col("anchor").alias("text"), "split"),
            qrels=held_out.select("query_id", pl.col("chunk_id").alias("document_id"), pl.lit(1).alias("relevance"),
                                  "split"), duplicates=duplicates), origin

    def held_out(self, split: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """Queries of a held-out split ("dev" or "test"), the full corpus and the split's qrels."""
        prepared = self.paths.prepared
        queries = pl.read_parquet(prepared / "queries.parquet").filter(pl.col("split") == split)
        qrels = pl.read_parquet(prepared / "qrels.parquet").filter(pl.col("split") == split)
        return queries, pl.read_parquet(prepared / "corpus.parquet"), qrels

    def load_model(self, reference: str, name: str):
        """A sentence-transformers model from safetensors, checked against the params' dims."""
        key = f"{self.name}.model.base" if reference == self.params.model.base else reference
        model = load_sentence_transformer(reference, key, trust_remote_code=self.params.model.trust_remote_code)
        if self.params.model.max_seq_length:
            check_length(model[0].auto_model, self.params.model.max_seq_length, f"{self.name}.model.max_seq_length")
            model.max_seq_length = self.params.model.max_seq_length
        check_dims(model, self.params.model.dims, name)
        return model

    def requirements(self) -> list[Requirement]:
        return [*self.params.data.requirements(f"{self.name}.data"),
                Requirement("model", f"{self.name}.model.base", "mine, train, evaluate", model=self.params.model.base)]

    def training_runs(self) -> list[TrainingRun]:
        train = self.params.train
        texts = 2 + (self.params.mine.num_negatives if train.use_hard_negatives else 0)
        return [TrainingRun("train", self.params.model.base, f"{self.name}.model.base", train.batch_size * texts,
                            self.params.model.max_seq_length, train.bf16)]

    # mine ------------------------------------------------------------------
    def mine(self) -> None:
        from datasets import Dataset
        from sentence_transformers.util import mine_hard_negatives

        mine = self.params.mine
        model = self.load_model(self.params.model.base, "the base model")
        train = pl.read_parquet(self.paths.prepared / "train.parquet")
        corpus = sorted(set(train["positive"].to_list()))
        mined = mine_hard_negatives(
            Dataset.from_polars(train.select("anchor", "positive")), model, anchor_column_name="anchor",
            positive_column_name="positive", corpus=corpus, range_max=mine.range_max,
            relative_margin=mine.relative_margin, num_negatives=mine.num_negatives, sampling_strategy="top",
            output_format="n-tuple", output_scores=True, batch_size=mine.batch_size, use_faiss=True)
        with atomic_directory(self.paths.mined) as out:
            mined.to_polars().write_parquet(out / "hard_negatives.parquet")
        print(f"mine: {len(mined)} of {train.height} training pairs kept hard negatives")

    # train -----------------------------------------------------------------
    def _training_pairs(self):
        from datasets import Dataset

        if self.params.train.use_hard_negatives:
            mined = pl.read_parquet(self.paths.mined / "hard_negatives.parquet").drop("scores")
            return Dataset.from_polars(mined)
        train = pl.read_parquet(self.paths.prepared / "train.parquet")
        return Dataset.from_polars(train.select("anchor", "positive"))

    def build_trainer(self, model, checkpoints: Path):
        """The recipe's trainer: MNRL inside MatryoshkaLoss, dev selection at best_checkpoint_dim."""
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers

        train, dims = self.params.train, self.params.model.dims
        loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=dims)
        dev_queries, corpus, dev_qrels = self.held_out("dev")
        corpus = bounded_corpus(corpus, "chunk_id", dev_qrels["chunk_id"], self.params.evaluate.dev_corpus_size,
                                self.params.seed)
        evaluator = None
        if dev_queries.height:
            evaluator = DimensionEvaluator(dev_queries, corpus, dev_qrels, dims, train.best_checkpoint_dim,
                                           self.params.evaluate.batch_size)
        args = SentenceTransformerTrainingArguments(
            output_dir=str(checkpoints),
            num_train_epochs=train.epochs,
            per_device_train_batch_size=train.batch_size,
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            per_device_eval_batch_size=self.params.evaluate.batch_size,
            learning_rate=train.learning_rate,
            lr_scheduler_type=train.lr_scheduler,
            optim=train.optimizer,
            tf32=train.tf32 and torch.cuda.is_available(),
            batch_sampler=BatchSamplers.NO_DUPLICATES if train.no_duplicates else BatchSamplers.BATCH_SAMPLER,
            eval_strategy="epoch" if evaluator else "no",
            save_strategy="epoch" if evaluator else "no",
            save_total_limit=2,
            save_only_model=True,
            load_best_model_at_end=evaluator is not None,
            metric_for_best_model=f"eval_{evaluator.primary_metric}" if evaluator else None,
            greater_is_better=True,
            logging_steps=train.logging_steps,
            **shared_arguments(self.params.seed, train.bf16, train.warmup_ratio),
        )
        return SentenceTransformerTrainer(model=model, args=args, train_dataset=self._training_pairs(), loss=loss,
                                          evaluator=evaluator)

    def train(self) -> None:
        model = self.load_model(self.params.model.base, "the base model")
        # Under torchrun every rank must find the best checkpoint at the same path.
        checkpoints = self.paths.scratch("checkpoints")
        trainer = self.build_trainer(model, checkpoints)
        if trainer.is_world_process_zero():
            shutil.rmtree(checkpoints, ignore_errors=True)
        log_training(trainer, self.paths.training_log, "train")
        trainer.train()
        if trainer.is_world_process_zero():
            scores = self.score(model, "finetuned")
            with atomic_directory(self.paths.model) as out:
                model.save_pretrained(str(out), create_model_card=False)
                self.card(scores, trainer.train_dataset.num_rows).write(out)
            write_scores(self.paths.trained_scores, {"finetuned": scores})
            shutil.rmtree(checkpoints, ignore_errors=True)

    def card(self, scores: Scores, training_rows: int) -> ModelCard:
        data, dims = self.params.data, self.params.model.dims
        negatives = "mined hard negatives" if self.params.train.use_hard_negatives else "in-batch negatives"
        return self.model_card(
            title="Matryoshka bi-encoder",
            summary=(f"A bi-encoder fine-tuned with MultipleNegativesRankingLoss ({negatives}) inside MatryoshkaLoss, "
                     f"so that its embeddings truncated to any of {dims} dimensions still retrieve well. The "
                     f"checkpoint kept is the epoch with the best dev NDCG@10 at dim "
                     f"{self.params.train.best_checkpoint_dim}."),
            base_model=self.params.model.base,
            training_data=f"{data.describe()}: {training_rows} question/chunk pairs",
            hub_datasets=data.hub_datasets(),
            metrics=CardMetrics(dataset=data.describe(), queries=scores.metrics["queries"], task="retrieval",
                                rows={f"dim {key[4:]}": values for key, values in scores.metrics.items()
                                      if key.startswith("dim_")},
                                columns=["ndcg@10", "mrr@10", "recall@10", "bytes_per_vector"]),
            usage=f"""from sentence_transformers import SentenceTransformer
model = SentenceTransformer("models/{self.name}", truncate_dim={dims[-1]})  # or any of {dims}
embeddings = model.encode(["What is the maximum operating pressure?"])""",
            library_name="sentence-transformers", pipeline_tag="sentence-similarity",
            tags=["matryoshka", "MultipleNegativesRankingLoss", "MatryoshkaLoss"])

    # evaluate --------------------------------------------------------------
    def score(self, model, label: str) -> Scores:
        """One model on the test split against the whole corpus: metrics at every dim (and the query count), its
        ranked lists and per-query metrics."""
        evaluate = self.params.evaluate
        queries, corpus, qrels = self.held_out("test")
        qrels = qrels_of(qrels)
        metrics: dict = {"queries": queries.height}
        run_rows, query_rows = [], []
        for dim, (run, scores) in rank_at_dims(model, queries, corpus, self.params.model.dims, evaluate.batch_size,
                                               evaluate.top_k).items():
            means, per_query = evaluate_run(run, qrels)
            metrics[f"dim_{dim}"] = {**means, "bytes_per_vector": dim * 4}
            for query, documents in run.items():
                run_rows += [(label, dim, query, document, rank + 1, score)
                             for rank, (document, score) in enumerate(zip(documents, scores[query]))]
            query_rows += [{"model": label, "dim": dim, "query_id": query, **values}
                           for query, values in per_query.items()]
        runs = pl.DataFrame(run_rows, schema=["model", "dim", "query_id", "chunk_id", "rank", "score"], orient="row")
        return Scores(metrics, {"run": runs, "per_query": pl.DataFrame(query_rows)})

    def baseline_scores(self) -> dict[str, Scores]:
        return {"base": self.score(self.load_model(self.params.model.base, "the base model"), "base")}

    def compare(self, scores: dict[str, Scores]) -> None:
        dims = self.params.model.dims
        metrics = {label: {key: value for key, value in result.metrics.items() if key.startswith("dim_")}
                   for label, result in scores.items()}
        plot_lines = ["dim,base,finetuned"] + [
            f"{dim},{metrics['base'][f'dim_{dim}'][PRIMARY_METRIC]:.6f},"
            f"{metrics['finetuned'][f'dim_{dim}'][PRIMARY_METRIC]:.6f}" for dim in dims]
        self.write_evaluation(metrics, {"run": concat_tables(scores, "run"),
                                        "per_query": concat_tables(scores, "per_query")},
                              {"ndcg_by_dim": "\n".join(plot_lines) + "\n"})
        for dim in dims:
            base, tuned = (metrics[label][f"dim_{dim}"][PRIMARY_METRIC] for label in ("base", "finetuned"))
            print(f"evaluate: dim {dim:4d}  NDCG@10 base {base:.4f} -> fine-tuned {tuned:.4f}")


FAMILY = Matryoshka
