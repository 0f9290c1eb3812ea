"""The resolve stage: a family's section of params.yaml validated under the active profile and written to
data/<family>/params.yaml, the file every other stage of the family reads and DVC tracks, with what the family
loads from outside the repository recorded in data/<family>/inputs.yaml. It also checks the family's report
entry, and warns about a changed key the active profile does not read and about each unpinned hub input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from retrieval_pipeline.core.family import Family
from retrieval_pipeline.core.inputs import record, unpinned_warnings
from retrieval_pipeline.core.io import atomic_write_text
from retrieval_pipeline.core.params import ignored_changes, load_params, read_params_file
from retrieval_pipeline.core.report_params import check_report_entry
from retrieval_pipeline.core.stage import (
    RESOLVED_OVERRIDDEN,
    RESOLVED_PROFILE,
    family_class,
    reported,
    stage_arguments,
)


def load_family(name: str, params_file: Path, root: Path) -> Family:
    """The family with its whole params section from params.yaml, under the file's profile (resolve, preflight)."""
    cls = family_class(name)
    profile, params, overridden = load_params(params_file, name, cls.Params)
    return cls(params, profile, root, overridden)


def write_resolved_params(family: Family, params_file: Path) -> None:
    """The `resolve` stage: the family's params as its stages see them (the profile's overrides applied, defaults
    filled in), after checking that its report entry names only models it produces. The other stages track this
    file, not params.yaml, so a change to a recipe value that the active profile overrides reruns nothing."""
    check_report_entry(read_params_file(params_file), params_file, family.name, family.labels)
    resolved = {RESOLVED_PROFILE: family.profile, **family.params.model_dump(mode="json"),
                RESOLVED_OVERRIDDEN: list(family.overridden)}
    requirements = family.requirements()
    atomic_write_text(family.paths.resolved_params, yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(family.paths.resolved_inputs, yaml.safe_dump(record(requirements), sort_keys=False))
    print(f"resolve: {family.paths.resolved_params.relative_to(family.paths.root)} (profile {family.profile}), "
          f"inputs in {family.paths.resolved_inputs.relative_to(family.paths.root)}")
    for line in unpinned_warnings(requirements):
        print(f"WARNING: {params_file}: {line}", file=sys.stderr)
    committed = committed_params(params_file)
    if committed is not None:
        for message in ignored_changes(read_params_file(params_file), committed, family.name):
            print(f"WARNING: {params_file}: {message}", file=sys.stderr)


def committed_params(params_file: Path) -> dict | None:
    """params.yaml as of the last git commit (what `dvc params diff` compares with); None outside git."""
    try:
        shown = subprocess.run(["git", "show", f"HEAD:./{params_file.name}"], cwd=params_file.parent or ".",
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if shown.returncode:
        return None
    try:
        document = yaml.safe_load(shown.stdout)
    except yaml.YAMLError:
        return None
    return document if isinstance(document, dict) else None


def run_resolve(argv: list[str] | None = None) -> int:
    """`python stages/resolve.py <family> [--params params.yaml]`."""
    arguments = stage_arguments("resolve", argv, ("--params", {"type": Path, "default": Path("params.yaml")}))
    return reported(arguments, lambda: write_resolved_params(load_family(arguments.family, arguments.params,
                                                                         Path.cwd()), arguments.params))
