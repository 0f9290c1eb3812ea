"""`make gpu-check`'s CPU part: the seed profile on the hub twins, its report's tolerance table and the memory
lines, for one family (the GPU part runs where a GPU is lent)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_gpu_check_runs_the_seed_profile_and_prints_memory_and_tolerances(capsys):
    from benchmarks.gpu_check import main

    assert main(["--families", "matryoshka"]) == 0
    out = capsys.readouterr().out
    assert "gpu-check: seed profile on the hub twins" in out
    assert "  train@matryoshka: " in out and "  report: " in out
    assert "  matryoshka/train: peak n/a (no GPU); preflight estimate train: nomic-ai/modernbert-embed-base, " in out
    assert " GiB (weights, gradients, AdamW " in out
    assert "| finetuned ndcg@10, dim 768, corpus rows as published: 0.6639 \u00b1 0.05 (seed 003) |" in out
