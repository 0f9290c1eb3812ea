"""The seed profile's GPU path in minutes: `make gpu-check`.

    python tests/benchmarks/gpu_check.py [--families matryoshka dpr ...]

Builds the hub twins' cache (tests/twins.py: the seed profile's real architectures, tiny and random, served offline,
since the machines this project borrows a GPU on cannot reach the hub), copies the repository with `profile: seed`
at reduced sizes (tests/helpers.SEED_RUN: one epoch, small batches, short sequences; bf16, tf32 and fused AdamW
as the recipes set them, which the trainers use on a GPU that supports them), runs `dvc repro` of the chosen
families there, and prints what ran (each stage and its seconds), each training run's peak GPU memory beside the
preflight's estimate for it, and the report's tolerance table (the seed's numbers beside this run's). Twins are a
test of the code path, never a result: their numbers are not the seeds'. On a machine without a GPU the same runs on
the CPU and the memory column says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "benchmarks")]

def run_seed_profile(work: Path, families: list[str]) -> tuple[Path, dict[str, float], str]:
    """The repository copied under `work` with the seed profile at reduced sizes, the preflight and `dvc repro` of
    `families` (and the report) run there on the twins; returns the copy, each stage's seconds and the preflight's
    output."""
    import yaml
    from helpers import SEED_RUN, copy_repo
    from stage_times import timed_stages
    from twins import build_hub_cache

    from retrieval_pipeline.core.dag import dag_family_modules

    environment = build_hub_cache(work / "hf-home")
    repo = copy_repo((work / "repo"), SEED_RUN)
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    modules = dag_family_modules(repo)
    left_out = set(modules) - set(families)
    dvc_yaml["vars"] = [{"families": {name: modules[name] for name in families}}]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    # only the families that run keep their sections: the params stage refuses a section no stage reads
    document = {key: value for key, value in yaml.safe_load((repo / "params.yaml").read_text()).items()
                if key not in left_out}
    document["report"]["families"] = {name: document["report"]["families"][name] for name in families}
    (repo / "params.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**os.environ, **environment, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # as `make repro` does, the preflight first: its memory lines are the estimates the peaks are set against
    preflight = subprocess.run([sys.executable, "stages/preflight.py", *families], cwd=repo, env=env,
                               capture_output=True, text=True)
    if preflight.returncode:
        sys.exit(f"{preflight.stdout}{preflight.stderr}gpu-check: the preflight stopped the run")
    _, times = timed_stages(["dvc", "repro"], cwd=repo, env=env)
    return repo, times, preflight.stdout


def memory_lines(repo: Path, families: list[str], preflight: str) -> list[str]:
    """Each training run's peak GPU memory (its DVCLive summary) beside the preflight's estimates for its family."""
    import torch

    estimates, family = {}, None
    for line in preflight.splitlines():
        if line.endswith(":") and line[:-1] in families:
            family = line[:-1]
        elif family and line.strip().startswith("memory "):
            estimates.setdefault(family, []).append(line.strip().removeprefix("memory").strip())
    lines = []
    for name in families:
        for summary in sorted((repo / "dvclive" / name).rglob("metrics.json")):
            logged = json.loads(summary.read_text())
            run = summary.parent.relative_to(repo / "dvclive" / name).as_posix()
            run = "train" if run == "." else run
            peak = (f"{logged['peak_gpu_memory_gib']:.2f} GiB" if "peak_gpu_memory_gib" in logged
                    else "n/a (no GPU)" if not torch.cuda.is_available() else "not logged")
            lines.append(f"  {name}/{run}: peak {peak}; preflight estimate {'; '.join(estimates.get(name, ['none']))}")
    return lines


def tolerance_table(repo: Path) -> list[str]:
    """The report's expectation rows: each seed number beside this run's."""
    report = (repo / "metrics" / "report.md").read_text()
    return [line for line in report.splitlines() if line.startswith("| ") and " published" in line
            or line.startswith("| seed: ") or line.startswith("## ")]


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(prog="tests/benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["matryoshka", "dpr", "reranker", "colbert"])
    parser.add_argument("--keep", action="store_true", help="keep the working copy (printed) instead of removing it")
    arguments = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        repo, times, preflight = run_seed_profile(work, arguments.families)
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU: bf16, tf32 off)"
        print(f"gpu-check: seed profile on the hub twins, {device}")
        print("ran:")
        print("\n".join(f"  {stage}: {seconds:.1f} s" for stage, seconds in times.items()))
        print("peak GPU memory against the preflight's estimate:")
        print("\n".join(memory_lines(repo, arguments.families, preflight)))
        print("tolerance table (the twins' numbers are not the seeds': a check of the path, not a result):")
        print("\n".join(tolerance_table(repo)))
        if arguments.keep:
            print(f"gpu-check: working copy kept in {repo}")
    finally:
        if not arguments.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
