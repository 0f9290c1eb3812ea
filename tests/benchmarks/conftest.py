"""Benchmarks run with `make bench`, not with `make test`: they measure, they do not gate."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "benchmarks" in item.path.parts:
            item.add_marker(pytest.mark.bench)
