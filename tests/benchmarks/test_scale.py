"""How ColBERT's encode, index and search grow with the corpus (`make bench`; an hour and more on a 2-core CPU).

Each size runs tests/benchmarks/scale.py in a fresh process (its peak memory is its own); the timings go into
the benchmark's extra_info and into docs/scale.md, the table the README links. Up to 20,000 documents the index
is also built the way the family built it before (fast-plaid's own centroid count, from the whole collection),
side by side in the same process (`--library-centroids-up-to` moves that limit).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

SIZES = (2_000, 5_000, 20_000, 100_000)
RESULTS: dict[int, dict] = {}
TABLE = Path(__file__).resolve().parents[2] / "docs" / "scale.md"


def run_size(size: int, library_centroids_up_to: int) -> dict:
    script = Path(__file__).with_name("scale.py")
    arguments = [sys.executable, str(script), str(size)]
    if size <= library_centroids_up_to:
        arguments.append("--library-centroids")
    output = subprocess.run(arguments, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def growth(key: str, build: str, smaller: int, larger: int) -> str:
    return f"{RESULTS[larger][build][key] / RESULTS[smaller][build][key]:.1f}x"


def write_table() -> None:
    """Rewritten after every size, so that an interrupted run keeps the rows it finished."""
    rows = ["| documents | vectors per document | encode (s) | exact MaxSim search (s) | index build (s) | centroids | "
            "bits | PLAID search (s) | recall of exact top 10 | recall of exact top 100 | peak memory (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, result in sorted(RESULTS.items()):
        for build, label in (("library", "fast-plaid's count"), ("family", "from the sample")):
            if build in result:
                index = result[build]
                rows.append(f"| {size:,} | {result['vectors_per_document']:.0f} | {result['encode_s']:.1f} | "
                            f"{result['exact_search_s']:.1f} | {index['index_s']:.1f} | {index['centroids']:,} "
                            f"({label}) | {index['nbits']} | {index['search_s']:.2f} | {index['recall@10']:.3f} | "
                            f"{index['recall@100']:.3f} | {result['peak_mib']:.0f} |")
    smallest, summary = min(RESULTS), []
    for larger in sorted(RESULTS)[1:]:
        line = (f"From {smallest:,} to {larger:,} documents ({larger / smallest:g}x): the index build with centroids "
                f"from the sample grew {growth('index_s', 'family', smallest, larger)}")
        if "library" in RESULTS[larger]:
            line += f", with fast-plaid's own count {growth('index_s', 'library', smallest, larger)}"
        summary.append(line + f"; encoding grew {RESULTS[larger]['encode_s'] / RESULTS[smallest]['encode_s']:.1f}x, "
                       f"exact search {RESULTS[larger]['exact_search_s'] / RESULTS[smallest]['exact_search_s']:.1f}x, "
                       f"PLAID search {growth('search_s', 'family', smallest, larger)}.")
    TABLE.write_text("\n".join([
        "# ColBERT at scale", "",
        "Written by `make bench` (tests/benchmarks/test_scale.py): the embedded profile's base ColBERT (MiniLM, "
        "64-dim token vectors) on generated documents of about 100 tokens, 100 queries, top 100. "
        f"Machine: {platform.machine()}, {platform.processor() or 'unknown processor'}, {os.cpu_count()} CPUs. "
        "Times are for this machine only; compare them side by side.", "",
        "The colbert family searches exactly up to `evaluate.index.above_documents` documents and through a PLAID "
        "index (fast-plaid) above. The index compresses every token vector against its centroids; fast-plaid "
        "sizes them from the whole collection (about 16 x sqrt(token vectors)), so that compression grows as "
        "tokens^1.5. The family trains them on the token vectors of `evaluate.index.centroid_sample` documents "
        "and takes their count from that sample, fixed as the collection grows, and stores each residual dimension "
        "in `evaluate.index.nbits` bits (`bits`). Where a size has both builds (the family's and the "
        "one it replaced, fast-plaid's count at 4 bits), they ran in one process, one after the other. "
        "Recall is the share of "
        "the exact MaxSim top 10 (top 100) the index returns in its top 10 (top 100), over the queries; peak "
        "memory is the size's whole process.", "",
        *rows, "", *(f"- {line}" for line in summary), ""]), encoding="utf-8")


@pytest.mark.parametrize("size", SIZES)
def test_colbert_encode_index_and_search_at_scale(benchmark, request, size):
    benchmark.group = "colbert at scale"
    # 20,000, the default: the colbert family's `evaluate.index.above_documents`, where fast-plaid's own count took
    # 750 s on a 2-core machine (37.5x the 2,000-document build); far longer above
    result = benchmark.pedantic(run_size, args=(size, request.config.getoption("library_centroids_up_to")),
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    RESULTS[size] = result
    write_table()
    assert result["encode_s"] > 0 and result["family"]["centroids"] > 0
