from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from helpers import write_params

from retrieval_pipeline.core.errors import DataError, ParamsError
from retrieval_pipeline.report.page import write_report
from retrieval_pipeline.report.statistics import compare, paired_p_value


def per_query_frame() -> pl.DataFrame:
    """Two models on 6 queries at two dims; the candidate wins on every query at dim 64 only."""
    rows = []
    for dim, gain in ((64, 0.3), (32, 0.0)):
        for index in range(6):
            base = 0.1 * index
            rows += [{"model": "base", "dim": dim, "query_id": f"q{index}", "ndcg@10": base, "mrr@10": base},
                     {"model": "tuned", "dim": dim, "query_id": f"q{index}", "ndcg@10": base + gain, "mrr@10": base}]
    return pl.DataFrame(rows)


def test_paired_randomization_test_is_exact_on_small_samples_and_seeded():
    baseline, candidate = np.zeros(5), np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    # 2^5 sign flips; only all-positive and all-negative are as extreme: two-sided p = 2 / 32
    assert paired_p_value(baseline, candidate, 10000, seed=0) == pytest.approx(2 / 32)
    assert paired_p_value(baseline, baseline, 10000, seed=0) == 1.0
    noisy = np.random.default_rng(1).normal(size=40)
    first = paired_p_value(noisy, noisy + 0.1, 2000, seed=3)
    assert first == paired_p_value(noisy, noisy + 0.1, 2000, seed=3)
    assert np.isnan(paired_p_value(np.zeros(1), np.ones(1), 2000, seed=0))  # one query: nothing to resample


def test_comparison_rows_per_metric_and_group():
    rows, groups = compare(per_query_frame(), "base", "tuned", ["ndcg@10", "mrr@10"], 10000, 0, "per_query.parquet")
    assert groups == ["dim"]
    by_key = {(row.metric, row.group): row for row in rows}
    gained = by_key["ndcg@10", (64,)]
    assert gained.baseline == pytest.approx(0.25) and gained.candidate == pytest.approx(0.55)
    assert gained.change == pytest.approx(0.3) and gained.relative == "+120.0%"
    assert gained.p_value == pytest.approx(2 / 64)
    assert by_key["ndcg@10", (32,)].p_value == 1.0 and by_key["mrr@10", (64,)].change == 0.0


def toy_evaluation(root):
    """What an evaluate stage writes for a family 'toy': per-query scores, metrics and plot data."""
    folder = root / "eval" / "toy"
    folder.mkdir(parents=True)
    per_query_frame().write_parquet(folder / "per_query.parquet")
    (folder / "metrics.json").write_text('{"tuned": {"ndcg@10": 0.4}}\n')
    (folder / "ndcg_by_dim.csv").write_text("dim,base,tuned\n64,0.25,0.55\n")
    (root / "dvclive" / "toy" / "stage1").mkdir(parents=True)
    (root / "dvclive" / "toy" / "stage1" / "metrics.json").write_text('{"train": {"loss": 0.5}}\n')
    (root / "dvc.yaml").write_text("vars:\n  - families: {toy: {}}\nstages: {}\n")


def report_params(root, **report):
    """The repository's params in root/params.yaml, with these keys of its report section replaced."""
    params = write_params(root)
    document = yaml.safe_load(params.read_text())
    document["report"].update(report)
    params.write_text(yaml.safe_dump(document))
    return params


def test_unknown_model_or_metric_names_the_file():
    with pytest.raises(DataError, match=r"per_query.parquet: no rows for model 'finetuned'"):
        compare(per_query_frame(), "base", "finetuned", ["ndcg@10"], 100, 0, "per_query.parquet")
    with pytest.raises(DataError, match=r"per_query.parquet: no column\(s\) map@100"):
        compare(per_query_frame(), "base", "tuned", ["map@100"], 100, 0, "per_query.parquet")


def test_report_is_written_with_a_plot_per_family(tmp_path):
    toy_evaluation(tmp_path)
    params = report_params(tmp_path, families={"toy": {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]]}})
    write_report(params, tmp_path)
    report = (tmp_path / "metrics" / "report.md").read_text()
    assert "### tuned vs base" in report and "| Metric | dim | queries | base | tuned |" in report
    assert "| ndcg@10 | 64 | 6 | 0.2500 | 0.5500 | +0.3000 | +120.0% | 0.0312 |" in report
    assert (tmp_path / "metrics" / "report" / "toy.png").read_bytes()[:4] == b"\x89PNG"
    # the metrics and plot data, copied where git tracks them
    assert (tmp_path / "metrics" / "families" / "toy.json").read_text() == '{"tuned": {"ndcg@10": 0.4}}\n'
    assert (tmp_path / "metrics" / "training" / "toy" / "stage1.json").read_text() == '{"train": {"loss": 0.5}}\n'
    assert (tmp_path / "metrics" / "toy_ndcg_by_dim.csv").read_text().startswith("dim,base,tuned")


def test_a_family_of_the_dag_without_a_report_entry_is_an_error(tmp_path):
    toy_evaluation(tmp_path)
    (tmp_path / "dvc.yaml").write_text("vars:\n  - families: {toy: {}, fifth: {}}\nstages: {}\n")
    params = report_params(tmp_path, families={"toy": {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]]}})
    with pytest.raises(ParamsError, match=r"report.families has no entry for fifth \(a family of dvc.yaml's"):
        write_report(params, tmp_path)
    (tmp_path / "dvc.yaml").write_text("vars:\n  - families: {other: {}}\nstages: {}\n")
    with pytest.raises(ParamsError, match=r"report.families has no entry for other"):
        write_report(params, tmp_path)


def test_bad_report_params_name_the_key(tmp_path):
    params = report_params(tmp_path, permutations=0)
    with pytest.raises(ParamsError, match=r"report.permutations: Input should be greater than 0"):
        write_report(params, tmp_path)
    assert not (tmp_path / "metrics").exists()


def test_expectations_are_judged_on_the_per_query_scores():
    from retrieval_pipeline.core.paths import FamilyPaths
    from retrieval_pipeline.report.expectations import judge
    from retrieval_pipeline.report.params import Better, Drop

    paths = FamilyPaths(Path("."), "toy")
    frame = per_query_frame()
    better = judge(frame, Better(kind="better", candidate="tuned", baseline="base", metric="ndcg@10", alpha=0.05),
                   2000, 0, "per_query.parquet", paths)
    assert not better.met and "1 of 2 rows" in better.detail and "dim 32" in better.detail
    only_64 = judge(frame, Better(kind="better", candidate="tuned", baseline="base", metric="ndcg@10", alpha=0.05,
                                  where={"dim": 64}), 2000, 0, "per_query.parquet", paths)
    assert only_64.met and only_64.expectation.endswith("in every row, dim 64 (p < 0.05)")
    # tuned: 0.55 at dim 64, 0.25 at dim 32
    falls = Drop(kind="drop", model="tuned", metric="ndcg@10", column="dim", start=64, end=32, at_least=0.25)
    assert judge(frame, falls, 100, 0, "x", paths).met
    holds = Drop(kind="drop", model="tuned", metric="ndcg@10", column="dim", start=64, end=32, at_most=0.01)
    verdict = judge(frame, holds, 100, 0, "x", paths)
    assert not verdict.met and verdict.detail.startswith("drop +0.3000")
    with pytest.raises(ValueError, match="exactly one of at_most and at_least"):
        Drop(kind="drop", model="tuned", metric="ndcg@10", column="dim", start=64, end=32)
    # one model's drop against another's: base drops 0.0, tuned 0.3
    relative = {"kind": "drop", "metric": "ndcg@10", "column": "dim", "start": 64, "end": 32, "fraction": 0.5}
    steady = judge(frame, Drop(**relative, model="base", fraction_of="tuned", at_most=0.01), 100, 0, "x", paths)
    assert steady.met and steady.detail == "drop +0.0000 (tuned: +0.3000)"
    assert "at most 0.010 and at most 0.5 x tuned's drop" in steady.expectation
    assert not judge(frame, Drop(**relative, model="tuned", fraction_of="base", at_most=1.0), 100, 0, "x", paths).met
    with pytest.raises(ValueError, match="fraction_of and fraction together"):
        Drop(kind="drop", model="tuned", metric="ndcg@10", column="dim", start=64, end=32, at_most=0.1, fraction=0.5)
    with pytest.raises(ValueError, match="fraction_of names the model itself"):
        Drop(**relative, model="tuned", fraction_of="tuned", at_most=0.1)


def test_the_report_counts_the_expectations_it_met(tmp_path):
    toy_evaluation(tmp_path)
    toy = {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]], "expect": {"embedded": [
        {"kind": "better", "candidate": "tuned", "baseline": "base", "metric": "ndcg@10", "alpha": 0.05,
         "where": {"dim": 64}},
        {"kind": "better", "candidate": "tuned", "baseline": "base", "metric": "ndcg@10", "alpha": 0.05}]}}
    params = report_params(tmp_path, families={"toy": toy})
    write_report(params, tmp_path)
    report = (tmp_path / "metrics" / "report.md").read_text()
    assert "Expectations met: 1 of 2" in report and "| **no** |" in report and "### Expectations" in report


def test_models_a_profile_does_not_train_are_listed_not_run(tmp_path):
    toy_evaluation(tmp_path)
    toy = {"metrics": ["ndcg@10"], "compare": [["base", "tuned"], ["base", "replay"]], "expect": {"embedded": [
        {"kind": "better", "candidate": "replay", "baseline": "base", "metric": "ndcg@10", "alpha": 0.05}]}}
    params = report_params(tmp_path, families={"toy": toy})
    write_report(params, tmp_path)
    report = (tmp_path / "metrics" / "report.md").read_text()
    assert "Not in this run (named in report.families.toy, not evaluated by this profile): `replay`" in report
    assert "### tuned vs base" in report and "replay vs base" not in report
    assert "Expectations met" not in report


def test_a_familys_notes_are_shown_under_its_heading(tmp_path):
    toy_evaluation(tmp_path)
    toy = {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]], "notes": "Read the tuned model\nagainst the base."}
    params = report_params(tmp_path, families={"toy": toy})
    write_report(params, tmp_path)
    assert "## toy\n\nRead the tuned model against the base.\n\n![toy]" in (tmp_path / "metrics/report.md").read_text()


def test_each_profile_is_judged_by_its_own_expectations_and_seed_runs_by_the_published_numbers(tmp_path):
    """Under `seed` a family is judged by the numbers its seed publishes, this run's beside each; a number that
    cannot be compared is shown, not judged; the embedded expectations are not applied."""
    toy_evaluation(tmp_path)
    toy = {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]], "expect": {
        "embedded": [{"kind": "better", "candidate": "tuned", "baseline": "base", "metric": "ndcg@10", "alpha": 0.05}],
        "seed": [
            {"kind": "published", "model": "tuned", "metric": "ndcg@10", "where": {"dim": 64}, "value": 0.56,
             "tolerance": 0.02, "source": "seed 9"},  # this run: 0.55
            {"kind": "published", "model": "base", "metric": "ndcg@10", "where": {"dim": 32}, "value": 0.40,
             "tolerance": 0.05, "source": "seed 9"},  # this run: 0.25
            {"kind": "published", "summary": "stage1", "metric": "loss", "value": 0.4, "tolerance": 0.2,
             "source": "seed 9"},
            {"kind": "not_comparable", "seed": "F1 0.98", "why": "another population"}]}}
    params = report_params(tmp_path, families={"toy": toy})
    document = yaml.safe_load(params.read_text())
    params.write_text(yaml.safe_dump({**document, "profile": "seed"}))
    (tmp_path / "dvclive/toy/stage1/metrics.json").write_text('{"loss": 0.5}\n')
    write_report(params, tmp_path)
    report = (tmp_path / "metrics" / "report.md").read_text()
    assert "Profile `seed`" in report and "Expectations met: 2 of 3" in report
    pm = "\u00b1"
    assert (f"| tuned ndcg@10, dim 64 as published: 0.56 {pm} 0.02 (seed 9) | yes | seed 0.56, this run 0.5500 "
            "(-0.0100; 6 queries) |") in report
    assert f"| base ndcg@10, dim 32 as published: 0.4 {pm} 0.05 (seed 9) | **no** | seed 0.4, this run 0.2500" in report
    assert f"| training run stage1: loss as published: 0.4 {pm} 0.2 (seed 9) | yes | seed 0.4, this run 0.5000" \
        in report
    assert "| seed: F1 0.98 | not judged | not judged: another population |" in report
    assert "beats base" not in report  # the embedded expectation is not applied to a seed run


def test_a_published_number_names_one_place():
    from retrieval_pipeline.report.params import Published

    with pytest.raises(ValueError, match="exactly one of model"):
        Published(kind="published", metric="loss", value=1.0, tolerance=0.1, source="s")
    with pytest.raises(ValueError, match="exactly one of model"):
        Published(kind="published", metric="f1", value=1.0, tolerance=0.1, source="s", model="m", evaluation="a.b")
    with pytest.raises(ValueError, match="beside: expected columns of where to change with model"):
        Published(kind="published", metric="f1", value=1.0, tolerance=0.1, source="s", model="m", beside="a.b")
    with pytest.raises(ValueError, match="not with summary"):
        Published(kind="published", metric="f1", value=1.0, tolerance=0.1, source="s", summary="t", beside={"a": 1})


def test_a_published_number_is_judged_the_authors_way_with_the_projects_way_beside_it(tmp_path):
    """The seed's number set against this run's computed as its authors computed theirs (a `where` selecting their
    corpus, or a number of the evaluation such as an F1 over their held-out pairs), the same quantity computed the
    project's way shown beside it and not judged."""
    toy_evaluation(tmp_path)
    (tmp_path / "eval/toy/metrics.json").write_text(
        '{"tuned": {"stage1": {"f1": 0.71, "held_out_examples": {"f1": 0.97, "pairs": 40}}}}\n')
    toy = {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]], "expect": {"seed": [
        {"kind": "published", "model": "tuned", "metric": "ndcg@10", "where": {"dim": 64}, "beside": {"dim": 32},
         "value": 0.56, "tolerance": 0.02, "source": "seed 9"},  # this run 0.55; at dim 32: 0.25
        {"kind": "published", "evaluation": "tuned.stage1.held_out_examples", "metric": "f1",
         "beside": "tuned.stage1", "value": 0.98, "tolerance": 0.02, "source": "seed 9"}]}}
    params = report_params(tmp_path, families={"toy": toy})
    document = yaml.safe_load(params.read_text())
    params.write_text(yaml.safe_dump({**document, "profile": "seed"}))
    write_report(params, tmp_path)
    report = (tmp_path / "metrics" / "report.md").read_text()
    pm = "\u00b1"
    assert (f"| tuned ndcg@10, dim 64 as published: 0.56 {pm} 0.02 (seed 9) | yes | seed 0.56, this run 0.5500 "
            "(-0.0100; 6 queries); the project's way (dim 32): 0.2500 |") in report
    assert (f"| tuned.stage1.held_out_examples: f1 as published: 0.98 {pm} 0.02 (seed 9) | yes | seed 0.98, this run "
            "0.9700 (-0.0100; tuned.stage1.held_out_examples); the project's way (tuned.stage1): 0.7100 |") in report
    broken = {**toy, "expect": {"seed": [{"kind": "published", "evaluation": "tuned.stage2", "metric": "f1",
                                          "value": 0.9, "tolerance": 0.1, "source": "seed 9"}]}}
    params = report_params(tmp_path, families={"toy": broken})
    params.write_text(yaml.safe_dump({**yaml.safe_load(params.read_text()), "profile": "seed"}))
    with pytest.raises(DataError, match=r"eval/toy/metrics.json: no tuned.stage2.f1; expected the family's "
                                        r"evaluation to hold it"):
        write_report(params, tmp_path)


def test_the_collection_section_sets_every_served_model_against_the_best(tmp_path):
    """With `collection` set, one table of every family's served models (here one toy family at two dims): each
    family's per-query means, its measured serving cost, its training time, and a paired test against the best."""
    toy_evaluation(tmp_path)
    folder = tmp_path / "eval" / "toy"
    bm25 = pl.DataFrame([{"model": "bm25", "dim": None, "query_id": f"q{index}", "ndcg@10": 0.05, "mrr@10": 0.05}
                         for index in range(6)], schema_overrides={"dim": pl.Int64})
    pl.concat([per_query_frame(), bm25]).with_columns(pl.col("ndcg@10").alias("recall@100")).write_parquet(
        folder / "per_query.parquet")
    from retrieval_pipeline.core.serving import record_serving  # as an evaluate stage writes it: BM25's row first

    tables: dict = {}
    record_serving({}, tables, [{"model": "bm25", "fine_tuned": False, "bytes_per_document": 30.0,
                                 "latency_ms_median": 0.5, "latency_ms_p95": 0.6}]
                   + [{"model": model, "fine_tuned": model == "tuned", "dim": dim, "bytes_per_document": 4.0 * dim,
                       "latency_ms_median": 1.0, "latency_ms_p95": 2.0}
                      for model in ("base", "tuned") for dim in (64, 32)])
    tables["serving"].write_parquet(folder / "serving.parquet")
    (tmp_path / "dvclive" / "toy" / "stage1" / "metrics.json").write_text('{"train": {"runtime": 12.5}}\n')
    params = report_params(tmp_path, families={"toy": {"metrics": ["ndcg@10"], "compare": [["base", "tuned"]]}})
    document = yaml.safe_load(params.read_text())
    params.write_text(yaml.safe_dump({**document, "collection": str(tmp_path / "my-collection")}))
    write_report(params, tmp_path)
    report = (tmp_path / "metrics" / "report.md").read_text()
    assert "## Every recipe on the collection" in report and "`my-collection`" in report
    assert str(tmp_path) not in report
    assert "| toy tuned dim 64 | 6 | 0.5500 | 0.5500 | 256 | 1.0 | 2.0 | 12 |  |  |" in report  # the best
    assert "| toy base dim 64 | 6 | 0.2500 | 0.2500 | 256 | 1.0 | 2.0 |  | -0.3000 | 0.0312 |" in report
    assert "| toy base dim 32 | 6 | 0.2500 | 0.2500 | 128 |" in report
    assert "| toy bm25 | 6 | 0.0500 | 0.0500 | 30 | 0.5 | 0.6 |  | -0.5000 |" in report  # no setting: its own rows
    assert (tmp_path / "metrics" / "report" / "collection.png").read_bytes()[:4] == b"\x89PNG"
    (folder / "serving.parquet").unlink()
    with pytest.raises(DataError, match=r"eval/toy/serving.parquet: missing; expected the evaluate stage's serving"):
        write_report(params, tmp_path)


def test_models_at_one_point_of_the_figure_share_one_label():
    """The base model two families serve alike sits at one point: one label names both, the others keep their own."""
    from retrieval_pipeline.report.collection import Served
    from retrieval_pipeline.report.figures import point_labels

    def served(family: str, name: str, ndcg: list[float], size: float) -> Served:
        return Served(family, f"{family} {name}", pl.DataFrame({"query_id": ["a", "b"], "ndcg@10": ndcg,
                                                                 "recall@100": ndcg}), size, 1.0, 2.0, None)

    labels = point_labels([served("matryoshka", "base dim 384", [0.25, 0.75], 1536.0),
                           served("dpr", "base", [0.75, 0.25], 1536.0),
                           served("dpr", "finetuned", [1.0, 0.5], 1536.0),
                           served("matryoshka", "base dim 32", [0.25, 0.75], 128.0)])
    assert labels == {(1536.0, 0.5): "matryoshka base dim 384\ndpr base", (1536.0, 0.75): "dpr finetuned",
                      (128.0, 0.5): "matryoshka base dim 32"}


def test_a_model_without_a_setting_is_compared_in_every_setting():
    """BM25 has no dim: its rows are set against the tuned model's at each dim, and a group only one of two models
    is scored in (a hybrid at one pooling method of two) has no row."""
    from retrieval_pipeline.report.statistics import in_every_setting

    bm25 = pl.DataFrame([{"model": "bm25", "dim": None, "query_id": f"q{index}", "ndcg@10": 0.2, "mrr@10": 0.2}
                         for index in range(6)], schema_overrides={"dim": pl.Int64})
    frame = in_every_setting(pl.concat([per_query_frame(), bm25]))
    assert frame.filter(pl.col("model") == "bm25").select("dim").unique().sort("dim")["dim"].to_list() == [32, 64]
    rows, groups = compare(frame, "bm25", "tuned", ["ndcg@10"], 100, 0, "per_query.parquet")
    assert groups == ["dim"] and [(row.group, row.queries) for row in rows] == [((64,), 6), ((32,), 6)]
    assert [(row.baseline, row.candidate) for row in rows] == [pytest.approx((0.2, 0.55)), pytest.approx((0.2, 0.25))]
    one_dim = frame.filter((pl.col("model") != "base") | (pl.col("dim") == 64))
    rows, _ = compare(one_dim, "base", "tuned", ["ndcg@10"], 100, 0, "per_query.parquet")
    assert [row.group for row in rows] == [(64,)]


def test_the_cheapest_row_within_one_paired_test_and_the_best_within_the_budget():
    """The best (float32, 1,536 bytes), a binary row the test cannot tell from it (48 bytes), an int8 row it can
    (384 bytes, every query worse), and BM25, worse still: the cheapest tied row is the binary one; under a 400-byte
    budget the best row that fits is the binary one too, and under 10 bytes none fits."""
    from retrieval_pipeline.report.collection import Served, choices, paired_ndcg
    from retrieval_pipeline.report.params import Choice
    from retrieval_pipeline.report.statistics import paired_p_value

    def served(name: str, ndcg: list[float], size: float) -> Served:
        frame = pl.DataFrame({"query_id": [f"q{i}" for i in range(len(ndcg))], "ndcg@10": ndcg, "recall@100": ndcg})
        return Served("toy", name, frame, size, 1.0, 2.0, None)

    best = served("toy finetuned", [0.9, 0.8, 0.7, 0.6, 0.9, 0.8], 1536)
    binary = served("toy finetuned/binary", [0.8, 0.9, 0.7, 0.6, 0.8, 0.9], 48)
    int8 = served("toy finetuned/int8", [0.5, 0.4, 0.3, 0.2, 0.5, 0.4], 384)
    bm25 = served("toy bm25", [0.1, 0.1, 0.1, 0.1, 0.1, 0.1], 120)
    rows = [best, binary, int8, bm25]
    p_values = {id(row): paired_p_value(*paired_ndcg(best, row), 1000, 0) for row in rows if row is not best}
    assert p_values[id(binary)] >= 0.05 > p_values[id(int8)]
    lines = choices(rows, best, p_values, Choice(alpha=0.05, bytes_per_document=400))
    assert lines[0].startswith("- Cheapest within one paired test of the best") and "`toy finetuned/binary`" in lines[0]
    assert "`toy finetuned/binary`" in lines[1] and "400 bytes per document" in lines[1]
    lines = choices(rows, best, p_values, Choice(alpha=0.05, bytes_per_document=10))
    assert "no row fits; the smallest is `toy finetuned/binary`" in lines[1]


def test_the_comparison_rows_leave_every_expectation_as_it_was(tmp_path):
    """BM25 and a hybrid added to a family's per-query table (as every retrieval family's evaluate stage adds them)
    change no verdict of an expectation about its own models."""
    from retrieval_pipeline.core.paths import FamilyPaths
    from retrieval_pipeline.report.expectations import judge
    from retrieval_pipeline.report.params import Better, Drop
    from retrieval_pipeline.report.statistics import in_every_setting

    own = per_query_frame()
    added = pl.concat([own, pl.DataFrame(
        [{"model": "bm25", "dim": None, "query_id": f"q{index}", "ndcg@10": 0.9, "mrr@10": 0.9} for index in range(6)]
        + [{"model": "hybrid", "dim": dim, "query_id": f"q{index}", "ndcg@10": 0.0, "mrr@10": 0.0}
           for dim in (64, 32) for index in range(6)], schema_overrides={"dim": pl.Int64})])
    expectations = [Better(kind="better", candidate="tuned", baseline="base", metric="ndcg@10", alpha=0.05),
                    Better(kind="better", candidate="tuned", baseline="base", metric="ndcg@10", alpha=0.05,
                           where={"dim": 64}),
                    Drop(kind="drop", model="tuned", metric="ndcg@10", column="dim", start=64, end=32, at_most=0.1)]
    paths = FamilyPaths(tmp_path, "toy")
    verdicts = [[judge(frame, expectation, 100, 0, "per_query.parquet", paths)
                 for expectation in expectations] for frame in (own, in_every_setting(added))]
    assert verdicts[0] == verdicts[1]
    assert [verdict.met for verdict in verdicts[0]] == [False, True, False]
