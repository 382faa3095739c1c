"""What README.md and docs/ say, read back so that tests can hold it to the repository.

- :func:`commands`: every command line in a ```bash block (continuations joined, comments dropped,
  ``scripts/run`` and ``VAR=value`` prefixes kept for the caller to strip).
- :func:`repository_paths`: every path into the repository named in code (spans and blocks) or
  linked, e.g. ``experiments/ccnet_r2.yaml``, ``results/*.csv``, ``experiments/heads/<head>.yaml``.
- :func:`quoted_numbers`: every number quoted from a results CSV, by the marker convention of
  docs/development.md ("Numbers quoted from results/"):

      0.903 ± 0.002<!-- csv: results/quickstart.csv experiment=ccnet_r2 val_mIoU_best mean±std -->

  and, for a whole table, a marker on the line above it with one spec per column, one of them the
  key column (``key=<csv column>``: each row's first code span in it, or its text, is that column's
  value)::

      <!-- csv-table: results/tasks.csv | key=experiment | task=reach val_mIoU_final mean±std | - -->

  A spec is ``[column=value ...] <column> <aggregate>`` over the CSV rows that match the filters
  (``column=a,b``: one of them; ``column!=a,b``: none of them) and the row's key; ``-`` leaves a
  column unchecked, and so does a cell that is ``–`` (nothing quoted). Aggregates: value (exactly
  one row), mean, median, std (sample), mean±std, min, max, range (``a–b``), values (``a, b, c`` in
  seed order), count. The quoted number must equal the aggregate to the decimals it is quoted with;
  after it a cell may carry the report's marks: ``(n)`` seeds, ``k/n`` seeds that learn the task,
  ``✓`` / ``~``, ``↑`` / ``↓`` (the marks themselves are checked against the report by the tests
  of the tables that carry them).
"""

from __future__ import annotations

import csv
import glob
import math
import re
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Top-level entries of the repository that a path in the docs may start with.
TOP_LEVEL = ("experiments", "lit_seg", "results", "scripts", "tests", "notebooks", "docs", ".ci", "README.md",
             "pyproject.toml", "constraints.txt", "mkdocs.yml", "LICENSE", ".gitignore")
AGGREGATES = ("value", "mean", "median", "std", "mean±std", "min", "max", "range", "values", "count")


def doc_files() -> list[Path]:
    """README.md and every page under docs/ (not docs/results, a link to results/ for the site)."""
    pages = sorted(p for p in DOCS.rglob("*.md") if "results" not in p.relative_to(DOCS).parts[:1])
    return [ROOT / "README.md", *pages]


@dataclass(frozen=True)
class Found:
    file: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}: {self.text}"


def fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced code block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", lines[i])
        if match:
            fence, language, start, body = match.group(2), match.group(3), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i][len(match.group(1)):] if lines[i].startswith(match.group(1)) else lines[i])
                i += 1
            blocks.append((language, start + 1, body))
        i += 1
    return blocks


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a # inside quotes is kept)."""
    quote = None
    for k, char in enumerate(line):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


LIT_SEG_PROGRAMS = {"lit-seg", "lightning"}


def split(command: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, argv) of a documented command, without `scripts/run`; a glob that
    matches files is expanded, as the shell would."""
    words = [match for word in shlex.split(command) for match in (sorted(glob.glob(word)) or [word])]
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    if words[:1] == ["scripts/run"]:
        words = words[1:]
    return env, words


def lit_seg_argv(argv: list[str]) -> list[str] | None:
    """The arguments after the program, if the command runs lit-seg (`lit-seg`, `lightning`,
    `python -m lit_seg`, after `srun`)."""
    if argv[:1] == ["srun"]:
        argv = argv[1:]
    if argv[:1] and argv[0] in LIT_SEG_PROGRAMS:
        return argv[1:]
    if argv[:3] == ["python", "-m", "lit_seg"]:
        return argv[3:]
    return None


def commands(path: Path) -> list[Found]:
    """Every command of ``path``: each line of its ```bash blocks (continuations joined, comments
    dropped) and each code span in its text that starts with ``scripts/run`` (a whole command, by
    the docs' convention; a span such as ``lit-seg fit --resume`` names an option, not a command)."""
    text = path.read_text()
    found = [Found(path, number, span) for number, span in code_spans(text) if span.startswith("scripts/run ")]
    for language, start, body in fenced_blocks(text):
        if language not in ("bash", "sh", "shell"):
            continue
        pending, first = "", None
        for offset, raw in enumerate(body):
            line = _strip_comment(raw)
            if not line.strip() and not pending:
                continue
            first = start + offset if not pending else first
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            command = " ".join((pending + line).split())
            pending = ""
            if command:
                found.append(Found(path, first, command))
    return found


CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATH_TOKEN = re.compile(r"(?<![\w./-])((?:" + "|".join(re.escape(t) for t in TOP_LEVEL) + r")(?:/[^\s`'\"),;:\]]*)?)")


def _text_outside_blocks(text: str) -> str:
    """The text with its fenced blocks blanked out (their lines kept, empty, so numbers stay)."""
    blank = lambda match: "\n" * match.group(0).count("\n")  # noqa: E731
    return re.sub(r"^(\s*)(```+|~~~+).*?^\1\2[^\n]*", blank, text, flags=re.S | re.M)


def code_spans(text: str) -> list[tuple[int, str]]:
    """(line number, whitespace-normalised text) of every code span outside fenced blocks; a span
    may run over a line break."""
    outside = _text_outside_blocks(text)
    return [(outside.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split()))
            for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", outside)]


def repository_paths(path: Path) -> list[Found]:
    """Paths into the repository that ``path`` names: in code spans, code blocks and links."""
    text = path.read_text()
    pieces: list[tuple[int, str]] = []
    for _, start, body in fenced_blocks(text):
        pieces += [(start + k, line) for k, line in enumerate(body)]
    pieces += code_spans(text)
    found = []
    for number, piece in pieces:
        for token in PATH_TOKEN.findall(piece):
            token = token.rstrip(".")
            if token in TOP_LEVEL and "/" not in token and not (ROOT / token).is_file():
                continue  # a bare word (tests, results) in prose, not a path
            found.append(Found(path, number, token))
    for number, line in enumerate(text.splitlines(), start=1):
        for target in LINK.findall(line):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            found.append(Found(path, number, str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT)
                               else str(resolved)))
    return found


def path_exists(token: str) -> bool:
    """Whether a named path exists: globs must match something; ``<placeholder>`` parts (and
    what follows them) need only the folder before them."""
    if "<" in token:
        token = token.split("<")[0].rsplit("/", 1)[0]
    token = token.split("[")[0] if "[" in token and not any(c in token for c in "*?") else token
    if any(c in token for c in "*?["):
        return any(ROOT.glob(token))
    return (ROOT / token).exists() or (ROOT / token.rstrip("/")).exists()


# ------------------------------------------------------------------------------ quoted numbers

INLINE = re.compile(r"<!--\s*csv:\s*(.*?)\s*-->")
TABLE = re.compile(r"^\s*<!--\s*csv-table:\s*(.*?)\s*-->\s*$")
NUMBER = r"-?[\d,]*\d(?:\.\d+)?"
NOT_MEASURED = ("–", "-", "")  # a table cell that quotes nothing (e.g. a head the benchmark has no row for)
# What may follow the quoted numbers: a count of seeds "(n)", the report's "k/n" seeds that learn the
# task and its marks (✓ ~, ↑ ↓), a unit.
MARKS = r"\s*(?:\((?P<n>\d+)\))?(?:\s*\d+/\d+)?\s*[✓~]?\s*[↑↓]?\s*[×%]?\s*$"


@dataclass(frozen=True)
class Quote:
    """A number (or numbers) quoted in the docs and what it should equal."""

    where: Found
    quoted: str
    csv: str
    filters: dict
    column: str
    aggregate: str
    cell: int | None = None  # the table cell it is in (its index among the row's cells), if in a table


def _spec(spec: str) -> tuple[dict, str, str]:
    tokens = spec.split()
    if len(tokens) < 2 or tokens[-1] not in AGGREGATES or "=" in tokens[-2]:
        raise ValueError(f"not a number spec ([column=value ...] <column> <aggregate>): {spec!r}")
    filters = dict(token.split("=", 1) for token in tokens[:-2])
    return filters, tokens[-2], tokens[-1]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _key(cell: str) -> str:
    span = CODE_SPAN.search(cell)
    return span.group(1) if span else re.sub(r"[*_]", "", cell).strip()


def quoted_numbers(path: Path) -> list[Quote]:
    """Every number of ``path`` that a csv or csv-table marker ties to a results CSV."""
    text = path.read_text()
    lines = text.splitlines()
    in_code = {start + k for _, start, body in fenced_blocks(text) for k in range(-1, len(body) + 1)}
    quotes = []
    for number, line in enumerate(lines, start=1):
        if number in in_code:
            continue  # an example of the convention, not a quote
        table = TABLE.match(line)
        if table:
            source, *specs = [part.strip() for part in table.group(1).split("|")]
            keys = [k for k, spec in enumerate(specs) if spec.startswith("key=")]
            if len(keys) != 1:
                raise ValueError(f"{path}:{number}: a csv-table names one key column (key=<csv column>)")
            key_at, key = keys[0], specs[keys[0]].removeprefix("key=")
            row_number = number + 3  # the header and the |---| line follow the marker
            for row in lines[number + 2:]:
                if not row.strip().startswith("|"):
                    break
                cells = _cells(row)
                if len(cells) != len(specs):
                    raise ValueError(f"{path}:{row_number}: {len(cells)} cells, {len(specs)} specs")
                for k, (cell, spec) in enumerate(zip(cells, specs)):
                    if k != key_at and spec != "-" and cell not in NOT_MEASURED:
                        filters, column, aggregate = _spec(spec)
                        quotes.append(Quote(Found(path, row_number, row.strip()), cell, source,
                                            {**filters, key: _key(cells[key_at])}, column, aggregate, k))
                row_number += 1
            continue
        for marker in INLINE.finditer(line):
            source, spec = marker.group(1).split(None, 1)
            filters, column, aggregate = _spec(spec)
            before = re.sub(r"<!--.*?-->", "", line[:marker.start()]).rstrip()
            quotes.append(Quote(Found(path, number, line.strip()), before, source, filters, column, aggregate))
    return quotes


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _close(quoted: str, value: float) -> bool:
    number = float(quoted.replace(",", ""))
    return abs(number - value) <= 0.5 * 10 ** -_decimals(quoted) + 1e-9


def _matches(row: dict, key: str, value: str) -> bool:
    """``key=a,b``: the row's value is one of a, b; ``key!=a,b``: none of them."""
    if key.endswith("!"):
        return row.get(key[:-1]) not in value.split(",")
    return row.get(key) in value.split(",")


def values_of(quote: Quote) -> list[float]:
    """The CSV values a quote aggregates: its file's rows that match its filters, in seed order."""
    with (ROOT / quote.csv).open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if all(_matches(row, k, v) for k, v in quote.filters.items())]
    if rows and quote.column not in rows[0]:
        raise KeyError(f"{quote.csv} has no column {quote.column!r}")
    if "seed" in (rows[0] if rows else {}):
        rows.sort(key=lambda row: int(row["seed"]))
    return [float(row[quote.column]) for row in rows if row[quote.column] not in ("", None)]


def wanted(aggregate: str, values: list[float]) -> list[float]:
    """What a quote of ``aggregate`` over ``values`` must say, number by number."""
    if aggregate == "mean±std":
        return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan]
    if aggregate == "range":
        return [min(values), max(values)]
    if aggregate == "values":
        return values
    return [{"value": values[0], "mean": statistics.mean(values), "median": statistics.median(values),
             "min": min(values), "max": max(values),
             "count": len(values), "std": statistics.stdev(values) if len(values) > 1 else math.nan}[aggregate]]


def check(quote: Quote) -> str | None:
    """None if the quoted number equals the CSV's, else what differs."""
    try:
        values = values_of(quote)
    except KeyError as err:
        return err.args[0]
    text = re.sub(r"[*`]", "", quote.quoted).strip()
    if not values:
        return f"no rows of {quote.csv} match {quote.filters} with a value of {quote.column}"
    if quote.aggregate == "value" and len(values) != 1:
        return f"{len(values)} rows of {quote.csv} match {quote.filters}, not one"
    forms = {"mean±std": f"({NUMBER})\\s*±\\s*({NUMBER})", "range": f"({NUMBER})\\s*[–-]\\s*({NUMBER})",
             "values": f"({NUMBER}(?:\\s*,\\s*{NUMBER})*)"}
    form = forms.get(quote.aggregate, f"({NUMBER})")
    match = re.search(form + MARKS, text)
    if match is None:
        return f"no number in the {quote.aggregate} form at the end of {text!r}"
    got = ([v.strip() for v in match.group(1).split(",")] if quote.aggregate == "values" else
           [g for g in match.groups()[:re.compile(form).groups] if g is not None])
    wants = wanted(quote.aggregate, values)
    if len(got) != len(wants) or not all(_close(g, w) for g, w in zip(got, wants)):
        shown = ", ".join(f"{w:.6g}" for w in wants)
        return f"quoted {', '.join(got)}; {quote.csv} {quote.filters} {quote.column} {quote.aggregate} gives {shown}"
    return None
