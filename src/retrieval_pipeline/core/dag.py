"""What dvc.yaml declares that the code reads: the one list of families, the params sections each stage tracks
(the only sections a stage's code receives), the dependencies of each stage and the outputs each stage writes."""

from __future__ import annotations

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


def dag_families(root: Path) -> list[str]:
    """The families of dvc.yaml's `families` var, the one list that the stages, the report and the tests read."""
    path = root / "dvc.yaml"
    try:
        variables = _dvc_yaml(root)["vars"]
        families = next(entry["families"] for entry in variables if isinstance(entry, dict) and "families" in entry)
    except (KeyError, TypeError, StopIteration) as error:
        raise ParamsError(f"{path}: cannot read the `families` list of its `vars` ({error!r})") from error
    if not isinstance(families, list) or not all(isinstance(name, str) for name in families):
        raise ParamsError(f"{path}: vars.families: expected a list of family names (got {families!r})")
    return families


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
                                  f"from data/${{item}}/params.yaml (got {sections!r})")
            return tuple(sections)
    raise ParamsError(f"{path}: stages.{stage}.do.params: expected an entry for data/${{item}}/params.yaml")


def declared_deps(root: Path, stage: str, family: str) -> list[str]:
    """The dependencies dvc.yaml lists for `stage` of `family`, as written there (paths relative to `root`)."""
    path = root / "dvc.yaml"
    try:
        entries = _dvc_yaml(root)["stages"][stage]["do"]["deps"]
    except (KeyError, TypeError) as error:
        raise ParamsError(f"{path}: stages.{stage}.do.deps: missing ({error!r})") from error
    return [entry.replace("${item}", family) for entry in entries]


def declared_outputs(root: Path, stage: str, family: str) -> list[Path]:
    """The outputs dvc.yaml lists for `stage` of `family`. DVC removes them before it runs the stage, so a stage
    that fails must not leave any of them behind either."""
    path = root / "dvc.yaml"
    try:
        entries = _dvc_yaml(root)["stages"][stage]["do"].get("outs", [])
    except (KeyError, TypeError, AttributeError) as error:
        raise ParamsError(f"{path}: stages.{stage}.do: missing ({error!r})") from error
    names = [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]
    return [root / name.replace("${item}", family) for name in names]
