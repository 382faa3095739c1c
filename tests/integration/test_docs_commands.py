"""The docs' commands on a trained model, run for real: every command of README.md and docs/ that takes
the quick start's run folder (`runs/ccnet_r2/<run>`: validate, predict, export, maps, resume, reading
its files) and the README's Python snippet, on a copy of a short real fit of the quick start's
experiment (the `ccnet_run` fixture), each checked for what the docs say it leaves behind.
tests/unit/test_docs.py parses every other command."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from lit_seg.cli import main
from tests.doc_checks import ROOT, commands, doc_files, fenced_blocks, lit_seg_argv, split

QUICK_START_RUN = re.compile(r"runs/ccnet_r2/<run>")
ON_THE_RUN = sorted({found.text: found for path in doc_files() for found in commands(path)
                     if QUICK_START_RUN.search(found.text)}.values(), key=str)


@pytest.fixture
def workspace(ccnet_run, tmp_path, monkeypatch) -> Path:
    """A folder to run the docs' commands in: a copy of the run at runs/ccnet_r2/<name>, two photos
    (photos/a.png, photo.jpg), my.png; W&B off; the command line lit-seg's."""
    run = tmp_path / "runs" / "ccnet_r2" / ccnet_run.name
    shutil.copytree(ccnet_run, run)
    (tmp_path / "photos").mkdir()
    for name, size in (("photos/a.png", (50, 70)), ("photo.jpg", (64, 96)), ("my.png", (80, 72))):
        Image.new("RGB", size, (90, 140, 200)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(sys, "argv", ["lit-seg"])
    return run


def test_the_docs_show_commands_on_a_trained_run():
    programs = {lit_seg_argv(split(found.text)[1])[0] for found in ON_THE_RUN if lit_seg_argv(split(found.text)[1])}
    assert {"predict", "validate", "export", "maps", "fit"} <= programs


@pytest.mark.parametrize("found", ON_THE_RUN, ids=str)
def test_command_on_the_quick_start_run(found, workspace, capsys):
    _, argv = split(found.text.replace("runs/ccnet_r2/<run>", str(workspace.relative_to(Path.cwd()))))
    args = lit_seg_argv(argv)
    if args is None:  # reading the run's files (cat) or its W&B run (wandb): they are there
        for path in argv[1:]:
            if path.startswith("runs/"):
                target = Path(path)
                assert target.exists(), found
                if target.suffix == ".json":
                    json.loads(target.read_text())
        return
    before = {p.name for p in (workspace.parent).iterdir()}
    steps_before = json.loads((workspace / "summary.json").read_text())["global_step"]
    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None), f"{found}\n{capsys.readouterr().err[-3000:]}"
    out = capsys.readouterr()
    subcommand = args[0]
    new = [workspace.parent / name for name in {p.name for p in workspace.parent.iterdir()} - before]
    if subcommand == "predict":
        (folder,) = new
        written = sorted((folder / "predictions").rglob("*.png"))
        if "--data.init_args.predict_dir" in args:
            assert (folder / "predictions" / "a.png").is_file()
            assert ("--writer.overlays" not in args) or list((folder / "predictions" / "overlays").glob("*.png"))
        else:
            assert written, "a class-index PNG per test image"
        image = Image.open(written[0])
        assert image.mode == "P"  # class indices in the data set's colours
    elif subcommand == "validate":
        assert "val/mIoU" in out.out + out.err
    elif subcommand == "export":
        fmt = args[args.index("--format") + 1]
        assert (workspace / "export" / {"onnx": "model.onnx", "torchscript": "model.pt"}[fmt]).is_file()
    elif subcommand == "maps":
        folder = Path(args[args.index("--output_dir") + 1]) if "--output_dir" in args else workspace / "maps"
        image = Path(args[args.index("--image") + 1]) if "--image" in args else None
        name = image.stem if image else f"val{args[args.index('--index') + 1]}"
        assert Image.open(folder / f"attention_{name}.png").size[0] > 0
    elif subcommand == "fit":  # --resume: the same folder, on from its last step (further with more epochs)
        assert not new
        steps = json.loads((workspace / "summary.json").read_text())["global_step"]
        assert steps > steps_before if "--trainer.max_epochs" in args else steps == steps_before
    else:
        pytest.fail(f"no check for {found}")


def test_readme_python_snippet_segments_a_photo(workspace):
    readme = (ROOT / "README.md").read_text()
    (snippet,) = [body for language, _, body in fenced_blocks(readme) if language == "python"]
    code = "\n".join(snippet).replace("runs/ccnet_r2/<run>", str(workspace))
    exec(compile(code, "README.md", "exec"), {})
    mask = Image.open("photo_mask.png")
    assert mask.size == Image.open("photo.jpg").size
