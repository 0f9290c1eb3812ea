"""dvc.yaml's code dependencies are what each stage imports, walked from the stage script and the family modules the
stage runner loads (tests/stage_imports.py): nothing a stage imports is missing, so DVC reruns it for every edit
that can change it, and no family module is listed for a stage that does not import it."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from helpers import REPO, copy_repo, run
from stage_imports import (
    FAMILIES,
    PER_FAMILY,
    as_deps,
    expected_deps,
    family_modules,
    imported,
    module_table,
    stage_files,
)

from retrieval_pipeline.core.dag import dag_families, dag_family_modules, declared_deps

DATA = ("data/", "scores/", "models/", "eval", "dvclive")  # stage outputs, not code


def code_deps(entries: list[str]) -> list[str]:
    return [entry for entry in entries if not entry.startswith(DATA)]


def stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_each_per_family_stage_lists_exactly_the_code_its_families_import():
    families = dag_families(REPO)
    assert dag_family_modules(REPO) == module_table(families), (
        "dvc.yaml vars.families disagrees with the imports; `python tests/stage_imports.py` prints it")
    for stage in PER_FAMILY:
        declared = code_deps(stages()[stage]["do"]["deps"])
        assert declared == expected_deps(stage, families), (
            f"dvc.yaml stages.{stage}.do.deps disagree with the imports; `python tests/stage_imports.py` prints "
            "the lists")
        for family in families:  # as DVC resolves the template for the family: exactly its modules
            listed = {dep for dep in declared_deps(REPO, stage, family) if f"/families/{family}/" in dep}
            assert listed == {f"src/retrieval_pipeline/families/{family}/{name}"
                              for name in family_modules(stage, family)}, (stage, family)
            assert as_deps(stage_files(stage, family)) <= set(declared), (stage, family)


@pytest.mark.parametrize("stage", ["params", "report"])
def test_each_stage_outside_the_families_lists_exactly_the_code_it_imports(stage):
    declared = code_deps(stages()[stage]["deps"])
    assert sorted(declared) == sorted(as_deps(stage_files(stage, None)))


def test_a_family_imports_no_other_family_and_core_imports_no_family():
    for path in (REPO / "src/retrieval_pipeline").rglob("*.py"):
        reached = {file for file in imported(path) if file.is_relative_to(FAMILIES) and file.parent != FAMILIES}
        owners = {file.relative_to(FAMILIES).parts[0] for file in reached}
        if path.is_relative_to(FAMILIES):
            assert owners <= {path.relative_to(FAMILIES).parts[0]}, f"{path} imports {sorted(owners)}"
        else:
            assert not owners, f"{path} imports the family package(s) {sorted(owners)}"


def test_editing_a_family_module_changes_only_the_stages_that_import_it(tmp_path):
    """What DVC sees, in a copy of the repository with its lock: an edit to colbert's evaluate.py changes the deps of
    evaluate@colbert and of no other stage (the report follows from evaluate's output), and an edit to colbert's
    model.py those of the stages whose code reaches it."""
    repo = copy_repo(tmp_path, {})
    shutil.copy2(REPO / "dvc.lock", repo / "dvc.lock")
    edited = {name: f"src/retrieval_pipeline/families/colbert/{name}" for name in ("evaluate.py", "model.py")}
    for path in edited.values():
        with (repo / path).open("a", encoding="utf-8") as file:
            file.write("# an edit\n")
    status = json.loads(run(["dvc", "status", "--json"], repo).strip().splitlines()[-1])

    def stages_with_modified(path: str) -> set[str]:
        return {stage for stage, changes in status.items() for change in changes
                if isinstance(change, dict) and change.get("changed deps", {}).get(path) == "modified"}

    assert stages_with_modified(edited["evaluate.py"]) == {"evaluate@colbert"}
    assert stages_with_modified(edited["model.py"]) == {f"{stage}@colbert" for stage in PER_FAMILY
                                                         if "model.py" in family_modules(stage, "colbert")}
