"""README.md and docs/ cannot go stale: every repository path they name exists, every command they
show parses as the tool that runs it parses it (lit-seg's own parsers in this process, with
``--print_config`` for the Lightning subcommands and ``check-data``, ``--dry-run`` for ``ablate``;
argparse tools stop right after parsing; wandb's and jupyter's parsers likewise), the shell steps
that set data up work in that order, every number quoted from results/ equals its CSV, results/
says what each of its files is, and the heads table names every head.

The commands that need a trained model run for real in tests/integration/test_docs_commands.py.
"""

import argparse
import contextlib
import csv
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lit_seg.models.heads import HEADS
from tests.doc_checks import (
    ROOT,
    check,
    commands,
    doc_files,
    lit_seg_argv,
    path_exists,
    quoted_numbers,
    repository_paths,
    split,
)

DOCS = doc_files()
COMMANDS = [found for path in DOCS for found in commands(path)]
LIGHTNING_SUBCOMMANDS = {"fit", "validate", "test", "predict"}
# Placeholders the docs use in commands, and what stands for them here.
PLACEHOLDERS = {"<head>": "ccnet_r2", "<task>": "reach", "<seed>": "0", "<name>": "mydata", "<experiment>": "ccnet_r2",
                "<ablation>": "tasks", "<entity/project/id>": "me/lit-seg/abcd1234", "<entity>": "me",
                "<project>": "lit-seg"}
RUN_PLACEHOLDER = re.compile(r"runs/[\w.-]+/<[^/\s>]+>(?:-<[^/\s>]+>)?")
# Programs the docs may show beside lit-seg's, and how each is held to the docs here.
OTHER_PROGRAMS = {
    "python": "scripts/*.py parse their arguments; python -m lit_seg is lit-seg",
    "srun": "SLURM's launcher: the lit-seg command after it is checked",
    "wandb": "wandb's own click parser",
    "jupyter": "nbclient's parser (jupyter execute)",
    "mkdir": "run, with ln, in a scratch folder", "ln": "run, with mkdir, in a scratch folder",
    "pytest": "CI runs it", "ruff": "CI runs it", "mkdocs": "CI runs it (mkdocs build --strict)",
    "jupytext": "tests/integration/test_notebook.py holds the twin to the notebook",
    "export": "an environment variable", "source": "the environment scripts/run makes",
    "csEvalPixelLevelSemanticLabeling": "tests/integration/test_predict.py runs the official evaluator",
    "cat": "a run folder's file: tests/integration/test_docs_commands.py reads it from a real run",
}


def test_the_docs_show_commands_and_every_program_is_known():
    assert len(COMMANDS) > 40
    unknown = []
    for found in COMMANDS:
        _, argv = split(found.text)
        if lit_seg_argv(argv) is None and argv[0] not in OTHER_PROGRAMS:
            unknown.append(str(found))
    assert not unknown, "programs the docs tests do not know (add a check for them):\n" + "\n".join(unknown)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_path_named_exists(path):
    missing = [str(found) for found in repository_paths(path) if not path_exists(found.text)]
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)


# ------------------------------------------------------------------------------ lit-seg commands


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder as `lit-seg fit` leaves one (config.yaml, checkpoints of the untrained model
    in Lightning's format), for commands that take `runs/<experiment>/<run>`."""
    import lightning
    import torch

    from lit_seg.api import compose

    folder = tmp_path_factory.mktemp("runs") / "ccnet_r2" / "20261201-120000-abcd1234"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(print_config(["fit", "--config", "experiments/ccnet_r2.yaml"]))
    module = compose("experiments/ccnet_r2.yaml").module
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                  "pytorch-lightning_version": lightning.__version__, "epoch": 0, "global_step": 0}
    for name in ("best-step000384.ckpt", "last.ckpt"):
        torch.save(checkpoint, folder / "checkpoints" / name)
    (folder / "wandb" / "offline-run-20261201_120000-abcd1234").mkdir(parents=True)
    return folder


def substitute(command: str, run_folder: Path) -> str:
    command = RUN_PLACEHOLDER.sub(str(run_folder), command)
    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    assert "<" not in command, f"a placeholder without a stand-in in PLACEHOLDERS: {command}"
    return command


class Parsed(Exception):
    """Raised by argparse in place of running the tool once its arguments parsed."""


@contextlib.contextmanager
def stop_after_parsing():
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = parse_args


def run_in_process(call, argv: list[str]) -> tuple[int | str | None, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            call(argv)
            code = 0
        except Parsed:
            code = "parsed"
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def print_config(argv: list[str]) -> str:
    from lit_seg.cli import main

    code, out, err = run_in_process(main, [*argv, "--print_config"])
    assert code in (0, None), err[-3000:]
    return out


@pytest.fixture
def in_repo(monkeypatch):
    """lit-seg as a user runs it from the repository root, W&B off, nothing written."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["lit-seg"])
    before = sorted(p for p in (ROOT / "runs").rglob("*")) if (ROOT / "runs").exists() else []
    yield
    after = sorted(p for p in (ROOT / "runs").rglob("*")) if (ROOT / "runs").exists() else []
    assert after == before, "a docs command wrote into runs/"


LIT_SEG_COMMANDS = [found for found in COMMANDS if lit_seg_argv(split(found.text)[1]) is not None]


@pytest.mark.parametrize("found", LIT_SEG_COMMANDS, ids=str)
def test_lit_seg_command_parses(found, run_folder, in_repo):
    """Lightning subcommands and check-data resolve their whole config (--print_config); ablate
    plans its runs (--dry-run); every other tool parses its arguments."""
    from lit_seg.cli import TOOLS, main

    env, argv = split(substitute(found.text, run_folder))
    args = lit_seg_argv(argv)
    subcommand = args[0] if args else None
    if "--help" in args or "-h" in args or "--print_config" in args:
        call_args = args
    elif subcommand in LIGHTNING_SUBCOMMANDS or subcommand == "check-data":
        call_args = [*args, "--print_config"]
    elif subcommand == "ablate":
        call_args = ["ablate", "--dry-run", *args[1:]]
    else:
        assert subcommand in TOOLS, f"{found}: not a lit-seg subcommand"
        call_args = args
    parse_only = subcommand in TOOLS and subcommand not in ("ablate", "check-data") and "--help" not in args
    with stop_after_parsing() if parse_only else contextlib.nullcontext():
        code, out, err = run_in_process(main, call_args)
    assert code == ("parsed" if parse_only else 0) or code is None and not parse_only, \
        f"{found}\nexit {code}: {err[-3000:]}"
    if subcommand == "ablate" and "--help" not in args:
        plan = out + err
        assert re.search(r"= [1-9]\d* runs", plan), f"{found}: the dry run planned nothing\n{plan[-3000:]}"
    if "--print_config" in call_args and "--help" not in call_args:
        config = yaml.safe_load(out)
        assert isinstance(config, dict) and ("trainer" in config or "data" in config), out[-2000:]


SCRIPT_COMMANDS = [found for found in COMMANDS if split(found.text)[1][:1] == ["python"]
                   and lit_seg_argv(split(found.text)[1]) is None]


@pytest.mark.parametrize("found", SCRIPT_COMMANDS, ids=str)
def test_python_script_command_parses(found, run_folder, monkeypatch):
    _, argv = split(substitute(found.text, run_folder))
    script = ROOT / argv[1]
    assert argv[1].startswith("scripts/") and script.is_file(), found
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", argv[1:])
    with stop_after_parsing():
        code, _, err = run_in_process(lambda _: runpy.run_path(str(script), run_name="__main__"), argv[2:])
    assert code == "parsed", f"{found}: exit {code}: {err[-2000:]}"


@pytest.mark.parametrize("found", [f for f in COMMANDS if split(f.text)[1][:1] == ["wandb"]], ids=str)
def test_wandb_command_parses(found, run_folder):
    import click
    from wandb.cli.cli import cli

    _, argv = split(substitute(found.text, run_folder))
    args, command = argv[1:], cli
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        command, args = command.commands[args[0]], args[1:]
    assert command is not cli, f"{found}: not a wandb command"
    try:
        command.make_context("wandb", list(args))
    except click.UsageError as err:
        pytest.fail(f"{found}: {err}")


@pytest.mark.parametrize("found", [f for f in COMMANDS if split(f.text)[1][:1] == ["jupyter"]], ids=str)
def test_jupyter_command_parses(found):
    from nbclient.cli import NbClientApp

    _, argv = split(found.text)
    assert argv[1] == "execute", found
    app = NbClientApp()
    app.parse_command_line(argv[2:])
    assert app.extra_args and all((ROOT / notebook).is_file() for notebook in app.extra_args), found


def test_data_folder_steps_work_in_the_order_shown(tmp_path):
    """Each block's mkdir/ln lines, run as shown in an empty folder with the data set's source made
    up: `ln -s /path/to/x data/x` needs `data/` to exist first."""
    steps = {}
    for found in COMMANDS:
        _, argv = split(found.text)
        if argv[0] in ("mkdir", "ln"):
            steps.setdefault(found.file, []).append(found.text)
    assert steps, "the docs show how to put a data set in place"
    for file, lines in steps.items():
        work = tmp_path / file.stem
        work.mkdir()
        script = []
        for line in lines:
            for source in re.findall(r"/path/to/[\w.-]+", line):
                (work / source.lstrip("/")).mkdir(parents=True, exist_ok=True)
                line = line.replace(source, str(work / source.lstrip("/")))
            script.append(line)
        done = subprocess.run(["bash", "-euc", "\n".join(script)], cwd=work, capture_output=True, text=True)
        assert done.returncode == 0, f"{file}: {done.stderr}"


# ------------------------------------------------------------------------------ numbers, results


QUOTES = [quote for path in DOCS for quote in quoted_numbers(path)]


def test_the_docs_quote_numbers_from_results():
    assert len(QUOTES) > 50 and all(quote.csv.startswith("results/") for quote in QUOTES)


@pytest.mark.parametrize("quote", QUOTES, ids=lambda q: f"{q.where.file.name}:{q.where.line}:{q.quoted[:30]}")
def test_quoted_number_equals_its_csv(quote):
    problem = check(quote)
    assert problem is None, f"{quote.where}\n{problem}"


def test_results_index_names_every_file_under_results_and_nothing_else():
    index = (ROOT / "results" / "README.md").read_text()
    named = {name for row in index.splitlines() if row.startswith("| `")
             for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    # A glob names every file it matches (a folder of figures), and must match one.
    assert all(sorted((ROOT / "results").glob(n)) for n in named if "*" in n), "a glob in the index matches nothing"
    named = {p.relative_to(ROOT / "results").as_posix() for n in named if "*" in n
             for p in (ROOT / "results").glob(n)} | {n for n in named if "*" not in n}
    files = {p.relative_to(ROOT / "results").as_posix() for p in (ROOT / "results").rglob("*")
             if p.is_file() and p.name != "README.md"}
    assert named == files, f"not in the index: {sorted(files - named)}; not in results/: {sorted(named - files)}"
    current = index.split("## Superseded")[0]
    assert not [n for n in named if n.startswith("archive/") and f"`{n}`" in current]
    assert not [f for f in files if "/" not in f and f"`{f}`" not in current], "results/<file> is current"


def test_numbers_are_quoted_from_current_results_only():
    archived = [str(q.where) for q in QUOTES if q.csv.startswith("results/archive/")
                and "notes/" not in str(q.where.file)]
    assert not archived, "a current page quotes a superseded result:\n" + "\n".join(archived)


def spatial_attention_heads() -> set[str]:
    """The head list's variants that draw a spatial attention map (a fresh, small head asked for one
    query's maps returns some): every attention head but DANet's CAM, whose attention is over channels."""
    import torch

    heads = set()
    for name, variant in HEADS.items():
        head = variant.build([3, 16, 16, 16], 3, channels=16).eval()
        x = torch.randn(1, 16, 8, 8)
        inputs = x if variant.head.num_inputs == 1 else [x] * variant.head.num_inputs
        with torch.no_grad():
            if head.attention_maps(inputs, torch.tensor([[2, 3]])):
                heads.add(name)
    return heads


def test_attention_maps_page_shows_every_attention_head_on_every_task_of_the_suite():
    attention = spatial_attention_heads()
    with (ROOT / "results" / "tasks.csv").open() as f:
        wanted = {(row["task"], row["experiment"]) for row in csv.DictReader(f)
                  if row["status"] == "finished" and row["experiment"] in attention}
    page = (ROOT / "docs" / "attention-maps.md").read_text()
    shown = re.findall(r"\]\(results/figures/attention/(\w+)/(\w+)\.png\)", page)
    files = {(p.parent.name, p.stem) for p in (ROOT / "results" / "figures" / "attention").glob("*/*.png")}
    assert len(shown) == len(set(shown)) and set(shown) == wanted == files
    assert len({task for task, _ in wanted}) == 3 and len(attention) == 17 and "danet_cam" not in attention


@pytest.mark.parametrize("path, section", [("README.md", "## Results at a glance"),
                                           ("docs/results.md", "## The task suite")])
def test_capacity_tables_carry_the_reports_marks(path, section):
    """Each cell of a task-suite table in the capacity form (a csv-table over results/tasks.csv whose
    cells end in ``k/n`` and the marks): its seeds that learn the task, ✓ / ~ and ↑ / ↓ are what
    the report computes (``analysis.capacity_profile``); its numbers are checked against the CSV by
    test_quoted_number_equals_its_csv. Every head of the head list has a row."""
    from lit_seg.study import analysis

    profile = analysis.capacity_profile(analysis.load_csv(ROOT / "results" / "tasks.csv"))
    text = (ROOT / path).read_text().split(section + "\n", 1)[1].split("\n## ", 1)[0]
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("<!-- csv-table: results/tasks.csv"))
    header = [cell.strip() for cell in lines[start + 1].strip().strip("|").split("|")]
    tasks = [cell.split()[0] for cell in header[1:]]
    rows = [line for line in lines[start + 3:] if line.startswith("|")]
    rows = rows[:next((k for k, row in enumerate(rows) if not row.startswith("| `")), len(rows))]
    seen = []
    for row in rows:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        experiment = re.search(r"`(\w+)`", cells[0]).group(1)
        seen.append(experiment)
        for task, cell in zip(tasks, cells[1:], strict=True):
            learnt, mark, arrow = analysis.capacity_marks(profile.loc[(experiment, task)])
            assert cell.endswith(f"{learnt}{mark}{arrow}") and re.search(r"\d/\d", cell), (experiment, task, cell)
    assert set(HEADS) <= set(seen), f"no row for {sorted(set(HEADS) - set(seen))}"


def test_head_params_csv_is_the_official_count_of_every_head():
    from tests.unit.test_head_fidelity import OFFICIAL_PARAMS

    with (ROOT / "results" / "head_params.csv").open() as f:
        rows = {row["experiment"]: int(row["params"]) for row in csv.DictReader(f)}
    assert rows == OFFICIAL_PARAMS


@pytest.mark.parametrize("path, title", [("README.md", "## Heads"), ("docs/heads.md", "## The heads")])
def test_heads_tables_name_every_head_and_experiment(path, title):
    text = (ROOT / path).read_text()
    table = text.split(title + "\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")]
    column = [cell.strip() for cell in rows[0]].index("experiment")
    named = {span for row in rows[1:] for span in re.findall(r"`(\w+)`", row[column])}
    experiments = {p.stem for p in (ROOT / "experiments").glob("*.yaml") if p.stem != "base"}
    assert set(HEADS) <= named and named == experiments


def test_readme_contents_lead_with_install_quick_start_own_data_and_a_trained_model():
    """A newcomer finds them in the first screenful: the contents within the first 40 lines, and
    those four sections on its first line."""
    lines = (ROOT / "README.md").read_text().splitlines()
    contents = lines.index("## Contents")
    assert contents < 40
    first_entry = next(line for line in lines[contents + 1:] if line.strip())
    for section in ("Install", "Quick start", "Your own data", "Using a trained model"):
        assert f"[{section}](#" in first_entry
        assert f"## {section}" in lines


def test_the_sweep_grid_the_docs_state_is_the_sweep_files():
    sweep = yaml.safe_load((ROOT / "experiments" / "ablations" / "sweep.yaml").read_text())
    configs, seeds = sweep["parameters"]["config"]["values"], sweep["parameters"]["seed_everything"]["values"]
    text = " ".join((ROOT / "docs" / "ablations.md").read_text().split())
    experiments, seed_count, runs = map(int, re.search(r"\((\d+) × (\d+) = (\d+) runs\)", text).groups())
    assert (experiments, seed_count, runs) == (len(configs), len(seeds), len(configs) * len(seeds))
    group = sweep["command"][-1].removeprefix("--group=")
    assert sweep["name"] == group and f"`{group}`" in text
