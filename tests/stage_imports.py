"""The project files each DVC stage imports, found by walking the code's import statements from the stage script
and the family modules the stage runner loads (core/stage.py: the family's package and its stage module).

`python tests/stage_imports.py` prints what dvc.yaml should say: its `families` var (per family and stage, the
modules of the family's package that the stage imports) and, per stage, the deps its template lists: the stage
script, the core modules any family's stage reaches, and a slot per family module, filled from that var.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src"
PACKAGE = "retrieval_pipeline"
FAMILIES = SOURCE / PACKAGE / "families"
PER_FAMILY = ("resolve", "prepare", "base", "mine", "baseline", "train", "evaluate")
# Every stage imports its family's package, which names the family's params model.
PACKAGE_MODULES = ("__init__.py", "params.py")
PACKAGE_DEPS = [f"src/retrieval_pipeline/families/${{key}}/{name}" for name in PACKAGE_MODULES]
# A slot of a stage's template for a module of the family beyond its package: the stage's k-th module in the
# family's entry of the `families` var. DVC cannot interpolate a list into deps (iterative/dvc#7151, #8171), so a
# stage has as many slots as its largest family needs, and a family with fewer fills the rest with its __init__.py.
FAMILY_SLOT = "src/retrieval_pipeline/families/${{key}}/${{item.{stage}[{index}]}}"
FILLER = "__init__.py"


def module_file(name: str) -> Path | None:
    """The file of a project module (a package's __init__.py), or None outside the project."""
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return None
    path = SOURCE.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py") if path.with_suffix(".py").is_file() \
        else None


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[Path]:
    """The project files `path` imports anywhere in it (top level or inside a function), with the packages that
    hold them."""
    found: set[Path] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0] \
        if path.is_relative_to(SOURCE) else ""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # a module imports the packages that hold it
                file = module_file(".".join(parts[:end]))
                if file is not None:
                    found.add(file)
    return found


def closure(roots: list[Path]) -> set[Path]:
    seen: set[Path] = set()
    pending = list(roots)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        pending += imported(path) - seen
    return seen


def is_marker(path: Path) -> bool:
    """A package __init__.py with nothing but a docstring: importing it runs no code a stage depends on."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return path.name == "__init__.py" and all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                                              for node in body)


def family_stage_modules(family: str, stage: str) -> list[Path]:
    """What the stage runner imports for `family` besides its own imports: the package, and its stage module."""
    sys.path.insert(0, str(SOURCE))
    family_class = importlib.import_module(f"{PACKAGE}.families.{family}").FAMILY
    package = FAMILIES / family / "__init__.py"
    if stage not in family_class.stages:  # resolve, or an optional stage the family does not have
        return [package]
    return [package, FAMILIES / family / f"{family_class.stages[stage]}.py"]


def stage_files(stage: str, family: str | None) -> set[Path]:
    """Every project file `stage` imports when it runs for `family` (None: the params or the report stage)."""
    roots = [REPO / "stages" / f"{stage}.py"]
    if family is not None:
        roots += family_stage_modules(family, stage)
    return {path for path in closure(roots) if not is_marker(path)}


def as_deps(files: set[Path]) -> set[str]:
    """Files outside the families as dvc.yaml names them (a family's own files fill its slots instead)."""
    return {path.relative_to(REPO).as_posix() for path in files if not path.is_relative_to(FAMILIES)}


def family_modules(stage: str, family: str) -> list[str]:
    """The modules of the family that `stage` imports for it, its package included."""
    return sorted(path.relative_to(FAMILIES / family).as_posix() for path in stage_files(stage, family)
                  if path.is_relative_to(FAMILIES / family))


def module_table(families: list[str]) -> dict[str, dict[str, list[str]]]:
    """dvc.yaml's `families` var: per family and stage the modules beyond the package, each stage's lists padded
    to one length (a stage without any has none)."""
    table = {family: {stage: [name for name in family_modules(stage, family) if name not in PACKAGE_MODULES]
                      for stage in PER_FAMILY} for family in families}
    for stage in PER_FAMILY:
        slots = max(len(table[family][stage]) for family in families)
        for family in families:
            table[family][stage] += [FILLER] * (slots - len(table[family][stage]))
    return {family: {stage: modules for stage, modules in stages.items() if modules}
            for family, stages in table.items()}


def expected_deps(stage: str, families: list[str]) -> list[str]:
    """A per-family stage's code deps: the stage script, the core modules it imports for any family of the DAG (one
    template serves them all), the family's package, then the stage's slots for the family's other modules."""
    deps = set().union(*(as_deps(stage_files(stage, family)) for family in families))
    script = f"stages/{stage}.py"
    slots = len(module_table(families)[families[0]].get(stage, []))
    return [script, *sorted(deps - {script}), *PACKAGE_DEPS,
            *(FAMILY_SLOT.format(stage=stage, index=index) for index in range(slots))]


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(SOURCE))
    from retrieval_pipeline.core.dag import dag_families

    families = dag_families(REPO)
    print("vars:\n  - families:")
    for family, stages in module_table(families).items():
        print(f"      {family}:")
        for stage, modules in stages.items():
            print(f"        {stage}: [{', '.join(modules)}]")
    for stage in PER_FAMILY:
        print(f"{stage}:")
        for dep in expected_deps(stage, families):
            print(f"  - {dep}")
    for stage in ("params", "report"):
        print(f"{stage}:")
        for dep in sorted(as_deps(stage_files(stage, None))):
            print(f"  - {dep}")
