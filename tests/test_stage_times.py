"""`make time-repro`'s record of the seconds each stage spent in trainer.train(), read from DVCLive's logs."""

from __future__ import annotations

import os
import time

from benchmarks.stage_times import render, trainer_seconds


def write_log(folder, runtime: float) -> None:
    from dvclive import Live

    with Live(dir=str(folder), dvcyaml=None, save_dvc_exp=False) as live:
        live.log_metric("train/runtime", runtime)  # what transformers' DVCLiveCallback logs from train_runtime


def test_trainer_seconds_sum_each_stage_runs_and_skip_logs_the_run_did_not_write(tmp_path):
    write_log(tmp_path / "dvclive" / "reranker" / "plain_stage1", 300.0)
    write_log(tmp_path / "dvclive" / "reranker" / "plain_stage2", 120.5)
    write_log(tmp_path / "dvclive" / "dpr", 90.0)
    write_log(tmp_path / "data" / "colbert" / "base" / "training", 150.0)
    stale = tmp_path / "dvclive" / "matryoshka"
    write_log(stale, 200.0)
    started = time.time() - 60
    os.utime(stale / "metrics.json", (started - 3600, started - 3600))

    assert trainer_seconds(tmp_path, started) == {"train@reranker": 420.5, "train@dpr": 90.0, "base@colbert": 150.0}


def test_the_table_shows_the_trainer_seconds_and_their_share_of_the_run():
    record = {"command": "dvc repro --force", "commit": "abc1234", "machine": "x86_64, 2 CPUs, 3.11.7",
              "total_s": 1000.0, "stages": {"prepare@dpr": 100.0, "train@dpr": 700.0, "report": 200.0},
              "trainer_s": {"train@dpr": 600.0}}
    table = render({"full repro": record})

    assert "| train@dpr | 700 | 600 |" in table
    assert "| prepare@dpr | 100 |  |" in table
    assert "trainer.train() alone took 600 s, 60% of the run" in table
