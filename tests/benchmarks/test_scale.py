"""How ColBERT's encode, index and search grow with the corpus (`make bench`; minutes on a 2-core CPU).

Each size runs tests/benchmarks/scale.py in a fresh process (its peak memory is its own); the timings go into
the benchmark's extra_info and into docs/scale.md, the table the README links.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

# The largest size is the colbert family's default `evaluate.index.above_documents`, where it switches from exact
# MaxSim to the index; at 40k documents fast-plaid's k-means (32k centroids over ~5M token vectors) alone ran past
# 20 minutes on 2 cores.
SIZES = (2_000, 5_000, 20_000)
RESULTS: dict[int, dict] = {}
TABLE = Path(__file__).resolve().parents[2] / "docs" / "scale.md"


def run_size(size: int) -> dict:
    script = Path(__file__).with_name("scale.py")
    output = subprocess.run([sys.executable, str(script), str(size)], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def write_table() -> None:
    """Rewritten after every size, so that an interrupted run keeps the rows it finished."""
    if len(RESULTS) < 2:
        return
    rows = ["| documents | vectors per document | encode (s) | exact MaxSim search (s) | PLAID index build (s) | "
            "PLAID search (s) | peak memory (MiB) |", "|---|---|---|---|---|---|---|"]
    for size, result in sorted(RESULTS.items()):
        rows.append(f"| {size:,} | {result['vectors_per_document']:.0f} | {result['encode_s']:.1f} | "
                    f"{result['exact_search_s']:.1f} | {result['index_s']:.1f} | {result['plaid_search_s']:.2f} | "
                    f"{result['peak_mib']:.0f} |")
    smallest, largest = min(RESULTS), max(RESULTS)
    growth = {key: RESULTS[largest][key] / RESULTS[smallest][key]
              for key in ("encode_s", "exact_search_s", "index_s", "plaid_search_s", "peak_mib")}
    TABLE.write_text("\n".join([
        "# ColBERT at scale", "",
        "Written by `make bench` (tests/benchmarks/test_scale.py): the embedded profile's base ColBERT (MiniLM, "
        "64-dim token vectors) on generated documents of about 100 tokens, 100 queries, top 100. "
        f"Machine: {platform.machine()}, {platform.processor() or 'unknown processor'}, "
        f"{__import__('os').cpu_count()} CPUs. Times are for this machine only; compare them side by side.", "",
        *rows, "",
        f"From {smallest:,} to {largest:,} documents ({largest / smallest:g}x): encoding grew "
        f"{growth['encode_s']:.1f}x, exact search {growth['exact_search_s']:.1f}x, index build "
        f"{growth['index_s']:.1f}x, PLAID search {growth['plaid_search_s']:.1f}x, peak memory "
        f"{growth['peak_mib']:.1f}x. The colbert family searches exactly up to `evaluate.index.above_documents` "
        "documents and through the index above.", ""]), encoding="utf-8")


@pytest.mark.parametrize("size", SIZES)
def test_colbert_encode_index_and_search_at_scale(benchmark, size):
    benchmark.group = "colbert at scale"
    result = benchmark.pedantic(run_size, args=(size,), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    RESULTS[size] = result
    write_table()
    assert result["encode_s"] > 0 and result["peak_mib"] > 0
