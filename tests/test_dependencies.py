"""Every package the code imports is declared in pyproject.toml (and so pinned in requirements.lock)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from helpers import REPO

LOCAL = {"retrieval_pipeline", "helpers", "twins", "sshd", "conftest", "stage_imports", "benchmarks",
         "stage_times"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {normalise(re.split(r"[\s\[<>=!;]", requirement, maxsplit=1)[0]) for requirement in requirements}


def imported_modules() -> dict[str, str]:
    """Top-level module -> a file that imports it, over src/, stages/ and tests/."""
    found = {}
    for path in sorted([*REPO.glob("src/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("tests/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared():
    distributions = packages_distributions()
    wanted = declared()
    missing = []
    for module, where in imported_modules().items():
        if module in sys.stdlib_module_names or module in LOCAL or module == "__future__":
            continue
        provided_by = {normalise(name) for name in distributions.get(module, [])}
        if not provided_by & wanted:
            missing.append(f"{module} (imported in {where}; installed by {sorted(provided_by) or 'nothing'})")
    assert not missing, "imports not declared in pyproject.toml: " + "; ".join(missing)


def test_the_lock_pins_every_declared_package():
    pinned = {normalise(line.split("==")[0]) for line in (REPO / "requirements.lock").read_text().splitlines()
              if "==" in line}
    assert declared() <= pinned, f"declared but not pinned: {sorted(declared() - pinned)}"
