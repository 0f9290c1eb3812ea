"""Entry point shared by the thin scripts in stages/: `python stages/<stage>.py <family>`."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from transformers import set_seed

from retrieval_pipeline.core.family import STAGES, Family
from retrieval_pipeline.core.params import ParamsError, load_params
from retrieval_pipeline.core.sources import DataError


def load_family(name: str, params_file: Path, root: Path) -> Family:
    try:
        module = importlib.import_module(f"retrieval_pipeline.families.{name}")
    except ModuleNotFoundError as error:
        raise ParamsError(f"unknown family '{name}': no module retrieval_pipeline/families/{name}.py") from error
    family_class: type[Family] = module.FAMILY
    profile, params = load_params(params_file, name, family_class.Params)
    return family_class(params, profile, root)


def run_stage(stage: str, argv: list[str] | None = None) -> int:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=f"Run the {stage} stage of one family.")
    parser.add_argument("family", help="family name, a section of params.yaml (e.g. matryoshka)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    arguments = parser.parse_args(argv)
    try:
        family = load_family(arguments.family, arguments.params, Path.cwd())
        set_seed(family.params.seed)
        getattr(family, stage)()
    except (ParamsError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
