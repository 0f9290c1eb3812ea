"""Every place that names the families names the same ones: a family missing from one of them would silently
drop out of the DAG, the report or `dvc metrics diff`."""

from __future__ import annotations

import yaml
from helpers import REPO, repo_params

MODULES = {path.stem for path in (REPO / "src/retrieval_pipeline/families").glob("*.py") if path.stem != "__init__"}


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def test_every_per_family_stage_runs_every_family_module():
    stages = dvc_yaml()["stages"]
    per_family = {name: set(stage["foreach"]) for name, stage in stages.items() if "foreach" in stage}
    assert set(per_family) == {"resolve", "prepare", "mine", "train", "evaluate"}
    for name, families in per_family.items():
        assert families == MODULES, f"stage {name} runs {sorted(families)}; the family modules are {sorted(MODULES)}"


def test_every_family_has_params_a_report_entry_and_published_metrics():
    params = repo_params()
    assert MODULES <= set(params), f"params.yaml has no section for {sorted(MODULES - set(params))}"
    assert set(params["report"]["families"]) == MODULES
    report = dvc_yaml()["stages"]["report"]
    assert {dep for dep in report["deps"] if dep.startswith("eval/")} == {f"eval/{name}" for name in MODULES}
    assert {f"metrics/{name}.json" for name in MODULES} <= set(dvc_yaml()["metrics"])
    assert all((REPO / "metrics" / f"{name}.json").is_file() for name in MODULES)


def test_every_family_module_exports_its_family_under_its_own_name():
    import importlib

    for name in MODULES:
        family = importlib.import_module(f"retrieval_pipeline.families.{name}").FAMILY
        assert family.name == name and "in docs/recipes.md" in family.recipe
