"""Wall time of every DVC stage a command runs, recorded beside the commit and machine that ran it.

    python tests/benchmarks/stage_times.py --label "full repro" -- dvc repro --force

runs the command (its output still reaches the terminal), takes each stage's time from one "Running stage" line
to the next (DVC runs stages one after another, so a stage's time includes DVC hashing and caching its outputs),
and records the run in docs/timings.json under its label; docs/timings.md, the table the README links, is
rewritten from that file. `make time-repro` records the full repro and what each family's one-parameter training
experiment reruns. Beside each stage it records the seconds its trainers spent in trainer.train() (steps, per-epoch
dev evaluations, checkpoint saves), read from the DVCLive logs the run wrote: the part of the run that only fewer or
faster training steps can shorten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD, TABLE = ROOT / "docs" / "timings.json", ROOT / "docs" / "timings.md"
STAGE_LINE = re.compile(r"Running stage '([^']+)'")
# What `dvc exp run -S <family>.embedded.train.<key>=...` reruns: the family's resolved params change, so its
# resolve, train and evaluate stages, then the report.
EXPERIMENT_STAGES = ("resolve@{family}", "train@{family}", "evaluate@{family}", "report")
# Where the stages' trainers keep their DVCLive logs, and the stage each belongs to. The colbert teacher's fine-tuning
# in mine@colbert logs nothing, so it counts as the rest of that stage: the trainer seconds are a lower bound.
TRAINER_LOGS = (("dvclive/*/**/metrics.json", "train@{family}"), ("data/*/base/**/metrics.json", "base@{family}"))


def timed_stages(command: list[str], cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> tuple[float, dict[str, float]]:
    """Run `command` (its output passed through) and return its wall time and each DVC stage's seconds."""
    started = time.perf_counter()
    stages: dict[str, float] = {}
    current, current_start = None, started
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               cwd=cwd, env=env)
    for line in process.stdout:
        sys.stdout.write(line)
        match = STAGE_LINE.search(line)
        if match:
            now = time.perf_counter()
            if current:
                stages[current] = now - current_start
            current, current_start = match.group(1), now
    if process.wait():
        raise SystemExit(f"{' '.join(command)} exited with {process.returncode}; nothing recorded")
    finished = time.perf_counter()
    if current:
        stages[current] = finished - current_start
    return finished - started, stages


def trainer_seconds(root: Path, since: float) -> dict[str, float]:
    """Each stage's seconds in trainer.train(): DVCLive's `train.runtime` of every log written since `since` (a
    time.time()), summed over the stage's runs (a family's variants, the reranker's curriculum stages)."""
    seconds: dict[str, float] = {}
    for pattern, stage in TRAINER_LOGS:
        for path in root.glob(pattern):
            if path.stat().st_mtime < since:
                continue  # a log this run did not write (its stage was not rerun)
            runtime = json.loads(path.read_text(encoding="utf-8")).get("train", {}).get("runtime")
            if runtime is not None:
                name = stage.format(family=path.relative_to(root).parts[1])
                seconds[name] = seconds.get(name, 0.0) + runtime
    return seconds


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)  # where it ran
    return head.stdout.strip() or "unknown"


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def family_of(stage: str) -> str | None:
    return stage.split("@", 1)[1] if "@" in stage else None


def render(records: dict[str, dict]) -> str:
    lines = ["# Pipeline wall times", "",
             "Written by `tests/benchmarks/stage_times.py` (`make time-repro`) from docs/timings.json. Each run is "
             "recorded with its commit and machine; compare runs only on the same machine. A family's one-parameter "
             "training experiment reruns " + ", ".join(f"`{s.format(family='<family>')}`" for s in EXPERIMENT_STAGES)
             + "; its time below is "
             "the sum of those stages in the same run, and its share is of the family's whole run (its stages plus "
             "the report).", ""]
    for label, record in records.items():
        stages = record["stages"]
        lines += [f"## {label}", "",
                  f"`{record['command']}` at commit `{record['commit']}` on {record['machine']}: "
                  f"**{duration(record['total_s'])}** in all.", "",
                  *stage_table(stages, record.get("trainer_s"))]
        families = sorted({family_of(stage) for stage in stages} - {None})
        full_run = all(f"prepare@{family}" in stages for family in families)  # an experiment is not a whole run
        if "report" in stages and families and full_run:
            lines += ["", "| family | whole run (s) | one-parameter training experiment (s) | share |",
                      "|---|---|---|---|"]
            for family in families:
                whole = sum(s for stage, s in stages.items() if family_of(stage) == family) + stages["report"]
                experiment = sum(stages.get(stage.format(family=family), 0.0) for stage in EXPERIMENT_STAGES)
                lines.append(f"| {family} | {whole:.0f} | {experiment:.0f} | {experiment / whole:.0%} |")
        if record.get("trainer_s"):
            training = sum(record["trainer_s"].values())
            lines += ["", f"trainer.train() alone took {training:.0f} s, {training / record['total_s']:.0%} of the "
                          f"run: with every other part of it taking no time, the run would still take "
                          f"{training / record['total_s']:.0%} of this one."]
        lines.append("")
    return "\n".join(lines)


def stage_table(stages: dict[str, float], trainer: dict[str, float] | None) -> list[str]:
    if not trainer:
        return ["| stage | seconds |", "|---|---|",
                *(f"| {stage} | {seconds:.0f} |" for stage, seconds in stages.items())]
    return ["| stage | seconds | of which trainer.train() |", "|---|---|---|",
            *(f"| {stage} | {seconds:.0f} | {f'{trainer[stage]:.0f}' if stage in trainer else ''} |"
              for stage, seconds in stages.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", required=True, help="the run's heading in docs/timings.md")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    arguments = parser.parse_args(argv)
    command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
    if not command:
        parser.error("give the command to time after --")
    started = time.time()
    total, stages = timed_stages(command)
    records = json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.is_file() else {}
    records[arguments.label] = {"command": " ".join(command), "commit": commit(), "machine": machine(),
                                "total_s": round(total, 1), "stages": {k: round(v, 1) for k, v in stages.items()},
                                "trainer_s": {k: round(v, 1) for k, v in trainer_seconds(ROOT, started).items()
                                              if k in stages}}  # a stage restored from the run-cache trained nothing
    RECORD.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    TABLE.write_text(render(records), encoding="utf-8")
    print(f"stage_times: {duration(total)}; {TABLE.relative_to(ROOT)} updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
