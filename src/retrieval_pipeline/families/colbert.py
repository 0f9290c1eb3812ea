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
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import torch
from pydantic import Field, PositiveFloat, PositiveInt, model_validator
from transformers import set_seed

from retrieval_pipeline.core.family import Family
from retrieval_pipeline.core.io import atomic_directory, atomic_write_json, atomic_write_text
from retrieval_pipeline.core.metrics import evaluate_run
from retrieval_pipeline.core.model_card import CardMetrics, ModelCard
from retrieval_pipeline.core.models import device, load_sentence_transformer, resolve_model
from retrieval_pipeline.core.params import Section
from retrieval_pipeline.core.retrieval import search
from retrieval_pipeline.core.sources import DataError, HubSource, read_local_file
from retrieval_pipeline.core.splits import add_split_column
from retrieval_pipeline.core.training import log_training_with_dvclive, shared_arguments
from retrieval_pipeline.data.world import build_world, claim_collection


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------


def cluster_means(tokens: torch.Tensor, assignment: torch.Tensor, clusters: int) -> torch.Tensor:
    """Mean of the tokens in each cluster; differentiable with respect to the tokens."""
    sums = torch.zeros(clusters, tokens.shape[1], dtype=tokens.dtype, device=tokens.device)
    sums = sums.index_add(0, assignment, tokens)
    counts = torch.bincount(assignment, minlength=clusters).clamp(min=1).to(tokens.dtype)
    return sums / counts.unsqueeze(1)


def _fill_empty_clusters(assignment: torch.Tensor, distance: torch.Tensor, clusters: int) -> torch.Tensor:
    """Give each empty cluster the worst-fitting token of a cluster that can spare one."""
    counts = torch.bincount(assignment, minlength=clusters)
    for empty in torch.nonzero(counts == 0).flatten().tolist():
        spare = counts[assignment] > 1
        candidate = torch.where(spare, distance, torch.full_like(distance, float("-inf"))).argmax()
        counts[assignment[candidate]] -= 1
        assignment[candidate] = empty
        counts[empty] = 1
        distance[candidate] = float("-inf")
    return assignment


def kmeans_assign(tokens: torch.Tensor, clusters: int, iterations: int) -> torch.Tensor:
    """Lloyd's k-means on one document's tokens (no gradient): a cluster index per token, every cluster used.

    Centroids start at evenly spaced tokens, so the result is deterministic.
    """
    points = tokens.detach().float()
    start = torch.linspace(0, len(points) - 1, clusters, device=points.device).round().long()
    centroids = points[start]
    assignment = torch.zeros(len(points), dtype=torch.long, device=points.device)
    for _ in range(max(iterations, 1)):
        # ||x - c||^2 without the ||x||^2 term, which is the same for every centroid
        distance = (centroids * centroids).sum(dim=1) - 2 * points @ centroids.T
        nearest, assignment = distance.min(dim=1)
        assignment = _fill_empty_clusters(assignment, nearest, clusters)
        centroids = cluster_means(points, assignment, clusters)
    return assignment


def kmeans_pool(tokens: torch.Tensor, pool_factor: int, iterations: int, protected: int = 0) -> torch.Tensor:
    """ceil(n / pool_factor) vectors for a document's n token embeddings: its first `protected` tokens
    unchanged (pylate protects the [CLS] token the same way), then k-means cluster means of the rest."""
    clusters = math.ceil(len(tokens) / pool_factor)
    if pool_factor == 1 or clusters >= len(tokens):
        return tokens
    protected = min(protected, clusters - 1)
    rest, pooled_clusters = tokens[protected:], clusters - protected
    means = cluster_means(rest, kmeans_assign(rest, pooled_clusters, iterations), pooled_clusters)
    return torch.cat([tokens[:protected], means])


def pool_batch(embeddings: torch.Tensor, mask: torch.Tensor, pool_factor: int, iterations: int,
               protected: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool each document of a padded batch [N, L, d] over its unmasked tokens; returns padded means and mask."""
    pooled = [kmeans_pool(document[keep.bool()], pool_factor, iterations, protected)
              for document, keep in zip(embeddings, mask)]
    width = max(len(document) for document in pooled)
    padded = embeddings.new_zeros(len(pooled), width, embeddings.shape[-1])
    new_mask = mask.new_zeros(len(pooled), width)
    for index, document in enumerate(pooled):
        padded[index, :len(document)] = document
        new_mask[index, :len(document)] = 1
    return padded, new_mask


class PoolFactorSampler:
    """Draws a pool factor uniformly from `factors`, from its own seeded generator."""

    def __init__(self, factors: Sequence[int], seed: int) -> None:
        self.factors = list(factors)
        self.generator = np.random.default_rng(seed)

    def draw(self) -> int:
        return self.factors[int(self.generator.integers(len(self.factors)))]


class PoolingDistillation(torch.nn.Module):
    """pylate's distillation objective (KL between the student's and the teacher's score distributions over each
    query's candidates) with the documents k-means pooled at a pool factor drawn once per batch."""

    def __init__(self, model, sampler: PoolFactorSampler, iterations: int, protected: int) -> None:
        super().__init__()
        self.model, self.sampler, self.iterations, self.protected = model, sampler, iterations, protected
        self.kl = torch.nn.KLDivLoss(reduction="batchmean", log_target=True)
        self.last_pool_factor = 1

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        from pylate.losses.contrastive import extract_skiplist_mask
        from pylate.scores import colbert_kd_scores

        model = getattr(self.model, "module", self.model)
        queries = torch.nn.functional.normalize(self.model(sentence_features[0])["token_embeddings"], p=2, dim=-1)
        documents = torch.nn.functional.normalize(self.model(sentence_features[1])["token_embeddings"], p=2, dim=-1)
        query_mask, document_mask = extract_skiplist_mask(sentence_features, model.skiplist)
        self.last_pool_factor = self.sampler.draw()
        documents, document_mask = pool_batch(documents, document_mask, self.last_pool_factor,
                                              self.iterations, self.protected)
        n_queries = queries.shape[0]
        scores = colbert_kd_scores(
            queries, documents.view(n_queries, -1, *documents.shape[1:]),
            queries_mask=None if model.do_query_expansion else query_mask,
            documents_mask=document_mask.view(n_queries, -1, document_mask.shape[-1]))
        low, high = scores.min(dim=1, keepdim=True).values, scores.max(dim=1, keepdim=True).values
        scores = (scores - low) / (high - low + 1e-8)
        return self.kl(torch.log_softmax(scores, dim=-1), torch.log_softmax(labels, dim=-1))


# ---------------------------------------------------------------------------
# Teachers: anything that scores (query, document) pairs with one number, higher = more relevant
# ---------------------------------------------------------------------------


class CrossEncoderTeacher:
    """A sentence-transformers cross-encoder's raw logit (the embedded profile: the reranker family's model)."""

    def __init__(self, model: str, max_length: int, batch_size: int) -> None:
        from sentence_transformers.cross_encoder import CrossEncoder

        self.batch_size = batch_size
        self.model = CrossEncoder(resolve_model(model), max_length=max_length, device=device(),
                                  model_kwargs={"use_safetensors": True})

    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        return np.asarray(self.model.predict(pairs, batch_size=self.batch_size, activation_fn=torch.nn.Identity(),
                                             show_progress_bar=True), dtype=np.float32)


class YesLogitTeacher:
    """An LLM reranker scored by the logit of "Yes" after its prompt (BAAI/bge-reranker-v2-gemma's usage)."""

    def __init__(self, model: str, prompt: str, max_length: int, batch_size: int) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        self.prompt, self.max_length, self.batch_size = prompt, max_length, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=dtype).to(device()).eval()
        self.yes = self.tokenizer("Yes", add_special_tokens=False)["input_ids"][-1]

    def text(self, query: str, document: str) -> str:
        return f"A: {query}\nB: {document}\n{self.prompt}"

    @torch.no_grad()
    def __call__(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        from tqdm import tqdm

        scores = []
        for start in tqdm(range(0, len(pairs), self.batch_size), desc="teacher"):
            batch = [self.text(query, document) for query, document in pairs[start:start + self.batch_size]]
            inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(self.model.device)
            scores.append(self.model(**inputs).logits[:, -1, self.yes].float().cpu())
        return torch.cat(scores).numpy() if scores else np.zeros(0, dtype=np.float32)


def teacher_warning(teacher_positive_mrr: float, miner_positive_mrr: float, report: Path) -> str | None:
    """A teacher that ranks the labelled positives no higher than the dense miner does has little to teach:
    distilling it can leave the student worse than its base model. Say so when mining, not after training."""
    if teacher_positive_mrr > miner_positive_mrr:
        return None
    return (f"warning: {report}: the teacher ranks the training positives no higher than the dense miner "
            f"(MRR of the positive {teacher_positive_mrr:.3f} against {miner_positive_mrr:.3f}); distilling it may "
            "leave the fine-tuned model worse than its base. Check mine.teacher before trusting this run.")


def false_negatives(positive_score: float, candidate_scores: np.ndarray, relative_margin: float) -> np.ndarray:
    """Candidates the teacher scores almost as high as the positive: sigmoid score at least
    (1 - relative_margin) times the positive's."""
    probability = 1 / (1 + np.exp(-candidate_scores.astype(np.float64)))
    return probability >= (1 - relative_margin) / (1 + math.exp(-positive_score))


# ---------------------------------------------------------------------------
# BEIR collections
# ---------------------------------------------------------------------------

BEIR_COLUMNS = {"corpus": ("_id", "text"), "queries": ("_id", "text"), "qrels": ("query-id", "corpus-id", "score")}


def _check_columns(frame: pl.DataFrame, kind: str, origin: str) -> pl.DataFrame:
    missing = [column for column in BEIR_COLUMNS[kind] if column not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing column(s) {', '.join(missing)}; a BEIR {kind} file has "
                        f"{', '.join(BEIR_COLUMNS[kind])} (got {', '.join(frame.columns) or 'no columns'})")
    return frame


def _text_rows(frame: pl.DataFrame, origin: str, first_line: int) -> pl.DataFrame:
    frame = frame.with_columns(pl.col("_id").cast(pl.String), pl.col("text").cast(pl.String))
    for column in ("_id", "text"):
        bad = frame.with_row_index("row").filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if bad.height:
            raise DataError(f"{origin}: line {bad['row'][0] + first_line}: '{column}' is empty; expected non-empty text")
    duplicated = frame.with_row_index("row").filter(pl.col("_id").is_duplicated())
    if duplicated.height:
        raise DataError(f"{origin}: line {duplicated['row'][1] + first_line}: duplicate _id {duplicated['_id'][0]!r}")
    return frame


def beir_frames(corpus: pl.DataFrame, queries: pl.DataFrame, qrels: dict[str, pl.DataFrame],
                origins: dict[str, str], first_line: int = 1) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Validated corpus (document_id, text), queries (query_id, text), qrels (query_id, document_id, relevance,
    split); errors name the file and the line (`first_line` is the line of the first row: 2 under a TSV header)."""
    corpus = _text_rows(_check_columns(corpus, "corpus", origins["corpus"]), origins["corpus"], 1)
    queries = _text_rows(_check_columns(queries, "queries", origins["queries"]), origins["queries"], 1)
    title = pl.col("title").cast(pl.String).fill_null("") if "title" in corpus.columns else pl.lit("")
    corpus = corpus.select(pl.col("_id").alias("document_id"),
                           pl.concat_str([title, pl.col("text")], separator=" ").str.strip_chars().alias("text"))
    queries = queries.select(pl.col("_id").alias("query_id"), "text")
    known_documents, known_queries = set(corpus["document_id"]), set(queries["query_id"])
    judged = []
    for split, frame in qrels.items():
        origin = origins[split]
        frame = _check_columns(frame, "qrels", origin).with_row_index("row")
        score = frame["score"].cast(pl.Int64, strict=False)
        for row, (query, document, value) in enumerate(zip(frame["query-id"].cast(pl.String),
                                                           frame["corpus-id"].cast(pl.String), score)):
            where = f"{origin}: line {row + first_line}"
            if value is None:
                raise DataError(f"{where}: score {frame['score'][row]!r} is not an integer relevance grade")
            if query not in known_queries:
                raise DataError(f"{where}: query-id {query!r} is not in the queries")
            if document not in known_documents:
                raise DataError(f"{where}: corpus-id {document!r} is not in the corpus")
        judged.append(pl.DataFrame({"query_id": frame["query-id"].cast(pl.String),
                                    "document_id": frame["corpus-id"].cast(pl.String),
                                    "relevance": score, "split": split}))
    qrels_frame = pl.concat(judged).filter(pl.col("relevance") > 0)
    return corpus, queries, qrels_frame


def read_beir_folder(folder: Path, splits: Sequence[str]):
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv (query-id, corpus-id, score)."""
    expected = f"expected a BEIR folder with corpus.jsonl, queries.jsonl and qrels/{{{','.join(splits)}}}.tsv"
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl",
             **{split: folder / "qrels" / f"{split}.tsv" for split in splits}}
    for path in paths.values():
        if not path.is_file():
            raise DataError(f"{path}: missing; {expected}")
    qrels = {}
    for split in splits:
        try:
            qrels[split] = pl.read_csv(paths[split], separator="\t", infer_schema=False)
        except Exception as error:
            raise DataError(f"{paths[split]}: not a readable TSV file ({error})") from error
    return (read_local_file(paths["corpus"], "jsonl"), read_local_file(paths["queries"], "jsonl"), qrels,
            {name: str(path) for name, path in paths.items()})


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
    claims_per_chunk: PositiveInt = 1
    test_size: float = Field(default=0.2, gt=0, lt=1)


class DataParams(Section):
    source: Literal["synthetic", "hf", "local"]
    hf: BeirHub | None = None
    local: BeirLocal | None = None
    synthetic: SyntheticClaims = SyntheticClaims()
    train_split: str = "train"
    test_split: str = "test"

    @model_validator(mode="after")
    def _selected_source_is_configured(self) -> "DataParams":
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


class TeacherParams(Section):
    kind: Literal["cross_encoder", "yes_logit"]
    model: str = Field(min_length=1)
    prompt: str = ""  # yes_logit only
    max_length: PositiveInt
    batch_size: PositiveInt


class MineParams(Section):
    miner_model: str = Field(min_length=1)
    candidates: PositiveInt  # dense top-k per training query
    n_ways: int = Field(ge=2)  # documents per query in a training example: the positive and n_ways - 1 others
    relative_margin: float = Field(ge=0, lt=1)
    batch_size: PositiveInt
    teacher: TeacherParams


class TrainParams(Section):
    pool_factors: list[PositiveInt] = Field(min_length=1)  # drawn uniformly, once per batch
    pooling_ablation: bool  # also train with pool factor 1 only, to separate pooling-aware training from fine-tuning
    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat
    warmup_ratio: float = Field(ge=0, lt=1)
    bf16: bool
    logging_steps: PositiveInt


class EvaluateParams(Section):
    pool_factors: list[PositiveInt] = Field(min_length=1)
    methods: list[Literal["kmeans", "hierarchical"]] = Field(min_length=1)
    batch_size: PositiveInt
    top_k: PositiveInt = Field(ge=100)


class ColbertParams(Section):
    seed: int
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
    return ColBERT(resolve_model(params.base), embedding_size=params.embedding_size, query_length=params.query_length,
                   document_length=params.document_length, device=device(), model_kwargs={"use_safetensors": True})


def load_colbert(path: Path):
    from pylate.models import ColBERT

    return ColBERT(str(path), device=device(), model_kwargs={"use_safetensors": True})


def maxsim_search(queries: list[torch.Tensor], documents: list[torch.Tensor], k: int,
                  chunk: int = 16) -> np.ndarray:
    """Exhaustive late-interaction search: the top-k documents of each query by the sum of max similarities."""
    width = max(len(document) for document in documents)
    padded = torch.zeros(len(documents), width, documents[0].shape[-1])
    mask = torch.zeros(len(documents), width)
    for index, document in enumerate(documents):
        padded[index, :len(document)], mask[index, :len(document)] = document, 1
    top = []
    for start in range(0, len(queries), chunk):
        block = torch.nn.utils.rnn.pad_sequence(queries[start:start + chunk], batch_first=True)
        similarity = torch.einsum("qtd,nld->qntl", block, padded)
        similarity = similarity.masked_fill(mask[None, :, None, :] == 0, float("-inf"))
        scores = similarity.max(dim=-1).values.clamp(min=0).sum(dim=-1)  # padded query tokens are all-zero
        top.append(scores.topk(min(k, len(documents)), dim=1).indices)
    return torch.cat(top).numpy()


class Colbert(Family):
    name = "colbert"
    recipe = "late interaction with pooling-aware distillation (recipe 2 in RECIPES.md)"
    Params = ColbertParams
    params: ColbertParams

    # prepare -----------------------------------------------------------------

    def _read(self):
        data = self.params.data
        splits = (data.train_split, data.test_split)
        if data.source == "synthetic":
            synthetic = data.synthetic
            world = build_world(self.params.seed, synthetic.facilities, synthetic.companies)
            corpus, queries, qrels = claim_collection(world, synthetic.claims_per_chunk, self.params.seed)
            queries = pl.DataFrame(queries)
            split = add_split_column(queries, synthetic.test_size, 0.0, self.params.seed, "synthetic world")
            split = split.with_columns(pl.col("split").replace({"train": data.train_split, "test": data.test_split}))
            qrels = pl.DataFrame(qrels).join(split.select(pl.col("_id").alias("query-id"), "split"), on="query-id")
            origins = {"corpus": "synthetic corpus", "queries": "synthetic queries",
                       **{name: f"synthetic qrels[{name}]" for name in splits}}
            return (pl.DataFrame(corpus), queries,
                    {name: qrels.filter(pl.col("split") == name).drop("split") for name in splits}, origins, 1)
        if data.source == "local":
            return (*read_beir_folder(data.local.path, splits), 2)
        from datasets import load_dataset

        hub = data.hf

        def load(source: HubSource, split: str, what: str) -> tuple[pl.DataFrame, str]:
            origin = source.model_copy(update={"split": split}).describe()
            try:
                frame = load_dataset(source.path, source.name, split=split, revision=source.revision).to_polars()
            except (FileNotFoundError, ValueError, ConnectionError) as error:
                raise DataError(f"{origin}: cannot load the BEIR {what}: {error}") from error
            return frame, origin

        corpus, corpus_origin = load(hub.corpus, hub.corpus.split, "corpus")
        queries, queries_origin = load(hub.queries, hub.queries.split, "queries")
        loaded = {split: load(hub.qrels, split, "qrels") for split in splits}
        origins = {"corpus": corpus_origin, "queries": queries_origin,
                   **{split: origin for split, (_, origin) in loaded.items()}}
        return corpus, queries, {split: frame for split, (frame, _) in loaded.items()}, origins, 1

    def prepare(self) -> None:
        corpus, queries, qrels, origins, first_line = self._read()
        corpus, queries, qrels = beir_frames(corpus, queries, qrels, origins, first_line)
        judged = queries.join(qrels.select("query_id", "split").unique(), on="query_id", how="inner")
        with atomic_directory(self.paths.prepared) as out:
            corpus.write_parquet(out / "corpus.parquet")
            judged.sort("query_id").write_parquet(out / "queries.parquet")
            qrels.sort("query_id", "document_id").write_parquet(out / "qrels.parquet")
        counts = dict(judged["split"].value_counts().iter_rows())
        print(f"prepare: {corpus.height} documents; judged queries {counts}")

    # mine --------------------------------------------------------------------

    def _teacher(self):
        teacher = self.params.mine.teacher
        if teacher.kind == "cross_encoder":
            return CrossEncoderTeacher(teacher.model, teacher.max_length, teacher.batch_size)
        return YesLogitTeacher(teacher.model, teacher.prompt, teacher.max_length, teacher.batch_size)

    def mine(self) -> None:
        mine, data = self.params.mine, self.params.data
        corpus = pl.read_parquet(self.paths.prepared / "corpus.parquet")
        queries = pl.read_parquet(self.paths.prepared / "queries.parquet").filter(pl.col("split") == data.train_split)
        qrels = pl.read_parquet(self.paths.prepared / "qrels.parquet").filter(pl.col("split") == data.train_split)
        positives = {query: group["document_id"].to_list()
                     for (query,), group in qrels.group_by("query_id", maintain_order=True)}
        miner = load_sentence_transformer(mine.miner_model)
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
            lists.append((query_id, query, [positive] + candidates))
        pairs = [(query, text_of[document]) for _, query, documents in lists for document in documents]
        scores = self._teacher()(pairs)
        examples, filtered, short, teacher_ranks = [], [], 0, []
        offset = 0
        for query_id, _, documents in lists:
            list_scores = scores[offset:offset + len(documents)]
            offset += len(documents)
            teacher_ranks.append(int((list_scores[1:] > list_scores[0]).sum()) + 1)
            dropped = false_negatives(float(list_scores[0]), list_scores[1:], mine.relative_margin)
            filtered += [{"query_id": query_id, "document_id": document, "teacher_score": float(score),
                          "positive_score": float(list_scores[0])}
                         for document, score, drop in zip(documents[1:], list_scores[1:], dropped) if drop]
            kept = [(documents[0], float(list_scores[0]))] + [
                (document, float(score)) for document, score, drop in zip(documents[1:], list_scores[1:], dropped)
                if not drop][:mine.n_ways - 1]
            if len(kept) < mine.n_ways:
                short += 1
                continue
            examples.append({"query_id": query_id, "document_ids": [d for d, _ in kept], "scores": [s for _, s in kept]})
        if not examples:
            raise DataError(f"{self.paths.prepared}: no training query keeps {mine.n_ways} candidates after the "
                            "false-negative filter; lower mine.n_ways or raise mine.candidates")
        train = pl.DataFrame(examples, schema={"query_id": pl.String, "document_ids": pl.List(pl.String),
                                               "scores": pl.List(pl.Float32)})
        used = set(train["query_id"])
        with atomic_directory(self.paths.mined) as out:  # pylate's distillation layout: train, queries, documents
            train.write_parquet(out / "train.parquet")
            queries.filter(pl.col("query_id").is_in(used)).select("query_id", "text").write_parquet(out / "queries.parquet")
            corpus.write_parquet(out / "documents.parquet")
            pl.DataFrame(filtered, schema={"query_id": pl.String, "document_id": pl.String, "teacher_score": pl.Float32,
                                           "positive_score": pl.Float32}).write_parquet(out / "false_negatives.parquet")
            # Is the teacher worth distilling? How high it and the dense miner rank each training query's positive.
            teacher_mrr = float(np.mean([1 / rank for rank in teacher_ranks]))
            miner_mrr = float(np.mean([1 / rank for rank in miner_ranks]))
            atomic_write_json(out / "mining_report.json", {
                "training_queries": len(examples), "skipped_queries": short, "false_negatives_dropped": len(filtered),
                "teacher_positive_mrr": teacher_mrr, "miner_positive_mrr": miner_mrr})
        print(f"mine: {train.height} training queries x {mine.n_ways} teacher-scored documents; "
              f"{len(filtered)} likely false negatives dropped; {short} queries with too few candidates skipped")
        warning = teacher_warning(teacher_mrr, miner_mrr, self.paths.mined / "mining_report.json")
        if warning:
            print(warning, file=sys.stderr)

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
        scratch = self.paths.model.with_name(f".{self.name}-trainer")
        examples = self.training_examples()
        with atomic_directory(self.paths.model) as out:
            for variant, pool_factors in self.variants().items():
                model = base_colbert(self.params.model, self.params.seed)
                trainer = self.build_trainer(model, pool_factors, examples, scratch)
                log_training_with_dvclive(trainer, self.paths.training_log / variant)
                print(f"train: {variant}: pool factors {pool_factors}, {len(examples)} queries")
                trainer.train()
                model.save_pretrained(str(out / variant), create_model_card=False)
                test = self.test_set()
                metrics, _, _ = self.score(model, variant, *test)
                self.card(variant, pool_factors, metrics, test[0].height, len(examples)).write(out / variant)
        shutil.rmtree(scratch, ignore_errors=True)

    def card(self, variant: str, pool_factors: list[int], metrics: dict[str, dict], test_queries: int,
             training_queries: int) -> ModelCard:
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
            metrics=CardMetrics(dataset=data.describe(), queries=test_queries, task="retrieval",
                                rows={f"{method} pooling, pool factor {key[3:]}": values
                                      for method, by_factor in metrics.items() for key, values in by_factor.items()},
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
        test_split = self.params.data.test_split
        corpus = pl.read_parquet(self.paths.prepared / "corpus.parquet")
        queries = pl.read_parquet(self.paths.prepared / "queries.parquet").filter(pl.col("split") == test_split)
        qrels_frame = pl.read_parquet(self.paths.prepared / "qrels.parquet").filter(pl.col("split") == test_split)
        qrels: dict[str, dict[str, int]] = {}
        for query, document, relevance in qrels_frame.select("query_id", "document_id", "relevance").iter_rows():
            qrels.setdefault(query, {})[document] = relevance
        return queries, corpus, qrels

    def score(self, model, label: str, queries: pl.DataFrame, corpus: pl.DataFrame,
              qrels: dict[str, dict[str, int]]) -> tuple[dict[str, dict], list[dict], dict[int, float]]:
        """One model's metrics per pooling method and pool factor, its per-query rows, and NDCG@10 by pool
        factor under the first method (the plot's line)."""
        evaluate = self.params.evaluate
        document_ids = corpus["document_id"].to_list()
        query_vectors = [torch.as_tensor(v) for v in model.encode(
            queries["text"].to_list(), is_query=True, batch_size=evaluate.batch_size, show_progress_bar=True)]
        token_vectors = [torch.as_tensor(v) for v in model.encode(
            corpus["text"].to_list(), is_query=False, batch_size=evaluate.batch_size, show_progress_bar=True)]
        metrics: dict[str, dict] = {}
        query_rows, line = [], {}
        for method in evaluate.methods:
            for pool_factor in evaluate.pool_factors:
                pooled = self._pool(model, token_vectors, method, pool_factor)
                top = maxsim_search(query_vectors, pooled, evaluate.top_k)
                run = {query: [document_ids[i] for i in row] for query, row in zip(queries["query_id"], top)}
                means, per_query = evaluate_run(run, qrels, cutoffs=(10, 100))
                vectors = [len(document) for document in pooled]
                metrics.setdefault(method, {})[f"pf_{pool_factor}"] = {
                    "ndcg@10": means["ndcg@10"], "mrr@10": means["mrr@10"], "recall@100": means["recall@100"],
                    "vectors_per_document": float(np.mean(vectors)), "stored_vectors": int(np.sum(vectors))}
                query_rows += [{"model": label, "method": method, "pool_factor": pool_factor, "query_id": query,
                                **values} for query, values in per_query.items()]
                if method == evaluate.methods[0]:
                    line[pool_factor] = means["ndcg@10"]
        return metrics, query_rows, line

    def evaluate(self) -> None:
        test = self.test_set()
        models = {"base": base_colbert(self.params.model, self.params.seed)}
        models.update({variant: load_colbert(self.paths.model / variant) for variant in self.variants()})
        metrics: dict = {"mining": json.loads((self.paths.mined / "mining_report.json").read_text())}
        query_rows, lines = [], {}
        for label, model in models.items():
            metrics[label], rows, lines[label] = self.score(model, label, *test)
            query_rows += rows
        pool_factors = self.params.evaluate.pool_factors
        plot = "pool_factor," + ",".join(models) + "\n" + "".join(
            f"{pf}," + ",".join(f"{lines[label][pf]:.6f}" for label in models) + "\n" for pf in sorted(pool_factors))
        with atomic_directory(self.paths.evaluation) as out:
            pl.DataFrame(query_rows).write_parquet(out / "per_query.parquet")
        atomic_write_text(self.paths.plot("ndcg_by_pool_factor"), plot)
        atomic_write_json(self.paths.metrics, metrics)
        for label in models:
            for method, by_factor in metrics[label].items():
                print(f"evaluate: {label:16s} {method:12s} " + "  ".join(
                    f"PF{key[3:]} {values['ndcg@10']:.4f}" for key, values in by_factor.items()))

    def _pool(self, model, token_vectors: list[torch.Tensor], method: str, pool_factor: int) -> list[torch.Tensor]:
        if pool_factor == 1:
            return token_vectors
        pooling = self.params.model.pooling
        if method == "hierarchical":
            return model.pool_embeddings_hierarchical(token_vectors, pool_factor=pool_factor,
                                                      protected_tokens=pooling.protected_tokens)
        return [kmeans_pool(vectors, pool_factor, pooling.kmeans_iterations, pooling.protected_tokens)
                for vectors in token_vectors]


FAMILY = Colbert
