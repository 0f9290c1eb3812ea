"""Entry point shared by the thin scripts in stages/: `python stages/<stage>.py <family>`."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from pathlib import Path

from transformers import set_seed
from transformers.utils import logging as hf_logging

from retrieval_pipeline.core.family import STAGES, Family
from retrieval_pipeline.core.io import atomic_write_text
from retrieval_pipeline.core.models import ModelError
from retrieval_pipeline.core.params import ParamsError, ignored_changes, load_params, read_params_file
from retrieval_pipeline.core.paths import dag_families
from retrieval_pipeline.core.sources import DataError


def load_family(name: str, params_file: Path, root: Path) -> Family:
    try:
        module = importlib.import_module(f"retrieval_pipeline.families.{name}")
    except ModuleNotFoundError as error:
        raise ParamsError(f"unknown family '{name}': no module retrieval_pipeline/families/{name}.py") from error
    family_class: type[Family] = module.FAMILY
    profile, params = load_params(params_file, name, family_class.Params)
    return family_class(params, profile, root)


def run_preflight(argv: list[str] | None = None) -> int:
    """Check that every model and dataset the active profile's DAG loads is available; estimate training memory."""
    from retrieval_pipeline.core.preflight import check_remote, report

    parser = argparse.ArgumentParser(prog="stages/preflight.py", description=run_preflight.__doc__)
    parser.add_argument("families", nargs="*", help="families to check (default: every family in dvc.yaml)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--remote", nargs="?", const="", metavar="NAME",
                        help="also check that the DVC remote (default: the default remote) answers; exit 2 if not")
    arguments = parser.parse_args(argv)
    try:
        families = [load_family(name, arguments.params, Path.cwd())
                    for name in arguments.families or dag_families(Path.cwd())]
    except (ParamsError, DataError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    profile = families[0].profile if families else "embedded"
    lines, failed = report(profile, {family.name: (family.requirements(), family.training_runs())
                                     for family in families})
    remote_failed = False
    if arguments.remote is not None:
        reachable, line = check_remote(Path.cwd(), arguments.remote or None)
        remote_failed = not reachable
        if reachable:
            lines.append(f"preflight: {line}")
    print("\n".join(lines))
    if remote_failed:
        print(f"error: {line}", file=sys.stderr)
    return 2 if failed or remote_failed else 0


def write_resolved_params(family: Family, params_file: Path) -> None:
    """The `resolve` stage: the family's params as its stages see them (the profile's overrides applied, defaults
    filled in). The other stages track this file, not params.yaml, so a change to a recipe value that the
    active profile overrides reruns nothing."""
    import yaml

    resolved = {"profile": family.profile, **family.params.model_dump(mode="json")}
    atomic_write_text(family.paths.resolved_params, yaml.safe_dump(resolved, sort_keys=False))
    print(f"resolve: {family.paths.resolved_params} (profile {family.profile})")
    committed = committed_params(params_file)
    if committed is not None:
        for message in ignored_changes(read_params_file(params_file), committed, family.name):
            print(f"WARNING: {params_file}: {message}", file=sys.stderr)


def committed_params(params_file: Path) -> dict | None:
    """params.yaml as of the last git commit (what `dvc params diff` compares with); None outside git."""
    import subprocess

    import yaml

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


def run_stage(stage: str, argv: list[str] | None = None) -> int:
    if stage not in ("resolve", *STAGES):
        raise ValueError(f"unknown stage {stage!r}")
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=f"Run the {stage} stage of one family.")
    parser.add_argument("family", help="family name, a section of params.yaml (e.g. matryoshka)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("RETRIEVAL_PIPELINE_DEBUG")),
                        help="show the traceback of an expected error too (also: RETRIEVAL_PIPELINE_DEBUG=1)")
    arguments = parser.parse_args(argv)
    # The log keeps a line per stage and epoch: no per-file weight-loading bars, no load reports (warnings)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        family = load_family(arguments.family, arguments.params, Path.cwd())
        if stage == "resolve":
            write_resolved_params(family, arguments.params)
            return 0
        owns_scratch = os.environ.get("RANK", "0") == "0"  # under torchrun, one process clears the scratch
        if owns_scratch:  # what a killed run of this family left
            shutil.rmtree(family.paths.scratch_root, ignore_errors=True)
        set_seed(family.params.seed)
        getattr(family, stage)()
        if owns_scratch:
            shutil.rmtree(family.paths.scratch_root, ignore_errors=True)
    except (ParamsError, DataError, ModelError) as error:
        if arguments.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
