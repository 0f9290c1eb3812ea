"""What dvc.yaml declares that the code reads: the one list of families, the params sections each stage tracks
(the only sections a stage's code receives), the dependencies of each stage and the outputs each stage writes.

A per-family stage is a `foreach` template over the `families` var: `${key}` is the family, and
`${item.<stage>[<k>]}` the k-th module of its package that the stage imports (dvc.yaml says why it is so).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from retrieval_pipeline.core.errors import ParamsError


def _dvc_yaml(root: Path) -> dict:
    path = root / "dvc.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ParamsError(f"{path}: cannot read the pipeline ({error})") from error
    if not isinstance(document, dict):
        raise ParamsError(f"{path}: expected a mapping with vars and stages")
    return document


def dag_family_modules(root: Path) -> dict[str, dict[str, list[str]]]:
    """dvc.yaml's `families` var: family -> stage -> the modules of its package that the stage imports."""
    path = root / "dvc.yaml"
    try:
        variables = _dvc_yaml(root)["vars"]
        families = next(entry["families"] for entry in variables if isinstance(entry, dict) and "families" in entry)
    except (KeyError, TypeError, StopIteration) as error:
        raise ParamsError(f"{path}: cannot read the `families` var of its `vars` ({error!r})") from error
    if not isinstance(families, dict) or not all(
            isinstance(name, str) and isinstance(stages, dict) and all(
                isinstance(modules, list) and all(isinstance(module, str) for module in modules)
                for modules in stages.values())
            for name, stages in families.items()):
        raise ParamsError(f"{path}: vars.families: expected each family name with, per stage, the list of its "
                          f"modules that the stage imports (`python tests/stage_imports.py` prints it)")
    return families


def dag_families(root: Path) -> list[str]:
    """The families of dvc.yaml's `families` var, the one list that the stages, the report and the tests read."""
    return list(dag_family_modules(root))


MODULE_SLOT = re.compile(r"\$\{item\.(\w+)\[(\d+)\]\}")


def _for_family(entry: str, family: str, modules: dict[str, list[str]]) -> str:
    """A template entry as DVC resolves it for `family`."""
    return MODULE_SLOT.sub(lambda slot: modules[slot[1]][int(slot[2])], entry.replace("${key}", family))


def declared_sections(root: Path, stage: str) -> tuple[str, ...]:
    """The sections of the resolved params file (data/<family>/params.yaml) that `stage` lists under `params` in
    dvc.yaml: what DVC reruns the stage for, and so all the stage's code may read."""
    path = root / "dvc.yaml"
    try:
        entries = _dvc_yaml(root)["stages"][stage]["do"]["params"]
    except (KeyError, TypeError) as error:
        raise ParamsError(f"{path}: stages.{stage}.do.params: missing ({error!r})") from error
    for entry in entries:
        if isinstance(entry, dict) and any(name.endswith("/params.yaml") and name.startswith("data/")
                                           for name in entry):
            sections = next(iter(entry.values()))
            if not isinstance(sections, list):
                raise ParamsError(f"{path}: stages.{stage}.do.params: expected the list of sections the stage reads "
                                  f"from data/${{key}}/params.yaml (got {sections!r})")
            return tuple(sections)
    raise ParamsError(f"{path}: stages.{stage}.do.params: expected an entry for data/${{key}}/params.yaml")


def declared_deps(root: Path, stage: str, family: str) -> list[str]:
    """The dependencies dvc.yaml lists for `stage` of `family`, as written there (paths relative to `root`)."""
    path = root / "dvc.yaml"
    try:
        entries = _dvc_yaml(root)["stages"][stage]["do"]["deps"]
    except (KeyError, TypeError) as error:
        raise ParamsError(f"{path}: stages.{stage}.do.deps: missing ({error!r})") from error
    modules = dag_family_modules(root)[family]
    return [_for_family(entry, family, modules) for entry in entries]


def declared_outputs(root: Path, stage: str, family: str) -> list[Path]:
    """The outputs dvc.yaml lists for `stage` of `family`. DVC removes them before it runs the stage, so a stage
    that fails must not leave any of them behind either."""
    path = root / "dvc.yaml"
    try:
        entries = _dvc_yaml(root)["stages"][stage]["do"].get("outs", [])
    except (KeyError, TypeError, AttributeError) as error:
        raise ParamsError(f"{path}: stages.{stage}.do: missing ({error!r})") from error
    names = [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]
    return [root / name.replace("${key}", family) for name in names]
