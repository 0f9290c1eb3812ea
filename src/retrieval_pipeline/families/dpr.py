"""Recipe 1: a dual-encoder dense passage retriever with fully independent query and passage towers.

Each tower is the base model with mean pooling and L2 normalisation; training is
InfoNCE over in-batch negatives at temperature 0.05 (MultipleNegativesRankingLoss
with scale 1/T), routed so that queries only ever pass through the query tower.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Literal

import polars as pl
import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn
from transformers import TrainerCallback

from retrieval_pipeline.core.beir import read_beir_folder, training_splits
from retrieval_pipeline.core.family import Family, Scores, concat_tables, write_scores
from retrieval_pipeline.core.io import atomic_directory
from retrieval_pipeline.core.metrics import evaluate_run
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.models import check_length, device, loading, locate
from retrieval_pipeline.core.params import FamilyParams, Section, TrainingSection
from retrieval_pipeline.core.preflight import Requirement, TrainingRun
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.core.sources import (
    DataError,
    SourceParams,
    SyntheticSource,
    map_columns,
    read_source,
    require_evaluable,
    require_text,
)
from retrieval_pipeline.core.splits import add_split_column, split_counts
from retrieval_pipeline.core.training import log_training, shared_arguments
from retrieval_pipeline.data.world import build_world, fever_claims

TOWERS = {"query": "query_encoder", "document": "passage_encoder"}
RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@20", "recall@100")


class Columns(Section):
    query: str
    passage: str
    label: str | None = None


class DataParams(SourceParams):
    columns: Columns
    keep_labels: list[int] = Field(min_length=1)  # rows whose label is in this list are kept
    test_size: float = Field(gt=0, lt=1)


class ModelParams(Section):
    base: str = Field(min_length=1)
    max_seq_length: PositiveInt | None = None


class MineParams(Section):
    top_k: PositiveInt
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt


class TrainParams(TrainingSection):
    use_hard_negatives: bool
    hard_negative_source: Literal["bm25", "dense"]
    temperature: PositiveFloat
    epochs: PositiveInt
    learning_rate: PositiveFloat
    weight_decay: float = Field(ge=0)


class EvaluateParams(Section):
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)


class DprParams(FamilyParams):
    data: DataParams
    model: ModelParams
    mine: MineParams
    train: TrainParams
    evaluate: EvaluateParams


def synthetic_rows(source: SyntheticSource, seed: int) -> list[dict]:
    """Claims and evidence from the shared world, with pietrolesci/nli_fever's columns and labels."""
    return fever_claims(build_world(seed, source.facilities, source.companies), seed)


def passage_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def build_towers(base: str, max_seq_length: int | None = None, key: str = "dpr.model.base"):
    """A Router model whose query and document routes are two independent copies of the base model, each
    with mean pooling and L2 normalisation, whatever pooling the base checkpoint itself declares."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling, Router, Transformer

    source = locate(base, key)

    def tower():
        # each argument dict its own: sentence-transformers adds the maximum length to the tokenizer's in place
        with loading(key, base):
            transformer = Transformer(source.location, max_seq_length=max_seq_length,
                                      model_args={"use_safetensors": True, "revision": source.revision},
                                      tokenizer_args={"revision": source.revision},
                                      config_args={"revision": source.revision})
        check_length(transformer.auto_model, max_seq_length, "dpr.model.max_seq_length")
        return [transformer, Pooling(transformer.get_word_embedding_dimension(), "mean"), Normalize()]

    router = Router.for_query_document(query_modules=tower(), document_modules=tower())
    return SentenceTransformer(modules=[router], device=device())


def tower_of(model, route: str):
    """One route of a Router model as a standalone SentenceTransformer (shares the weights)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(modules=list(model[0].sub_modules[route]), device=device())


def similarity_diagnostics(queries: torch.Tensor, passages: torch.Tensor) -> dict[str, float]:
    """Mean diagonal (positive-pair) cosine and mean cosine over the whole query x passage matrix. In cosines,
    not logits, so that the baseline's numbers do not depend on the training temperature."""
    similarities = queries @ passages.T
    return {"diagonal_cosine": similarities.diagonal().mean().item(), "mean_cosine": similarities.mean().item()}


def check_not_collapsed(diagnostics: dict[str, float], pairs: int) -> None:
    """Stop when positive pairs no longer score above the rest: the towers have collapsed. With a single held-out
    pair the whole matrix is its diagonal, so there is nothing to compare and no verdict."""
    if pairs >= 2 and diagnostics["diagonal_cosine"] <= diagnostics["mean_cosine"]:
        raise DataError("dpr: collapse: the fine-tuned towers' mean diagonal cosine "
                        f"{diagnostics['diagonal_cosine']:.3f} "
                        f"is not above the mean cosine {diagnostics['mean_cosine']:.3f} on held-out pairs; "
                        "expected positive pairs to score far above the rest")


class InfoNCELoss(nn.Module):
    """InfoNCE over in-batch (and optional hard) negatives; keeps the last batch's logit diagnostics."""

    def __init__(self, model, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature
        self.cross_entropy = nn.CrossEntropyLoss()
        self.diagnostics: dict[str, float] = {}

    def forward(self, features, labels=None) -> torch.Tensor:
        queries, *passages = (self.model(feature)["sentence_embedding"] for feature in features)
        candidates = torch.cat(passages)
        logits = queries @ candidates.T / self.temperature
        cosines = similarity_diagnostics(queries.detach(), passages[0].detach())
        self.diagnostics = {"diagonal_logit": cosines["diagonal_cosine"] / self.temperature,
                            "mean_logit": cosines["mean_cosine"] / self.temperature}
        return self.cross_entropy(logits, torch.arange(len(queries), device=logits.device))


class DiagnosticsCallback(TrainerCallback):
    """Adds the loss's logit diagnostics to every training log, before DVCLive records it."""

    def __init__(self, loss: InfoNCELoss) -> None:
        self.loss = loss

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs.update(self.loss.diagnostics)


class Dpr(Family):
    name = "dpr"
    recipe = "dual-encoder dense passage retriever (recipe 1 in docs/recipes.md)"
    Params = DprParams
    params: DprParams

    def prepare(self) -> None:
        data = self.params.data
        if data.is_collection():
            self._prepare_collection()
            return
        frame, origin = read_source(data, self.params.seed, synthetic_rows)
        columns = data.columns.model_dump(exclude_none=True)
        frame = map_columns(frame, columns, origin, f"{self.name}.data.columns")
        if data.columns.label:
            labels = frame["label"].cast(pl.Int64, strict=False)
            if labels.null_count():
                row = frame.with_row_index("row").filter(labels.is_null())["row"][0] + 1
                raise DataError(f"{origin}: row {row}: column '{data.columns.label}' is not an integer label")
            frame = frame.with_columns(label=labels).filter(pl.col("label").is_in(data.keep_labels)).drop("label")
        frame = require_text(frame, ["query", "passage"], origin, columns)
        rows = frame.height
        frame = frame.unique(["query", "passage"], keep="first", maintain_order=True)
        duplicates = rows - frame.height
        frame = frame.with_columns(passage_id=pl.col("passage").map_elements(passage_id, return_dtype=pl.String))
        frame = frame.with_row_index("row").with_columns(
            query_id=pl.format("c{}", pl.col("row").cast(pl.String).str.zfill(7))).drop("row")
        claims = add_split_column(frame.select("query").unique(maintain_order=True), data.test_size, 0.0,
                                  self.params.seed, origin)  # a claim with several passages stays in one split
        frame = frame.join(claims, on="query", how="left", maintain_order="left")
        corpus = frame.group_by("passage_id").agg(text=pl.col("passage").first()).sort("passage_id")
        test = frame.filter(pl.col("split") == "test")
        require_evaluable(test.height, corpus.height, origin)
        with atomic_directory(self.paths.prepared) as out:
            frame.filter(pl.col("split") == "train").select("query_id", "query", "passage", "passage_id") \
                .write_parquet(out / "train.parquet")
            corpus.write_parquet(out / "corpus.parquet")
            test.select("query_id", pl.col("query").alias("text"), "passage_id").write_parquet(out / "queries.parquet")
            test.select("query_id", "passage_id", pl.lit(1).alias("relevance")).write_parquet(out / "qrels.parquet")
        print(f"prepare: {origin}: {frame.height} claim/evidence pairs, {corpus.height} passages -> "
              f"{split_counts(frame)}" + (f"; {duplicates} exact duplicate rows dropped" if duplicates else ""))

    def _prepare_collection(self) -> None:
        """A BEIR folder: training pairs from its train qrels, its test queries against the whole corpus; each test
        query's most relevant passage is its gold pair for the logit diagnostics."""
        data = self.params.data
        names = data.local.splits
        splits = training_splits(read_beir_folder(data.local.path, [names.train, names.test]), names.train,
                                 names.dev, names.test, 0.0, self.params.seed, data.describe())
        test_qrels = splits.qrels.filter(pl.col("split") == names.test).rename({"document_id": "passage_id"})
        gold = test_qrels.filter(pl.col("relevance") > 0).sort("relevance", descending=True, maintain_order=True) \
            .unique("query_id", keep="first", maintain_order=True).select("query_id", "passage_id")
        with atomic_directory(self.paths.prepared) as out:
            splits.train.select("query_id", "query", pl.col("document").alias("passage"),
                                pl.col("document_id").alias("passage_id")).write_parquet(out / "train.parquet")
            splits.corpus.rename({"document_id": "passage_id"}).write_parquet(out / "corpus.parquet")
            splits.queries.filter(pl.col("split") == names.test).join(gold, on="query_id", maintain_order="left") \
                .select("query_id", "text", "passage_id").write_parquet(out / "queries.parquet")
            test_qrels.select("query_id", "passage_id", "relevance").write_parquet(out / "qrels.parquet")
        print(f"prepare: BEIR folder {data.local.path}: {splits.train.height} training pairs; {gold.height} test "
              f"queries over {splits.corpus.height} passages")

    def mine(self) -> None:
        import bm25s

        mine = self.params.mine
        train = pl.read_parquet(self.paths.prepared / "train.parquet")
        corpus = pl.read_parquet(self.paths.prepared / "corpus.parquet")
        texts, ids = corpus["text"].to_list(), corpus["passage_id"].to_list()
        position = {pid: i for i, pid in enumerate(ids)}
        positives = [position[pid] for pid in train["passage_id"]]
        k = min(mine.top_k, len(texts))

        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        bm25_indices, bm25_scores = retriever.retrieve(bm25s.tokenize(train["query"].to_list(), stopwords="en",
                                                                      show_progress=False), k=k, show_progress=False)
        base = self.base_towers()
        passages = base["document"].encode(texts, batch_size=mine.batch_size, convert_to_numpy=True,
                                           show_progress_bar=True)
        queries = base["query"].encode(train["query"].to_list(), batch_size=mine.batch_size, convert_to_numpy=True,
                                       show_progress_bar=True)
        dense_scores, dense_indices = search(queries, passages, k)
        positive_dense = (queries * passages[positives]).sum(axis=1)

        def first_negative(indices, scores, positive, positive_score):
            for index, score in zip(indices, scores):
                if index != positive and score < (1 - mine.relative_margin) * positive_score:
                    return texts[index], float(score)
            return None, None

        rows = []
        for row, positive in enumerate(positives):
            bm25_lookup = dict(zip(bm25_indices[row].tolist(), bm25_scores[row].tolist()))
            bm25_positive = bm25_lookup.get(positive, float(bm25_scores[row][0]))
            bm25_negative, bm25_score = first_negative(bm25_indices[row], bm25_scores[row], positive, bm25_positive)
            dense_negative, dense_score = first_negative(dense_indices[row], dense_scores[row], positive,
                                                         float(positive_dense[row]))
            rows.append({"query": train["query"][row], "positive": train["passage"][row],
                         "bm25_negative": bm25_negative, "bm25_negative_score": bm25_score,
                         "bm25_positive_score": bm25_positive, "dense_negative": dense_negative,
                         "dense_negative_score": dense_score, "dense_positive_score": float(positive_dense[row])})
        mined = pl.DataFrame(rows)
        with atomic_directory(self.paths.mined) as out:
            mined.write_parquet(out / "hard_negatives.parquet")
        print(f"mine: hard negatives for {mined['bm25_negative'].count()} (bm25) and "
              f"{mined['dense_negative'].count()} (dense) of {train.height} claims")

    def requirements(self) -> list[Requirement]:
        return [*self.params.data.requirements(f"{self.name}.data"),
                Requirement("model", f"{self.name}.model.base", "mine, train, evaluate", model=self.params.model.base)]

    def training_runs(self) -> list[TrainingRun]:
        train = self.params.train
        texts = 3 if train.use_hard_negatives else 2
        return [TrainingRun("train", self.params.model.base, f"{self.name}.model.base", train.batch_size * texts,
                            self.params.model.max_seq_length, train.bf16, copies=len(TOWERS))]

    def base_towers(self) -> dict:
        """The untrained towers, built exactly as training starts from them (the baseline of mine and evaluate)."""
        model = build_towers(self.params.model.base, self.params.model.max_seq_length)
        return {route: tower_of(model, route) for route in TOWERS}

    def _training_rows(self):
        from datasets import Dataset

        train = self.params.train
        if train.use_hard_negatives:
            column = f"{train.hard_negative_source}_negative"
            mined = pl.read_parquet(self.paths.mined / "hard_negatives.parquet").drop_nulls(column)
            return Dataset.from_polars(mined.select("query", "positive", pl.col(column).alias("negative")))
        pairs = pl.read_parquet(self.paths.prepared / "train.parquet")
        return Dataset.from_polars(pairs.select("query", pl.col("passage").alias("positive")))

    def build_trainer(self, model, output_dir: Path):
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.training_args import BatchSamplers

        train = self.params.train
        loss = InfoNCELoss(model, train.temperature)
        args = SentenceTransformerTrainingArguments(
            output_dir=str(output_dir), num_train_epochs=train.epochs, per_device_train_batch_size=train.batch_size,
            learning_rate=train.learning_rate, weight_decay=train.weight_decay,
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", logging_steps=train.logging_steps,
            router_mapping={"query": "query", "positive": "document", "negative": "document"},
            **shared_arguments(self.params.seed, train.bf16, train.warmup_ratio))
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=self._training_rows(), loss=loss)
        trainer.add_callback(DiagnosticsCallback(loss))
        return trainer

    def train(self) -> None:
        model = build_towers(self.params.model.base, self.params.model.max_seq_length)
        scratch = self.paths.scratch("trainer")
        trainer = self.build_trainer(model, scratch)
        log_training(trainer, self.paths.training_log, "train")
        trainer.train()
        if trainer.is_world_process_zero():
            towers = {route: tower_of(model, route) for route in TOWERS}
            scores = self.score(towers["query"], towers["document"], "finetuned")
            with atomic_directory(self.paths.model) as out:
                for route, folder in TOWERS.items():
                    towers[route].save_pretrained(str(out / folder), create_model_card=False)
                    self.card(route, scores, len(trainer.train_dataset)).write(out / folder)
            write_scores(self.paths.trained_scores, {"finetuned": scores})
            shutil.rmtree(scratch, ignore_errors=True)

    def card(self, route: str, scores: Scores, training_rows: int) -> ModelCard:
        train, data = self.params.train, self.params.data
        side, other = ("query", TOWERS["document"]) if route == "query" else ("passage", TOWERS["query"])
        encodes = "claims and questions" if route == "query" else "evidence passages"
        negatives = (f"in-batch and {train.hard_negative_source} hard negatives" if train.use_hard_negatives
                     else "in-batch negatives")
        return self.model_card(
            title=f"DPR {side} encoder",
            summary=(f"The {side} tower of a dual-encoder dense passage retriever: it encodes {encodes}; "
                     f"`models/{self.name}/{other}` is the other tower, with independent weights. Mean pooling, L2 "
                     f"normalisation, trained with InfoNCE over {negatives} at temperature {train.temperature}. "
                     "The scores below are the two towers together."),
            base_model=self.params.model.base,
            training_data=f"{data.describe()}: {training_rows} claim/evidence pairs (labels {data.keep_labels})",
            hub_datasets=data.hub_datasets(),
            metrics=CardMetrics(dataset=data.describe(), queries=scores.tables["per_query"].height, task="retrieval",
                                rows={"query + passage towers": scores.metrics},
                                columns=list(RETRIEVAL_METRICS)),
            usage=f"""from sentence_transformers import SentenceTransformer
query_encoder = SentenceTransformer("models/{self.name}/{TOWERS['query']}")
passage_encoder = SentenceTransformer("models/{self.name}/{TOWERS['document']}")
scores = query_encoder.encode(["a claim"]) @ passage_encoder.encode(["a passage"]).T""",
            library_name="sentence-transformers", pipeline_tag="sentence-similarity",
            tags=["dpr", "dual-encoder", f"{side}-encoder"])

    def test_set(self) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, int]]]:
        queries = pl.read_parquet(self.paths.prepared / "queries.parquet")
        corpus = pl.read_parquet(self.paths.prepared / "corpus.parquet")
        judged = pl.read_parquet(self.paths.prepared / "qrels.parquet")
        qrels: dict[str, dict[str, int]] = {}
        for query, passage, relevance in judged.select("query_id", "passage_id", "relevance").iter_rows():
            qrels.setdefault(query, {})[passage] = relevance
        return queries, corpus, qrels

    def score(self, query_tower, passage_tower, label: str) -> Scores:
        """Retrieval metrics and similarity diagnostics of one pair of towers on the test split against the whole
        corpus, and each query's own metrics."""
        evaluate = self.params.evaluate
        queries, corpus, qrels = self.test_set()
        passage_ids = corpus["passage_id"].to_list()
        position = {pid: i for i, pid in enumerate(passage_ids)}
        encoded_queries = query_tower.encode(queries["text"].to_list(), batch_size=evaluate.batch_size,
                                             convert_to_tensor=True, show_progress_bar=True).cpu()
        encoded_passages = passage_tower.encode(corpus["text"].to_list(), batch_size=evaluate.batch_size,
                                                convert_to_tensor=True, show_progress_bar=True).cpu()
        _, indices = search(encoded_queries.numpy(), encoded_passages.numpy(), evaluate.top_k)
        run = {query: [passage_ids[i] for i in row] for query, row in zip(queries["query_id"], indices)}
        means, per_query = evaluate_run(run, qrels, cutoffs=(1, 5, 20, 100))
        gold = encoded_passages[[position[pid] for pid in queries["passage_id"]]]
        metrics = {name: means[name] for name in RETRIEVAL_METRICS}
        return Scores({**metrics, **similarity_diagnostics(encoded_queries, gold)},
                      {"per_query": pl.DataFrame([{"model": label, "query_id": query, **values}
                                                  for query, values in per_query.items()])})

    def baseline_scores(self) -> dict[str, Scores]:
        base = self.base_towers()
        return {"base": self.score(base["query"], base["document"], "base")}

    def compare(self, scores: dict[str, Scores]) -> None:
        metrics = {label: result.metrics for label, result in scores.items()}
        check_not_collapsed(metrics["finetuned"], scores["finetuned"].tables["per_query"].height)
        self.write_evaluation(metrics, {"per_query": concat_tables(scores, "per_query")})
        for label, values in metrics.items():
            print(f"evaluate: {label:9s} NDCG@10 {values['ndcg@10']:.4f}  R@1 {values['recall@1']:.4f}"
                  f"  R@20 {values['recall@20']:.4f}  diagonal cosine {values['diagonal_cosine']:.3f}"
                  f" vs mean {values['mean_cosine']:.3f}")


FAMILY = Dpr
