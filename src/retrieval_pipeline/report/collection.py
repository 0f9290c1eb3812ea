"""The report's opening section when params.yaml's `collection` names one BEIR collection: every family's base and
recommended model on it, with BM25, the hybrid and the compressed embeddings (core/comparisons.py), side by side,
with what serving each costs, a paired test against the best, and the two rows a user decides from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from retrieval_pipeline.core.errors import DataError
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.report.figures import plot_quality_against_bytes
from retrieval_pipeline.report.params import Choice, ReportParams
from retrieval_pipeline.report.statistics import matching, paired_p_value

COLLECTION_FIGURE = "collection.png"


@dataclass(frozen=True)
class Served:
    """One model in one setting on the collection: its per-query scores and what serving it costs."""

    family: str
    name: str
    per_query: pl.DataFrame  # query_id, ndcg@10, recall@100
    bytes_per_document: float
    latency_median: float
    latency_p95: float
    training_seconds: float | None  # the family's train stage, for a fine-tuned model

    @property
    def quality(self) -> float:
        """Mean NDCG@10 over the test queries it answered: what the collection section ranks and plots models by."""
        return float(self.per_query["ndcg@10"].mean())


SERVING_METRICS = ("ndcg@10", "recall@100")


def training_seconds(paths: FamilyPaths) -> float:
    """The family's training runs' wall time (each DVCLive summary's train.runtime), summed."""
    return sum(float(json.loads(summary.read_text(encoding="utf-8")).get("train", {}).get("runtime", 0.0))
               for summary in sorted(paths.training_log.rglob("metrics.json")))


def served_models(root: Path, family: str) -> list[Served]:
    """The family's serving rows (eval/<family>/serving.parquet), each with the per-query scores of the same model
    and setting, so that its means are the family's own metrics."""
    paths = FamilyPaths(root, family)
    table, origin = paths.evaluation / "serving.parquet", paths.evaluation / "per_query.parquet"
    if not table.is_file():
        raise DataError(f"{table}: missing; expected the evaluate stage's serving cost, which it measures when the "
                        f"family reads a BEIR collection (`dvc repro evaluate@{family}` with `collection` set)")
    per_query = pl.read_parquet(origin)
    missing = [metric for metric in SERVING_METRICS if metric not in per_query.columns]
    if missing:
        raise DataError(f"{origin}: no column(s) {', '.join(missing)}; expected every family's per-query metrics")
    served = []
    for row in pl.read_parquet(table).iter_rows(named=True):
        setting = {name: value for name, value in row.items()  # a row without a setting (BM25) holds None there
                   if name not in ("model", "fine_tuned", "bytes_per_document", "latency_ms_median", "latency_ms_p95")
                   and value is not None}
        scores = matching(per_query.filter(pl.col("model") == row["model"]), setting, str(origin))
        shown = " ".join(f"{name} {value}" for name, value in setting.items() if name not in ("dataset", "method"))
        served.append(Served(family, " ".join(part for part in (family, row["model"], shown) if part),
                             scores.select("query_id", *SERVING_METRICS), row["bytes_per_document"],
                             row["latency_ms_median"], row["latency_ms_p95"],
                             training_seconds(paths) if row["fine_tuned"] else None))
    return served


def collection_section(root: Path, families: list[str], params: ReportParams, collection: str,
                       figures: Path) -> str:
    """Every family's base and recommended model on the collection in one table, each against the best NDCG@10
    (a paired randomization test over the same test queries), and the quality-against-bytes figure."""
    served = [model for family in families for model in served_models(root, family)]
    best = max(served, key=lambda model: model.quality)
    p_values = {id(model): paired_p_value(*paired_ndcg(best, model), params.permutations, params.seed)
                for model in served if model is not best}
    lines = ["## Every recipe on the collection", "",
             f"Each family's base and recommended model on `{collection}`'s test queries against its whole corpus, "
             "with BM25, the hybrid of BM25 and the recommended model, and the dense families' embeddings compressed "
             "(int8, binary, binary rescored by the float query; docs/comparisons.md). "
             "NDCG@10 and Recall@100 are each family's own per-query scores; bytes per document are read from the "
             "index the evaluate stage built, and latency is its wall time answering each test query alone (encode "
             "and search; the reranker's includes its first stage) on the machine that ran it. Training is the "
             "family's train stage (every run it trains). The p-value compares each model with the best NDCG@10 "
             f"(`{best.name}`) on the queries both answered.", "",
             f"![quality against bytes](report/{COLLECTION_FIGURE})", "",
             "| model | queries | ndcg@10 | recall@100 | bytes/doc | latency median (ms) | latency p95 (ms) "
             "| training (s) | ndcg@10 vs best | p-value |", "|" + "---|" * 10]
    for model in served:
        before, after = paired_ndcg(best, model)
        p_value = "" if model is best else f"{p_values[id(model)]:.4f}"
        change = "" if model is best else f"{float(after.mean() - before.mean()):+.4f}"
        training = "" if model.training_seconds is None else f"{model.training_seconds:.0f}"
        lines.append(f"| {model.name} | {model.per_query.height} | {model.quality:.4f} "
                     f"| {model.per_query['recall@100'].mean():.4f} | {model.bytes_per_document:.0f} "
                     f"| {model.latency_median:.1f} | {model.latency_p95:.1f} | {training} | {change} | {p_value} |")
    plot_quality_against_bytes(served, figures / COLLECTION_FIGURE)
    return "\n".join(lines + ["", *choices(served, best, p_values, params.choice), ""])


def paired_ndcg(best: Served, model: Served):
    """Both models' NDCG@10 on the test queries both answered, in the same order."""
    paired = best.per_query.join(model.per_query, on="query_id", suffix="_other")
    return paired["ndcg@10"].to_numpy(), paired["ndcg@10_other"].to_numpy()


def cost(model: Served) -> tuple[float, float]:
    """Cheaper: fewer bytes per document, then a lower median latency."""
    return model.bytes_per_document, model.latency_median


def choices(served: list[Served], best: Served, p_values: dict[int, float], choice: Choice) -> list[str]:
    """The two rows a user decides from: the cheapest the paired test cannot tell from the best (p >= alpha), and
    the best whose index fits the bytes-per-document budget (report.choice in params.yaml)."""
    tied = [best, *(model for model in served if model is not best and p_values[id(model)] >= choice.alpha)]
    cheapest = min(tied, key=cost)
    described = lambda model: (f"`{model.name}` (NDCG@10 {model.quality:.4f}, "  # noqa: E731
                               f"{model.bytes_per_document:.0f} bytes/doc, {model.latency_median:.1f} ms median"
                               + ("" if model is best else f", p {p_values[id(model)]:.4f} against the best") + ")")
    lines = [f"- Cheapest within one paired test of the best (p >= {choice.alpha:g}, fewest bytes per document, then "
             f"lowest median latency): {described(cheapest)}."]
    fitting = [model for model in served if model.bytes_per_document <= choice.bytes_per_document]
    budget = f"{choice.bytes_per_document:g} bytes per document (`report.choice.bytes_per_document`)"
    lines.append(f"- Best within {budget}: {described(max(fitting, key=lambda model: model.quality))}." if fitting
                 else f"- Best within {budget}: no row fits; the smallest is {described(min(served, key=cost))}.")
    return lines


def collection_name(collection: str | dict) -> str:
    """params.yaml's `collection` (checked by the resolve stage) as the report names it: a folder by its name, as
    the report travels through remotes and the machine's path does not; a hub dataset by its corpus repository."""
    return collection["corpus"]["path"] if isinstance(collection, dict) else Path(collection).name
