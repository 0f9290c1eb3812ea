"""Every `dvc exp run -S` that the README and docs/ show must work on this params.yaml: DVC applies it (Hydra's
override grammar: a key that the file lacks needs `+` or `++`) and every family still validates."""

from __future__ import annotations

import re
import shlex
import shutil

import pytest
from helpers import REPO

from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.resolve import load_family

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_overrides() -> list[tuple[str, list[str]]]:
    """(where, the -S values of one command) for each `dvc exp run` line with a -S."""
    commands = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for command in re.findall(r"dvc exp run[^`\n]*", line):
                words = shlex.split(command.split("#")[0])
                values = [words[i + 1] for i, word in enumerate(words[:-1]) if word in ("-S", "--set-param")]
                if values:
                    commands.append((f"{doc.name}:{number}", values))
    return commands


def test_the_docs_show_experiments():
    assert len(documented_overrides()) >= 5


@pytest.mark.parametrize(("where", "overrides"), documented_overrides(), ids=lambda value: str(value))
def test_each_documented_override_applies_and_validates(where, overrides, tmp_path):
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    folder = tmp_path / "my-collection"  # the docs' placeholder for the user's BEIR folder, which must exist
    folder.mkdir()
    overrides = [value.replace("/data/my-collection", str(folder)) for value in overrides]
    apply_overrides(params, overrides)  # raises on a key the file lacks without `+`/`++`, as `dvc exp run` does
    assert params.read_text(encoding="utf-8") != (REPO / "params.yaml").read_text(encoding="utf-8"), where
    for family in dag_families(REPO):
        load_family(family, params, tmp_path)  # raises ParamsError naming the key
