"""Writes into README.md and docs/ the numbers their csv and csv-table markers quote, as the results
CSVs now give them (after a benchmark or an ablation is run again), to the decimals each is quoted
with. The markers are docs/development.md's convention (tests/doc_checks.py reads them); a quote
the test would fail is rewritten, every other character of the page is kept. Claims drawn from the
numbers (an arrow, a sentence) are not touched: read the diff.

    scripts/run python scripts/refresh_doc_numbers.py [--check]

``--check`` rewrites nothing and exits 1 if a quote is out of date (what the tests check).
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import doc_checks  # noqa: E402 - the one reader of the markers


def _format(value: float, like: str) -> str:
    """``value`` as ``like`` is written: its decimals, and thousands separators if it has them."""
    decimals = doc_checks._decimals(like)
    return f"{value:,.{decimals}f}" if "," in like else f"{value:.{decimals}f}"


def refreshed(quote: doc_checks.Quote) -> str | None:
    """The quote's text with its numbers as the CSV gives them, or None if it cannot be rewritten."""
    try:
        values = doc_checks.values_of(quote)
    except (KeyError, FileNotFoundError):
        return None
    if not values:
        return None
    # After the quoted numbers only doc_checks.MARKS may follow; its count of seeds "(n)" is refreshed,
    # the report's marks are not (the tests of the tables that carry them hold them to the report).
    tail = re.search(doc_checks.MARKS, quote.quoted)
    head, rest = quote.quoted[:tail.start()], quote.quoted[tail.start():]
    if tail.group("n") is not None:
        rest = rest.replace(f"({tail.group('n')})", f"({len(values)})", 1)
    wanted = doc_checks.wanted(quote.aggregate, values)
    numbers = list(re.finditer(doc_checks.NUMBER, head))
    if len(numbers) < len(wanted):
        return None
    for match, value in reversed(list(zip(numbers[len(numbers) - len(wanted):], wanted))):
        head = head[:match.start()] + _format(value, match.group()) + head[match.end():]
    return head + rest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a quote is out of date")
    args = parser.parse_args()
    stale = 0
    for path in doc_checks.doc_files():
        lines = path.read_text().splitlines(keepends=True)
        changed = False
        for quote in doc_checks.quoted_numbers(path):
            if doc_checks.check(quote) is None:
                continue
            stale += 1
            new = refreshed(quote)
            where = f"{path.relative_to(ROOT)}:{quote.where.line}"
            if new is None or args.check:
                print(f"{where}: {doc_checks.check(quote)}" + ("" if args.check else " (not rewritten)"))
                continue
            line = lines[quote.where.line - 1]
            if quote.cell is not None:
                parts = line.split("|")  # "| a | b |\n" -> ["", " a ", " b ", "\n"]
                parts[quote.cell + 1] = parts[quote.cell + 1].replace(quote.quoted, new, 1)
                lines[quote.where.line - 1] = "|".join(parts)
            elif quote.quoted in line:
                lines[quote.where.line - 1] = line.replace(quote.quoted, new, 1)
            else:
                print(f"{where}: the quote {quote.quoted!r} is not on its line (not rewritten)")
                continue
            changed = True
            print(f"{where}: {quote.quoted.strip()} -> {new.strip()}")
        if changed:
            path.write_text("".join(lines))
    if args.check:
        print(f"{stale} quote{'s' * (stale != 1)} out of date")
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
