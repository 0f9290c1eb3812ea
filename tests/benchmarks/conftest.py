"""Benchmarks run with `make bench` (`-m bench`), not with `make test`: they measure, they do not gate. A `-m`
expression that does not name them (`-m "not slow"`) leaves them out too."""

import pytest
from helpers import write_params

from retrieval_pipeline.core.resolve import load_family


def pytest_addoption(parser):
    parser.addoption("--library-centroids-up-to", type=int, default=20_000, metavar="DOCUMENTS",
                     help="test_scale: up to this many documents, also build the index with fast-plaid's own "
                          "centroid count, beside the colbert family's (default 20,000)")


def pytest_collection_modifyitems(config, items):
    asked = "bench" in (config.getoption("markexpr") or "")
    kept, left_out = [], []
    for item in items:
        if "benchmarks" in item.path.parts:
            item.add_marker(pytest.mark.bench)
            if not asked:
                left_out.append(item)
                continue
        kept.append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(scope="module")
def colbert_family(tmp_path_factory):
    """The colbert family with the repository's params (embedded profile), resolved in a folder of its own."""
    root = tmp_path_factory.mktemp("colbert-bench")
    return load_family("colbert", write_params(root), root)
