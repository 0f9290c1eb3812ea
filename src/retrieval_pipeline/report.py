"""The `report` stage: every family's evaluation in one readable page, metrics/report.md, with PNG plots.

Each family's evaluate stage writes per-query scores (eval/<family>/per_query.parquet: a `model` column,
grouping columns such as `dim` or `pool_factor`, `query_id` and one float column per metric). params.yaml's
`report.families` says, per family, which models to compare and on which metrics; the report tables each
comparison per group, in the recipes' layout (baseline, candidate, absolute and relative change), with the
p-value of a paired randomization test over the per-query scores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import permutation_test

from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.errors import DataError, ParamsError
from retrieval_pipeline.core.io import atomic_directory, atomic_write_text
from retrieval_pipeline.core.params import read_params_file
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.core.report_params import (
    Better,
    Drop,
    Expectation,
    FamilyReport,
    NotComparable,
    Published,
    ReportParams,
    load_report_params,
    report_entries,
)


@dataclass(frozen=True)
class Row:
    metric: str
    group: tuple
    baseline: float
    candidate: float
    p_value: float
    queries: int  # held-out queries scored by both models in this row

    @property
    def change(self) -> float:
        return self.candidate - self.baseline

    @property
    def relative(self) -> str:
        return f"{100 * self.change / self.baseline:+.1f}%" if self.baseline else "n/a"


def paired_p_value(baseline: np.ndarray, candidate: np.ndarray, permutations: int, seed: int) -> float:
    """Two-sided paired randomization test on the mean per-query difference (swap each query's pair); NaN when
    fewer than two queries leave nothing to resample."""
    if len(baseline) < 2:
        return float("nan")
    if np.allclose(baseline, candidate):
        return 1.0
    result = permutation_test((candidate, baseline), lambda x, y, axis: np.mean(x - y, axis=axis),
                              permutation_type="samples", vectorized=True, n_resamples=permutations,
                              alternative="two-sided", rng=np.random.default_rng(seed))
    return float(result.pvalue)


def group_columns(per_query: pl.DataFrame) -> list[str]:
    return [column for column in per_query.columns
            if column not in ("model", "query_id") and per_query[column].dtype not in (pl.Float32, pl.Float64)]


def compare(per_query: pl.DataFrame, baseline: str, candidate: str, metrics: list[str],
            permutations: int, seed: int, origin: str) -> tuple[list[Row], list[str]]:
    """One row per metric and group (every value of the non-metric columns), and the group columns."""
    groups = group_columns(per_query)
    for label in (baseline, candidate):
        if label not in set(per_query["model"]):
            raise DataError(f"{origin}: no rows for model {label!r}; models are {sorted(set(per_query['model']))}")
    missing = [metric for metric in metrics if metric not in per_query.columns]
    if missing:
        raise DataError(f"{origin}: no column(s) {', '.join(missing)}; expected per-query metric columns")
    parts = per_query.partition_by(groups, as_dict=True, maintain_order=True) if groups else {(): per_query}
    paired_by_key = {key: part.filter(pl.col("model") == baseline).join(
        part.filter(pl.col("model") == candidate), on="query_id", suffix="_candidate") for key, part in parts.items()}
    rows = []
    for metric in metrics:
        for key, paired in paired_by_key.items():
            before, after = paired[metric].to_numpy(), paired[f"{metric}_candidate"].to_numpy()
            rows.append(Row(metric, key, float(before.mean()), float(after.mean()),
                            paired_p_value(before, after, permutations, seed), len(before)))
    return rows, groups


def markdown_table(rows: list[Row], groups: list[str], baseline: str, candidate: str) -> str:
    header = ["Metric", *groups, "queries", baseline, candidate, "Abs. change", "% change", "p-value"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join([row.metric, *[str(value) for value in row.group], str(row.queries),
                                        f"{row.baseline:.4f}",
                                        f"{row.candidate:.4f}", f"{row.change:+.4f}", row.relative,
                                        "n/a" if np.isnan(row.p_value) else f"{row.p_value:.4f}"]) + " |")
    return "\n".join(lines)


MET = {True: "yes", False: "**no**", None: "not judged"}


@dataclass(frozen=True)
class Verdict:
    expectation: str
    met: bool | None  # None: not judged (a published number this run cannot be compared with)
    detail: str


def _matching(frame: pl.DataFrame, where: dict, origin: str) -> pl.DataFrame:
    for column, value in where.items():
        if column not in frame.columns:
            raise DataError(f"{origin}: no column {column!r} to select {column} = {value!r}")
        frame = frame.filter(pl.col(column).cast(pl.String) == str(value))
    return frame


def evaluation_value(paths: FamilyPaths, path: str, metric: str) -> float:
    """The number at `path`.`metric` of the family's evaluation (eval/<family>/metrics.json)."""
    node = json.loads(paths.metrics.read_text(encoding="utf-8")) if paths.metrics.is_file() else {}
    for part in [*path.split("."), metric]:
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"{paths.metrics}: no {path}.{metric}; expected the family's evaluation to hold it")
        node = node[part]
    return float(node)


def query_mean(per_query: pl.DataFrame, model: str, metric: str, where: dict, origin: str) -> tuple[float, int]:
    rows = _matching(per_query.filter(pl.col("model") == model), where, origin)
    if rows.is_empty() or metric not in rows.columns:
        raise DataError(f"{origin}: no {metric} rows for {model!r} where {where}")
    return float(rows[metric].mean()), rows.height


def judge_published(per_query: pl.DataFrame, expectation: Published, paths: FamilyPaths, origin: str) -> Verdict:
    """This run's number beside the seed's, computed the seed's way: a held-out metric's mean over the matching
    queries, a number of the family's evaluation, or the last value a training run logged; and, with `beside`,
    the project's own way of computing it, shown."""
    metric = expectation.metric
    if expectation.summary is not None:
        summary = paths.published_training(expectation.summary)
        logged = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
        if metric not in logged:
            raise DataError(f"{summary}: no {metric!r}; expected the training run's logged values")
        value, where = float(logged[metric]), f"last logged in {expectation.summary}"
    elif expectation.evaluation is not None:
        value, where = evaluation_value(paths, expectation.evaluation, metric), expectation.evaluation
    else:
        value, queries = query_mean(per_query, expectation.model, metric, expectation.where, origin)
        where = f"{queries} queries"
    detail = f"seed {expectation.value:g}, this run {value:.4f} ({value - expectation.value:+.4f}; {where})"
    if isinstance(expectation.beside, str):
        detail += (f"; the project's way ({expectation.beside}): "
                   f"{evaluation_value(paths, expectation.beside, metric):.4f}")
    elif expectation.beside:
        own, _ = query_mean(per_query, expectation.model, metric, {**expectation.where, **expectation.beside}, origin)
        changed = ", ".join(f"{column} {value}" for column, value in expectation.beside.items())
        detail += f"; the project's way ({changed}): {own:.4f}"
    return Verdict(expectation.describe(), abs(value - expectation.value) <= expectation.tolerance, detail)


def judge(per_query: pl.DataFrame, expectation: Expectation, permutations: int, seed: int, origin: str,
          paths: FamilyPaths) -> Verdict:
    """Whether the per-query scores show what `expectation` says, with the numbers that decide it."""
    if isinstance(expectation, NotComparable):
        return Verdict(expectation.describe(), None, f"not judged: {expectation.why}")
    if isinstance(expectation, Published):
        return judge_published(per_query, expectation, paths, origin)
    per_query = _matching(per_query, expectation.where, origin)
    if isinstance(expectation, Better):
        return judge_better(per_query, expectation, permutations, seed, origin)
    return judge_drop(per_query, expectation, origin)


def judge_better(per_query: pl.DataFrame, expectation: Better, permutations: int, seed: int, origin: str) -> Verdict:
    rows, groups = compare(per_query, expectation.baseline, expectation.candidate, [expectation.metric],
                           permutations, seed, origin)
    failing = [row for row in rows if not (row.change > 0 and row.p_value < expectation.alpha)]
    worst = max(rows, key=lambda row: (row.p_value, -row.change))
    detail = (f"{len(rows) - len(failing)} of {len(rows)} rows; smallest gain {min(r.change for r in rows):+.4f}, "
              f"largest p {max(r.p_value for r in rows):.4f}")
    if failing:
        where = ", ".join(f"{g} {v}" for g, v in zip(groups, worst.group))
        detail += f"; e.g. {where}: {worst.baseline:.4f} -> {worst.candidate:.4f}, p {worst.p_value:.4f}"
    return Verdict(expectation.describe(), not failing, detail)


def group_drops(per_query: pl.DataFrame, label: str, expectation: Drop, origin: str) -> dict[str, float]:
    """`label`'s drop in mean metric from `start` to `end` of the expectation's column, per group of the other
    columns (named as the report shows them, "all" when there are none)."""
    model = per_query.filter(pl.col("model") == label)
    if model.is_empty():
        raise DataError(f"{origin}: no rows for model {label!r}")
    others = [column for column in group_columns(model) if column != expectation.column]
    parts = model.partition_by(others, as_dict=True, maintain_order=True) if others else {(): model}
    drops = {}
    for key, part in parts.items():
        value = {str(group): part.filter(pl.col(expectation.column).cast(pl.String) == str(group))[expectation.metric]
                 for group in (expectation.start, expectation.end)}
        if any(series.is_empty() for series in value.values()):
            raise DataError(f"{origin}: no rows for {expectation.column} {expectation.start} and {expectation.end}")
        name = ", ".join(f"{column} {v}" for column, v in zip(others, key)) or "all"
        drops[name] = float(value[str(expectation.start)].mean() - value[str(expectation.end)].mean())
    return drops


def judge_drop(per_query: pl.DataFrame, expectation: Drop, origin: str) -> Verdict:
    drops = group_drops(per_query, expectation.model, expectation, origin)
    compared = group_drops(per_query, expectation.fraction_of, expectation, origin) \
        if expectation.fraction_of is not None else {}
    bad = []
    for group, drop in drops.items():
        within = drop <= expectation.at_most if expectation.at_most is not None else drop >= expectation.at_least
        if compared:
            if group not in compared:
                raise DataError(f"{origin}: no rows for model {expectation.fraction_of!r} in {group}")
            within = within and drop <= expectation.fraction * compared[group]
        if not within:
            bad.append(group)
    detail = "drop " + ", ".join(f"{drop:+.4f}" for drop in drops.values())
    if compared:
        detail += f" ({expectation.fraction_of}: " + ", ".join(f"{drop:+.4f}" for drop in compared.values()) + ")"
    return Verdict(expectation.describe(), not bad, detail + (f"; outside the bound: {'; '.join(bad)}" if bad else ""))


def plot(per_query: pl.DataFrame, family: str, metric: str, path: Path) -> None:
    """The headline metric per model: a line over a numeric group (dim, pool factor), else bars per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_columns(per_query)
    numeric = [column for column in groups if per_query[column].dtype.is_integer()]
    means = per_query.group_by(["model", *groups], maintain_order=True).agg(pl.col(metric).mean())
    figure, axis = plt.subplots(figsize=(7, 4))
    if numeric:
        x, panels = numeric[0], [column for column in groups if column != numeric[0]]
        for key, lines in means.group_by(["model", *panels], maintain_order=True):
            lines = lines.sort(x)
            axis.plot(lines[x].to_list(), lines[metric].to_list(), marker="o", label=" / ".join(map(str, key)))
        axis.set_xlabel(x)
    else:
        labels = [" / ".join(map(str, key)) for key in means.select(groups).unique(maintain_order=True).rows()] \
            if groups else [""]
        models = list(dict.fromkeys(means["model"]))
        width = 0.8 / len(models)
        for index, model in enumerate(models):
            values = means.filter(pl.col("model") == model)[metric].to_list()
            axis.bar(np.arange(len(values)) + index * width, values, width, label=model)
        axis.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    axis.set_ylabel(metric)
    axis.set_title(f"{family}: {metric} on held-out queries")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same inputs, same bytes
    plt.close(figure)


def family_section(root: Path, family: str, report: FamilyReport, params: ReportParams, profile: str,
                   figures: Path) -> tuple[str, list[Verdict]]:
    paths = FamilyPaths(root, family)
    origin = paths.evaluation / "per_query.parquet"
    if not origin.is_file():
        raise DataError(f"{origin}: missing; run `dvc repro evaluate@{family}` first")
    per_query = pl.read_parquet(origin)
    parts = [f"## {family}", "", *([" ".join(report.notes.split()), ""] if report.notes else []),
             f"![{family}](report/{family}.png)", ""]
    evaluated = set(per_query["model"])
    # A profile need not train every model the report names (the seed profile has no replay variant): such
    # comparisons are listed as not run, never silently dropped.
    profile_expectations = report.expect.get(profile, [])
    named = {label for pair in report.compare for label in pair} | {
        label for expectation in profile_expectations for label in expectation.models()}
    absent = sorted(named - evaluated)
    expectations = [e for e in profile_expectations if set(e.models()) <= evaluated]
    verdicts = [judge(per_query, expectation, params.permutations, params.seed, str(origin), paths)
                for expectation in expectations]
    if absent:
        parts += [f"Not in this run (named in report.families.{family}, not evaluated by this profile): "
                  + ", ".join(f"`{label}`" for label in absent) + "; models evaluated: "
                  + ", ".join(f"`{label}`" for label in sorted(evaluated)) + ".", ""]
    if verdicts:
        parts += ["### Expectations", "", "| expectation | met | detail |", "|---|---|---|"]
        parts += [f"| {verdict.expectation} | {MET[verdict.met]} | {verdict.detail} |" for verdict in verdicts]
        parts.append("")
    for baseline, candidate in report.compare:
        if not {baseline, candidate} <= evaluated:
            continue
        rows, groups = compare(per_query, baseline, candidate, report.metrics, params.permutations, params.seed,
                               str(origin))
        parts += [f"### {candidate} vs {baseline}", "",
                  markdown_table(rows, groups, baseline, candidate), ""]
    plot(per_query, family, report.metrics[0], figures / f"{family}.png")
    return "\n".join(parts), verdicts


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
        setting = {name: value for name, value in row.items()
                   if name not in ("model", "fine_tuned", "bytes_per_document", "latency_ms_median", "latency_ms_p95")}
        scores = _matching(per_query.filter(pl.col("model") == row["model"]), setting, str(origin))
        shown = " ".join(f"{name} {value}" for name, value in setting.items() if name not in ("dataset", "method"))
        served.append(Served(family, " ".join(part for part in (family, row["model"], shown) if part),
                             scores.select("query_id", *SERVING_METRICS), row["bytes_per_document"],
                             row["latency_ms_median"], row["latency_ms_p95"],
                             training_seconds(paths) if row["fine_tuned"] else None))
    return served


def point_labels(served: list[Served]) -> dict[tuple[float, float], str]:
    """One label per point of the figure: models at the same bytes per document and NDCG@10 (one base model serving
    two families, say) share a label naming each on a line of its own, rather than labels drawn over one another."""
    names: dict[tuple[float, float], list[str]] = {}
    for model in served:
        point = (model.bytes_per_document, round(model.quality, 4))
        names.setdefault(point, []).append(model.name)
    return {point: "\n".join(models) for point, models in names.items()}


def plot_quality_against_bytes(served: list[Served], path: Path) -> None:
    """NDCG@10 against bytes per document (log scale), one point per model and setting, a colour per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for index, family in enumerate(dict.fromkeys(model.family for model in served)):
        models = [model for model in served if model.family == family]
        axis.scatter([model.bytes_per_document for model in models],
                     [model.quality for model in models], color=f"C{index}", label=family)
    for (size, quality), label in point_labels(served).items():
        axis.annotate(label, (size, quality), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("bytes per document in the index")
    axis.set_ylabel("ndcg@10")
    axis.set_title("Quality against index size, every family on one collection")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)


def collection_section(root: Path, families: list[str], params: ReportParams, collection: str,
                       figures: Path) -> str:
    """Every family's base and recommended model on the collection in one table, each against the best NDCG@10
    (a paired randomization test over the same test queries), and the quality-against-bytes figure."""
    served = [model for family in families for model in served_models(root, family)]
    best = max(served, key=lambda model: model.quality)
    lines = ["## Every recipe on the collection", "",
             f"Each family's base and recommended model on `{collection}`'s test queries against its whole corpus. "
             "NDCG@10 and Recall@100 are each family's own per-query scores; bytes per document are read from the "
             "index the evaluate stage built, and latency is its wall time answering each test query alone (encode "
             "and search; the reranker's includes its first stage) on the machine that ran it. Training is the "
             "family's train stage (every run it trains). The p-value compares each model with the best NDCG@10 "
             f"(`{best.name}`) on the queries both answered.", "",
             f"![quality against bytes](report/{COLLECTION_FIGURE})", "",
             "| model | queries | ndcg@10 | recall@100 | bytes/doc | latency median (ms) | latency p95 (ms) "
             "| training (s) | ndcg@10 vs best | p-value |", "|" + "---|" * 10]
    for model in served:
        paired = best.per_query.join(model.per_query, on="query_id", suffix="_other")
        before, after = paired["ndcg@10"].to_numpy(), paired["ndcg@10_other"].to_numpy()
        p_value = "" if model is best else f"{paired_p_value(before, after, params.permutations, params.seed):.4f}"
        change = "" if model is best else f"{float(after.mean() - before.mean()):+.4f}"
        training = "" if model.training_seconds is None else f"{model.training_seconds:.0f}"
        lines.append(f"| {model.name} | {model.per_query.height} | {model.quality:.4f} "
                     f"| {model.per_query['recall@100'].mean():.4f} | {model.bytes_per_document:.0f} "
                     f"| {model.latency_median:.1f} | {model.latency_p95:.1f} | {training} | {change} | {p_value} |")
    plot_quality_against_bytes(served, figures / COLLECTION_FIGURE)
    return "\n".join(lines + [""])


COLLECTION_FIGURE = "collection.png"


def publish(paths: FamilyPaths) -> None:
    """Copy a family's metrics and plot data from its evaluation, and each training run's summary and curves from
    its DVCLive folder (cached DVC outputs, so that DVC's run-cache can restore them), into metrics/, which git
    tracks, so `dvc metrics diff` and `dvc plots` need no cache."""
    if not paths.metrics.is_file():
        raise DataError(f"{paths.metrics}: missing; run `dvc repro evaluate@{paths.family}` first")
    atomic_write_text(paths.published_metrics, paths.metrics.read_text(encoding="utf-8"))
    for plot in sorted(paths.evaluation.glob("*.csv")):
        atomic_write_text(paths.published_plot(plot.stem), plot.read_text(encoding="utf-8"))
    for summary in sorted(paths.training_log.rglob("metrics.json")):
        run = summary.parent.relative_to(paths.training_log).as_posix().replace("/", "_")
        run = run if run != "." else "train"
        atomic_write_text(paths.published_training(run), summary.read_text("utf-8"))
        curves = summary.parent / "plots" / "metrics"
        with atomic_directory(paths.published_curves(run)) as out:
            if curves.is_dir():
                shutil.copytree(curves, out, dirs_exist_ok=True)


def collection_name(collection: str | dict) -> str:
    """params.yaml's `collection` (checked by the resolve stage) as the report names it: a folder by its name, as
    the report travels through remotes and the machine's path does not; a hub dataset by its corpus repository."""
    return collection["corpus"]["path"] if isinstance(collection, dict) else Path(collection).name


def write_report(params_file: Path, root: Path) -> None:
    params = load_report_params(params_file)
    document = read_params_file(params_file)
    profile, collection = document.get("profile", "embedded"), document.get("collection")
    entries = report_entries(params, dag_families(root), params_file)
    report = root / "metrics" / "report.md"
    for family in entries:
        publish(FamilyPaths(root, family))
    with atomic_directory(root / "metrics" / "report") as figures:
        sections = [family_section(root, family, settings, params, profile, figures)
                    for family, settings in entries.items()]
        if collection is not None:
            sections.insert(0, (collection_section(root, list(entries), params, collection_name(collection), figures),
                                []))
    verdicts = [verdict for _, family_verdicts in sections for verdict in family_verdicts
                if verdict.met is not None]
    met = sum(bool(verdict.met) for verdict in verdicts)
    header = ["# Fine-tuning report", "",
              f"Profile `{profile}`. Each table compares two models on the same held-out queries; the p-value "
              "is a two-sided paired randomization test over per-query scores "
              f"({params.permutations} resamples). Written by the `report` stage from eval/<family>/per_query.parquet.",
              ""]
    if collection is not None:
        header += [f"Collection `{collection_name(collection)}` (`collection` in params.yaml): every family's "
                   "collection source is this BEIR collection, so the families are scored on its test queries against "
                   "its whole corpus; a dataset a family's recipe needs besides it stays the family's own (its notes "
                   "say which).", ""]
    if verdicts:
        header += [f"Expectations met: {met} of {len(verdicts)} (each family's "
                   f"`report.families.<family>.expect.{profile}` in params.yaml, judged under its section; under "
                   "`seed`, the numbers the recipes' seeds publish).", ""]
    atomic_write_text(report, "\n".join(header + [text for text, _ in sections]) + "\n")
    print(f"report: {report.relative_to(root)} ({', '.join(entries)}); expectations met: {met} of {len(verdicts)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stages/report.py", description="Write metrics/report.md and its plots.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    arguments = parser.parse_args(argv)
    try:
        write_report(arguments.params, Path.cwd())
    except (ParamsError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
