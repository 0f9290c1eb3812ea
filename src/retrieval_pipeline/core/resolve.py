"""The params stage and the resolve stage.

The params stage reads params.yaml as a whole (DVC tracks the whole file for it), so that a key nothing reads, such
as a misspelled family in `dvc exp run -S ++...`, is refused before any other stage runs; it writes
data/sections.yaml, who reads each top-level key, which every resolve stage depends on.

The resolve stage: a family's section of params.yaml validated under the active profile and written to
data/<family>/params.yaml, the file every other stage of the family reads and DVC tracks, with what the family
loads from outside the repository recorded in data/<family>/inputs.yaml. It also checks the family's report
entry, and warns about a changed key the active profile does not read and about each unpinned hub input.

params.yaml's top-level `collection`, a BEIR folder or a BEIR dataset on the hub, is applied here: it replaces each
family's collection source (Family.collection_source) under either profile, so that every family trains and is
tested on the same queries and corpus; unset, it changes nothing."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from retrieval_pipeline.core.comparisons import COMPARISONS, comparison_labels, load_comparisons
from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.errors import ParamsError
from retrieval_pipeline.core.family import Family
from retrieval_pipeline.core.inputs import record, unpinned_warnings
from retrieval_pipeline.core.io import atomic_write_text
from retrieval_pipeline.core.params import ignored_changes, load_params, nearest, read_params_file, validate_section
from retrieval_pipeline.core.sources import BeirHub
from retrieval_pipeline.core.stage import (
    RESOLVED_OVERRIDDEN,
    RESOLVED_PROFILE,
    family_class,
    reported,
    stage_arguments,
)
from retrieval_pipeline.report.params import check_report_entry, load_report_params, report_entries

SECTIONS = Path("data/sections.yaml")
COLLECTION = "collection"


def section_readers(params_file: Path, root: Path) -> dict[str, str]:
    """Who reads each top-level key of params.yaml: the profile every stage, a family's section its stages, the
    report section the report stage. A key none of them reads is an error naming the nearest valid key, and the
    report section is checked now rather than after every family has trained."""
    document = read_params_file(params_file)
    families = dag_families(root)
    readers = {"profile": "every stage", COLLECTION: "every family's resolve stage and the report",
               COMPARISONS: "the retrieval families' evaluate stages",
               **{name: f"the {name} stages" for name in families}, "report": "the report stage"}
    for key in document:
        if key not in readers:
            raise ParamsError(f"{params_file}: {key}: no family, section or the report reads this key; "
                              f"{nearest(str(key), readers)}")
    report_entries(load_report_params(params_file), families, params_file)
    load_comparisons(params_file)
    return {key: readers[key] for key in document}


def write_sections(params_file: Path, root: Path) -> None:
    """The `params` stage."""
    readers = section_readers(params_file, root)
    atomic_write_text(root / SECTIONS, yaml.safe_dump(readers, sort_keys=False))
    print(f"params: {params_file}: {len(readers)} sections, each read by a stage")


def run_params(argv: list[str] | None = None) -> int:
    """`python stages/params.py [--params params.yaml]`."""
    parser = argparse.ArgumentParser(prog="stages/params.py",
                                     description="Check that every key of params.yaml is read by a stage.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    arguments = parser.parse_args(argv)
    try:
        write_sections(arguments.params, Path.cwd())
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def collection_value(document: dict, params_file: Path) -> Path | BeirHub | None:
    """params.yaml's `collection`: the BEIR folder, or the BEIR dataset on the hub, that every family reads instead
    of its own collection source; None when it is unset."""
    value = document.get(COLLECTION)
    if value is None:
        return None
    if isinstance(value, dict):
        return validate_section(value, BeirHub, params_file, COLLECTION)
    if not isinstance(value, str) or not value.strip():
        raise ParamsError(f"{params_file}: {COLLECTION}: expected the path of a BEIR folder, a BEIR dataset on the hub "
                          f"({{corpus, queries, qrels}}) or null (got {value!r})")
    if not Path(value).is_dir():
        raise ParamsError(f"{params_file}: {COLLECTION}: {value!r} is not a folder; expected a BEIR folder "
                          "(corpus.jsonl, queries.jsonl, qrels/<split>.tsv)")
    return Path(value)


def collection_name(collection: Path | BeirHub) -> str:
    """How messages name the collection: a folder by its name (outputs travel, the machine's path does not)."""
    return collection.name if isinstance(collection, Path) else collection.describe()


def applied_collection(cls: type[Family], collection: Path | BeirHub) -> tuple[dict, dict[str, str]]:
    """The collection as the family's collection source, nested at its key of the family's params, and the keys it
    sets (inside the section) -> `collection`, so that messages name the key the user set."""
    if isinstance(collection, Path):
        source, key = {"source": "local", "local": {"path": str(collection)}}, "local.path"
    else:
        key = "hf_beir"
        source = {"source": key, key: collection.model_dump(mode="json")}
    return at_key(cls.collection_source, source), {f"{cls.collection_source}.{key}": COLLECTION}


def at_key(dotted: str, value: dict) -> dict:
    """`value` nested under a dotted key: ("data.factual", v) -> {"data": {"factual": v}}."""
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def load_family(name: str, params_file: Path, root: Path) -> Family:
    """The family with its whole params section from params.yaml, under the file's profile and with the
    `collection` as its collection source where one is set (resolve, preflight)."""
    cls = family_class(name)
    collection = collection_value(read_params_file(params_file), params_file)
    applied, keys = applied_collection(cls, collection) if collection is not None else ({}, {})
    profile, params, overridden = load_params(params_file, name, cls.Params, applied)
    return cls(params, profile, root, overridden, keys)


def write_resolved_params(family: Family, params_file: Path) -> None:
    """The `resolve` stage: the family's params as its stages see them (the profile's overrides applied, defaults
    filled in), after checking that its report entry names only models it produces. The other stages track this
    file, not params.yaml, so a change to a recipe value that the active profile overrides reruns nothing."""
    check_report_entry(read_params_file(params_file), params_file, family.name,
                       (*family.labels, *comparison_labels(family.labels)))
    resolved = {RESOLVED_PROFILE: family.profile, **family.params.model_dump(mode="json"),
                RESOLVED_OVERRIDDEN: list(family.overridden)}
    requirements = family.requirements()
    atomic_write_text(family.paths.resolved_params, yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(family.paths.resolved_inputs, yaml.safe_dump(record(requirements), sort_keys=False))
    print(f"resolve: {family.paths.resolved_params.relative_to(family.paths.root)} (profile {family.profile}), "
          f"inputs in {family.paths.resolved_inputs.relative_to(family.paths.root)}")
    collection = collection_value(read_params_file(params_file), params_file)
    if collection is not None:
        print(f"resolve: {family.collection_source}: the collection {collection_name(collection)} "
              f"(params.yaml {COLLECTION})")
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
