"""scripts/refresh_doc_numbers.py: a quote rewritten from its CSV keeps its form (decimals, thousands
separators, the seed count, an arrow) and then passes the docs' own check."""

import csv
import importlib.util
from pathlib import Path

import pytest

from tests import doc_checks

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("refresh_doc_numbers", ROOT / "scripts" / "refresh_doc_numbers.py")
refresh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(refresh)


@pytest.fixture
def results(tmp_path) -> Path:
    path = tmp_path / "study.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["experiment", "seed", "val_mIoU_final", "fwdbwd_ms"])
        writer.writeheader()
        for seed, (value, ms) in enumerate([(0.90, 1234.4), (0.91, 1300.0), (0.95, 1250.0)]):
            writer.writerow({"experiment": "gc", "seed": seed, "val_mIoU_final": value, "fwdbwd_ms": ms})
    return path


@pytest.mark.parametrize("quoted, column, aggregate, expected", [
    ("0.366 ± 0.005 (2) ↑", "val_mIoU_final", "mean±std", "0.920 ± 0.026 (3) ↑"),
    ("seeds at 0.10, 0.20, 0.30", "val_mIoU_final", "values", "seeds at 0.90, 0.91, 0.95"),
    ("1,014", "fwdbwd_ms", "min", "1,234"),
    ("in 90–100", "fwdbwd_ms", "range", "in 1234–1300"),
])
def test_a_stale_quote_is_rewritten_in_its_own_form(results, quoted, column, aggregate, expected):
    quote = doc_checks.Quote(doc_checks.Found(ROOT / "README.md", 1, quoted), quoted, str(results),
                             {"experiment": "gc"}, column, aggregate)
    assert doc_checks.check(quote) is not None
    new = refresh.refreshed(quote)
    assert new == expected
    assert doc_checks.check(doc_checks.Quote(quote.where, new, str(results), quote.filters, column, aggregate)) is None
