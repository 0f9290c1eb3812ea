"""The stage runner behind the thin scripts in stages/: `python stages/<stage>.py <family>`.

A stage reads the family's resolved params (data/<family>/params.yaml, written by the resolve stage in
core/resolve.py), the file DVC tracks, and receives only the sections dvc.yaml lists as the stage's params:
reading another would let it depend on a value DVC does not rerun it for. It then imports the family's module for
the stage and runs its function.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from transformers import set_seed
from transformers.utils import logging as hf_logging

from retrieval_pipeline.core.dag import dag_families, declared_outputs, declared_sections
from retrieval_pipeline.core.errors import DataError, ModelError, OutputError, ParamsError
from retrieval_pipeline.core.family import (
    OPTIONAL_STAGES,
    STAGE_INTERFACES,
    STAGES,
    BaselineStage,
    BaseStage,
    EvaluateStage,
    Family,
    MineStage,
    PrepareStage,
    TrainStage,
    read_scores,
    write_scores,
)
from retrieval_pipeline.core.io import (
    atomic_directory,
    atomic_write_json,
    cannot_write,
    remove,
    write_failure,
    written,
)
from retrieval_pipeline.core.params import (
    FamilyParams,
    read_params_file,
    validate_section,
)
from retrieval_pipeline.core.paths import BASE_RECORD, FamilyPaths

# What the resolved params file holds besides the family's sections.
RESOLVED_PROFILE, RESOLVED_OVERRIDDEN = "profile", "overridden"


def family_names() -> list[str]:
    """The families: the packages in retrieval_pipeline/families/."""
    import pkgutil

    from retrieval_pipeline import families

    return sorted(module.name for module in pkgutil.iter_modules(families.__path__) if module.ispkg)


def family_class(name: str) -> type[Family]:
    known = family_names()
    if name not in known:  # not a package there: a typo, or a module such as `__init__`
        raise ParamsError(f"unknown family '{name}': expected one of {', '.join(known)} (the packages in "
                          "retrieval_pipeline/families/)")
    return importlib.import_module(f"retrieval_pipeline.families.{name}").FAMILY


class UndeclaredSection(ParamsError):
    """A stage read a params section that dvc.yaml does not list for it: a change there would not rerun it."""


class DeclaredParams:
    """A family's params as one stage sees them: the sections dvc.yaml lists as the stage's params, and no other."""

    def __init__(self, params: FamilyParams, sections: tuple[str, ...], stage: str, family: str) -> None:
        self.__dict__.update(_params=params, _sections=sections, _stage=stage, _family=family)

    def __getattr__(self, name: str) -> Any:
        params, sections = self.__dict__["_params"], self.__dict__["_sections"]
        reads_all = name in ("model_dump", "model_dump_json") and not set(type(params).model_fields) <= set(sections)
        if reads_all or (name in type(params).model_fields and name not in sections):
            stage, family = self.__dict__["_stage"], self.__dict__["_family"]
            what = "every section" if reads_all else f"{family}.{name}"
            raise UndeclaredSection(
                f"dvc.yaml: {stage}@{family} reads {what}, but the stage's params list only "
                f"{', '.join(self.__dict__['_sections'])}; list it under stages.{stage}.do.params (so that DVC "
                "reruns the stage when it changes) or stop reading it")
        return getattr(params, name)


def load_stage_family(name: str, stage: str, root: Path) -> Family:
    """The family as `stage` sees it: the resolved params file that DVC tracks, restricted to the stage's
    declared sections."""
    cls = family_class(name)
    path = FamilyPaths(root, name).resolved_params
    if not path.is_file():
        raise ParamsError(f"{path}: missing; expected the resolve stage's output (`dvc repro resolve@{name}`)")
    document = read_params_file(path)
    profile = document.pop(RESOLVED_PROFILE, "embedded")
    overridden = document.pop(RESOLVED_OVERRIDDEN, [])
    params = validate_section(document, cls.Params, path, name)
    family = cls(DeclaredParams(params, declared_sections(root, stage), stage, name), profile, root, overridden)
    family.paths = replace(family.paths, stage_output=declared_outputs(root, stage, name)[0])
    return family


def stage_module(family: Family, stage: str) -> ModuleType:
    """The family's module for `stage`, checked against the stage's Protocol (core/family.py)."""
    name = f"retrieval_pipeline.families.{family.name}.{family.stages[stage]}"
    module = importlib.import_module(name)
    if not isinstance(module, STAGE_INTERFACES[stage]):
        raise TypeError(f"{name} implements no {STAGE_INTERFACES[stage].__name__}: it has no function {stage}(family)")
    return module


def record_model_base_as_is(family: Family) -> None:
    """The base stage's output where the family makes no model of its own: a record saying so."""
    with atomic_directory(family.paths.base) as out:
        atomic_write_json(out / BASE_RECORD, {"made_here": False})
    print(f"base: {family.name} fine-tunes model.base as it is")


def run_family_stage(family: Family, stage: str) -> None:
    """Run one of the family's stages: its module's function, with the baseline's scores written and the
    evaluation's scores read here, the same for every family."""
    if stage in OPTIONAL_STAGES and stage not in family.stages:  # the base stage: the family makes none
        record_model_base_as_is(family)
        return
    module = stage_module(family, stage)
    if stage == "prepare":
        cast(PrepareStage, module).prepare(family)
    elif stage == "base":
        cast(BaseStage, module).base(family)
    elif stage == "mine":
        cast(MineStage, module).mine(family)
    elif stage == "baseline":
        write_scores(family.paths.baseline_scores, cast(BaselineStage, module).baseline(family))
    elif stage == "train":
        cast(TrainStage, module).train(family)
    else:
        cast(EvaluateStage, module).evaluate(family, {**read_scores(family.paths.baseline_scores),
                                                      **read_scores(family.paths.trained_scores)})


def stage_arguments(stage: str, argv: list[str] | None, *extra: tuple[str, dict]) -> argparse.Namespace:
    """`<family> [--debug]` (and `extra` options) of a stage script."""
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=f"Run the {stage} stage of one family.")
    parser.add_argument("family", help="family name, a section of params.yaml (e.g. matryoshka)")
    for flag, options in extra:
        parser.add_argument(flag, **options)
    parser.add_argument("--debug", action="store_true", default=bool(os.environ.get("RETRIEVAL_PIPELINE_DEBUG")),
                        help="show the traceback of an expected error too (also: RETRIEVAL_PIPELINE_DEBUG=1)")
    return parser.parse_args(argv)


def reported(arguments: argparse.Namespace, work: Callable[[], None]) -> int:
    """Run `work`; an expected error (bad params, data or model) becomes one line on stderr and exit code 2, with
    its traceback only under --debug."""
    try:
        work()
    except (ParamsError, DataError, ModelError, OutputError) as error:
        if arguments.debug:
            raise
        close_progress_bars()
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def close_progress_bars() -> None:
    """Close the progress bars a failed run left open, so that its error line starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def run_stage(stage: str, argv: list[str] | None = None) -> int:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    arguments = stage_arguments(stage, argv)
    # The log keeps a line per stage and epoch: no per-file weight-loading bars, no load reports (warnings)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return reported(arguments, lambda: run_in_place(arguments.family, stage))


def remove_restored_resume_states(root: Path, running: str) -> None:
    """Delete the resume states (core/resume.py) of stages whose outputs are all in place: DVC restored those from
    its run-cache without running the stage, which would have removed its state, and it reruns that stage only
    once they change, when the state no longer fits. A killed stage's state stays, as DVC removed its outputs
    before it ran."""
    families = dag_families(root)
    for state in sorted((root / ".resume").glob("*@*")):
        stage, _, family = state.name.partition("@")
        if state.name == running or stage not in STAGES or family not in families:
            continue
        outputs = declared_outputs(root, stage, family)
        if outputs and all(written(output) for output in outputs):
            remove(state)
            print(f"{running.split('@')[0]}: removed {state.relative_to(root)}, the resume state of {state.name}: "
                  "its outputs are in place (restored from DVC's run-cache)")


def run_in_place(name: str, stage: str) -> None:
    """One stage of family `name` in the working directory, its scratch cleared before and after, and no output
    left when it fails."""
    family = load_stage_family(name, stage, Path.cwd())
    owns_scratch = os.environ.get("RANK", "0") == "0"  # under torchrun, one process clears the scratch
    if owns_scratch:  # what a killed run of this stage left, where nothing removed its outputs since
        shutil.rmtree(family.paths.scratch_root, ignore_errors=True)
        remove_restored_resume_states(Path.cwd(), f"{stage}@{name}")
    set_seed(family.params.seed)
    try:
        run_family_stage(family, stage)
    except BaseException as error:  # a failed stage has no outputs, as under DVC (which removes them first)
        if owns_scratch:
            for output in declared_outputs(Path.cwd(), stage, name):
                remove(output)
        failure = write_failure(error) if isinstance(error, Exception) else None
        if failure is not None and not isinstance(error, OutputError):  # e.g. a trainer's checkpoint in the scratch
            where = Path(failure.filename).absolute() if failure.filename else family.paths.stage_output
            raise cannot_write(where, failure.strerror) from error
        raise
    finally:  # failed or not, the scratch does not outlive the run
        if owns_scratch:
            shutil.rmtree(family.paths.scratch_root, ignore_errors=True)
