"""Integration tests: the command line, real fits, run folders, W&B, the ablation runner. Every one
of them is `slow` (`pytest -m "not slow"` is the fast inner loop of the unit tests)."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration/" in item.nodeid:
            item.add_marker(pytest.mark.slow)
