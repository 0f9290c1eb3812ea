"""Benchmarks run with `make bench` (`-m bench`), not with `make test`: they measure, they do not gate. A `-m`
expression that does not name them (`-m "not slow"`) leaves them out too."""

import pytest


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
