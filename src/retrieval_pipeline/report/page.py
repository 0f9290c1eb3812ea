"""The `report` stage: each family's metrics, plot data and training summaries published into metrics/ (which git
tracks, so `dvc metrics diff` needs no cache), and metrics/report.md: per family its comparisons, expectations
and figure, opened by the collection section when params.yaml names one."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import polars as pl

from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.errors import DataError, ParamsError
from retrieval_pipeline.core.io import atomic_directory, atomic_write_text
from retrieval_pipeline.core.params import read_params_file
from retrieval_pipeline.core.paths import FamilyPaths
from retrieval_pipeline.report.collection import collection_name, collection_section
from retrieval_pipeline.report.expectations import MET, Verdict, judge
from retrieval_pipeline.report.figures import family_figure
from retrieval_pipeline.report.params import FamilyReport, ReportParams, load_report_params, report_entries
from retrieval_pipeline.report.statistics import compare, in_every_setting, markdown_table


def family_section(root: Path, family: str, report: FamilyReport, params: ReportParams, profile: str,
                   figures: Path) -> tuple[str, list[Verdict]]:
    paths = FamilyPaths(root, family)
    origin = paths.evaluation / "per_query.parquet"
    if not origin.is_file():
        raise DataError(f"{origin}: missing; run `dvc repro evaluate@{family}` first")
    per_query = in_every_setting(pl.read_parquet(origin))
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
    family_figure(per_query, family, report.metrics[0], figures / f"{family}.png")
    return "\n".join(parts), verdicts


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
