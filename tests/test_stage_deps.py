"""dvc.yaml's code dependencies are what each stage imports, walked from the stage script and the family modules the
stage runner loads (tests/stage_imports.py): nothing a stage imports is missing, so DVC reruns it for every edit
that can change it, and nothing is listed that no family's stage imports."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO
from stage_imports import FAMILIES, FAMILY_FOLDER, as_deps, expected_deps, imported, stage_files

from retrieval_pipeline.core.dag import dag_families

PER_FAMILY = ("resolve", "prepare", "base", "mine", "baseline", "train", "evaluate")
DATA = ("data/", "scores/", "models/", "eval", "dvclive")  # stage outputs, not code


def code_deps(entries: list[str]) -> list[str]:
    return [entry for entry in entries if not entry.startswith(DATA)]


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_each_per_family_stage_lists_exactly_the_code_its_families_import():
    families = dag_families(REPO)
    for stage in PER_FAMILY:
        declared = code_deps(stages()[stage]["do"]["deps"])
        assert declared == expected_deps(stage, families), (
            f"dvc.yaml stages.{stage}.do.deps disagree with the imports; `python tests/stage_imports.py` prints "
            "the lists")
        for family in families:  # the template covers what each family's stage reaches
            assert as_deps(stage_files(stage, family), family) <= set(declared), (stage, family)


@pytest.mark.parametrize("stage", ["params", "report"])
def test_each_stage_outside_the_families_lists_exactly_the_code_it_imports(stage):
    declared = code_deps(stages()[stage]["deps"])
    assert sorted(declared) == sorted(as_deps(stage_files(stage, None), None))


def test_a_family_imports_no_other_family_and_core_imports_no_family():
    for path in (REPO / "src/retrieval_pipeline").rglob("*.py"):
        reached = {file for file in imported(path) if file.is_relative_to(FAMILIES) and file.parent != FAMILIES}
        owners = {file.relative_to(FAMILIES).parts[0] for file in reached}
        if path.is_relative_to(FAMILIES):
            assert owners <= {path.relative_to(FAMILIES).parts[0]}, f"{path} imports {sorted(owners)}"
        else:
            assert not owners, f"{path} imports the family package(s) {sorted(owners)}"


def test_editing_one_family_touches_only_that_familys_stages():
    """What DVC sees: a family's package is a dependency of its own stages and of no other stage."""
    for name, stage in stages().items():
        deps = stage.get("do", stage)["deps"]
        assert not any("families/" in dep and dep != FAMILY_FOLDER for dep in deps), name
