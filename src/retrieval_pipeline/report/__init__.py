"""The `report` stage: every family's evaluation in one readable page, metrics/report.md, with PNG figures.

Each family's evaluate stage writes per-query scores (eval/<family>/per_query.parquet: a `model` column,
grouping columns such as `dim` or `pool_factor`, `query_id` and one float column per metric). params.yaml's
`report.families` says, per family, which models to compare and on which metrics, and what a run of each profile
must show; the report tables each comparison per group, in the recipes' layout (baseline, candidate, absolute and
relative change), with the p-value of a paired randomization test over the per-query scores.

Modules: params (what params.yaml's `report` section holds, checked by the params and resolve stages too),
statistics (comparisons and the paired test), expectations (judging what a profile must show), figures,
collection (every family's served models on one collection), page (the stage: metrics/ and report.md).
"""
