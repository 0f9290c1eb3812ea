"""dvc.yaml's `families` var is the one list of families: every per-family stage runs each, the report covers
each, and a family package, its params section and its report entry must agree with it."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest
import yaml
from helpers import REPO, TINY_DPR, FamilyStages, repo_params, write_params

from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.family import OPTIONAL_STAGES, STAGE_INTERFACES, STAGES
from retrieval_pipeline.core.paths import BASE_RECORD, FamilyPaths
from retrieval_pipeline.core.resolve import SECTIONS
from retrieval_pipeline.core.stage import stage_module

PACKAGES = {path.parent.name for path in (REPO / "src/retrieval_pipeline/families").glob("*/__init__.py")}
PER_FAMILY_STAGES = {"resolve", "prepare", "base", "mine", "baseline", "train", "evaluate"}


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def test_the_family_list_names_every_family_module_and_every_per_family_stage_reads_it():
    assert set(dag_families(REPO)) == PACKAGES
    stages = dvc_yaml()["stages"]
    assert {name for name, stage in stages.items() if "foreach" in stage} == PER_FAMILY_STAGES
    for name in PER_FAMILY_STAGES:
        assert stages[name]["foreach"] == "${families}", f"stage {name} keeps its own list of families"


def test_every_family_has_params_a_report_entry_and_published_metrics():
    params, families = repo_params(), dag_families(REPO)
    assert set(families) <= set(params), f"params.yaml has no section for {sorted(set(families) - set(params))}"
    assert list(params["report"]["families"]) == families
    report = dvc_yaml()["stages"]["report"]
    assert "eval" in report["deps"] and "dvclive" in report["deps"]
    assert {"metrics/families", "metrics/training"} <= set(dvc_yaml()["metrics"])
    assert all((REPO / "metrics" / "families" / f"{name}.json").is_file() for name in families)


def test_every_family_package_exports_its_family_its_labels_and_a_module_per_stage():
    for name in PACKAGES:
        family = importlib.import_module(f"retrieval_pipeline.families.{name}").FAMILY
        assert family.name == name and "in docs/recipes.md" in family.recipe
        assert family.labels and len(set(family.labels)) == len(family.labels)
        assert set(STAGES) - set(OPTIONAL_STAGES) <= set(family.stages) <= set(STAGES)
        for stage, module_name in family.stages.items():
            module = importlib.import_module(f"retrieval_pipeline.families.{name}.{module_name}")
            interface = STAGE_INTERFACES[stage]
            assert isinstance(module, interface), f"{name}.{module_name} has no function {stage}"
            # isinstance sees only that the function exists: its parameters are the Protocol's, in order
            wanted = list(inspect.signature(getattr(interface, stage)).parameters)[1:]  # less self
            assert list(inspect.signature(getattr(module, stage)).parameters) == wanted, (name, module_name)


def test_the_stage_runner_refuses_a_stage_module_without_the_stages_function():
    dpr = importlib.import_module("retrieval_pipeline.families.dpr").FAMILY
    misrouted = type("Misrouted", (dpr,), {"stages": {**dpr.stages, "train": "scoring"}})
    with pytest.raises(TypeError, match="retrieval_pipeline.families.dpr.scoring implements no TrainStage"):
        stage_module(object.__new__(misrouted), "train")


# What each per-family stage writes, as core/paths.py names it for the stages' code.
STAGE_OUTPUTS = {"resolve": ["resolved_params", "resolved_inputs"], "prepare": ["prepared"], "base": ["base"],
                 "mine": ["mined"],
                 "baseline": ["baseline_scores"], "train": ["model", "training_log", "trained_scores"],
                 "evaluate": ["evaluation"]}
DATA_INPUTS = ["prepared", "base", "mined", "baseline_scores", "trained_scores"]


def test_dvc_yaml_names_the_paths_that_the_stages_read_and_write():
    """The stages find their folders through FamilyPaths and DVC through dvc.yaml: if the two named different
    folders, DVC would version and cache folders that no stage fills."""
    stages, family = dvc_yaml()["stages"], dag_families(REPO)[0]
    paths = FamilyPaths(Path("."), family)

    def declared(entries) -> list[str]:
        return [(next(iter(entry)) if isinstance(entry, dict) else entry).replace("${key}", family)
                for entry in entries]

    # the params stage's record of who reads each top-level key, which every resolve depends on
    assert declared(stages["params"]["outs"]) == [SECTIONS.as_posix()]
    data_inputs = {getattr(paths, name).as_posix() for name in DATA_INPUTS} | {SECTIONS.as_posix()}
    for stage, names in STAGE_OUTPUTS.items():
        body = stages[stage]["do"]
        assert declared(body["outs"]) == [getattr(paths, name).as_posix() for name in names], stage
        inputs = [dep for dep in declared(body["deps"]) if dep.startswith(("data/", "scores/"))]
        assert set(inputs) <= data_inputs, f"{stage} depends on {sorted(set(inputs) - data_inputs)}"
        files = [next(iter(entry)) for entry in body["params"] if isinstance(entry, dict)]
        assert declared(files) == ([] if stage == "resolve" else [paths.resolved_params.as_posix()]), stage


def test_a_family_without_a_base_module_gets_a_base_stage_that_says_so(tmp_path, capsys):
    """The base stage runs for every family (one dvc.yaml template); one that makes no base of its own gets the
    runner's output, a record that model.base is fine-tuned as it is, and nothing else."""
    write_params(tmp_path, TINY_DPR)
    dpr = FamilyStages("dpr", tmp_path)
    assert "base" not in type(dpr.family).stages
    dpr.base()
    assert [path.name for path in dpr.paths.base.iterdir()] == [BASE_RECORD]
    assert json.loads((dpr.paths.base / BASE_RECORD).read_text()) == {"made_here": False}
    assert "base: dpr fine-tunes model.base as it is" in capsys.readouterr().out
