"""How ColBERT's encode, index and search grow with the corpus (`make bench`; an hour and more on a 2-core CPU).

Each size runs tests/benchmarks/scale.py in a fresh process (its peak memory is its own); the timings go into
the benchmark's extra_info, into docs/scale.json (each size's latest result, with the run that measured it) and into
docs/scale.md, the table the README links. A run of some sizes (`-k 100000`) replaces their rows and keeps the
others, each labelled with its run. Up to 20,000 documents the index is also built the way the family built it
before (fast-plaid's own centroid count, from the whole collection), side by side in the same process
(`--library-centroids-up-to` moves that limit).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from stage_times import commit, machine

SIZES = (2_000, 5_000, 20_000, 100_000)
ROOT = Path(__file__).resolve().parents[2]
TABLE, RECORD = ROOT / "docs" / "scale.md", ROOT / "docs" / "scale.json"
RESULTS: dict[int, dict] = {int(size): result for size, result in
                            (json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.exists() else {}).items()}


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
    runs = list(dict.fromkeys(result["run"] for _, result in sorted(RESULTS.items())))
    number = {run: index for index, run in enumerate(runs, 1)}
    rows = ["| run | documents | vectors per document | encode (s) | exact MaxSim search (s) | index build (s) | "
            "centroids | bits | PLAID search (s) | recall of exact top 10 | recall of exact top 100 | "
            "peak memory (MiB) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, result in sorted(RESULTS.items()):
        for build, label in (("library", "fast-plaid's count"), ("family", "from the sample")):
            if build in result:
                index = result[build]
                rows.append(f"| {number[result['run']]} | {size:,} | {result['vectors_per_document']:.0f} | "
                            f"{result['encode_s']:.1f} | {result['exact_search_s']:.1f} | {index['index_s']:.1f} | "
                            f"{index['centroids']:,} ({label}) | {index['nbits']} | {index['search_s']:.2f} | "
                            f"{index['recall@10']:.3f} | {index['recall@100']:.3f} | {result['peak_mib']:.0f} |")
    smallest, summary = min(RESULTS), []
    for larger in sorted(RESULTS)[1:]:
        across = " (rows of two runs)" if RESULTS[larger]["run"] != RESULTS[smallest]["run"] else ""
        line = (f"From {smallest:,} to {larger:,} documents ({larger / smallest:g}x){across}: the index build "
                f"with centroids from the sample grew {growth('index_s', 'family', smallest, larger)}")
        if "library" in RESULTS[larger]:
            line += f", with fast-plaid's own count {growth('index_s', 'library', smallest, larger)}"
        summary.append(line + f"; encoding grew {RESULTS[larger]['encode_s'] / RESULTS[smallest]['encode_s']:.1f}x, "
                       f"exact search {RESULTS[larger]['exact_search_s'] / RESULTS[smallest]['exact_search_s']:.1f}x, "
                       f"PLAID search {growth('search_s', 'family', smallest, larger)}.")
    run_lines = [f"- run {number[run]}: {run}; rows "
                 + ", ".join(f"{size:,}" for size, result in sorted(RESULTS.items()) if result["run"] == run)
                 for run in runs]
    RECORD.write_text(json.dumps({str(size): result for size, result in sorted(RESULTS.items())}, indent=1) + "\n",
                      encoding="utf-8")
    TABLE.write_text("\n".join([
        "# ColBERT at scale", "",
        "Written by `make bench` (tests/benchmarks/test_scale.py): the embedded profile's base ColBERT (MiniLM, "
        "64-dim token vectors) on generated documents of about 100 tokens, 100 queries, top 100. Each size's "
        "latest result is kept in docs/scale.json, so a run of one size (`pytest -m bench "
        "tests/benchmarks/test_scale.py -k 100000`) adds its row beside the others; the `run` column says which "
        "run measured a row. Times are for their machine only: compare rows of one run, or runs on one machine.", "",
        *run_lines, "",
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
    RESULTS[size] = {**result, "run": f"{date.today().isoformat()}, commit {commit()}, {machine()}"}
    write_table()
    assert result["encode_s"] > 0 and result["family"]["centroids"] > 0
