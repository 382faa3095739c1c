"""lit_seg/ grouped by layer, each importing only from the layers below it, and run folders and
checkpoints written before the grouping still load."""

import ast
import importlib
import pickle

import pytest
from lightning.pytorch.cli import instantiate_class

import lit_seg
from tests.conftest import ROOT

# Each layer may import from the layers of a lower rank only (and from lit_seg.errors, rank -1):
# models, data <- train <- inference <- api <- study, cli. Same-rank layers do not import each other.
RANK = {"errors": -1, "models": 0, "data": 0, "train": 1, "inference": 2, "api": 3, "study": 4, "cli": 4}
LAYERS = set(RANK) - {"errors"}


def test_the_package_top_level_holds_only_the_layers():
    top = {p.stem for p in (ROOT / "lit_seg").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top == LAYERS | {"__init__", "__main__", "errors"}


def imported_layers(path) -> list[tuple[int, str]]:
    """(line, layer) of every lit-seg layer a module imports from, anywhere in it (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from lit_seg import api` imports the api layer; `from lit_seg.api.x import y` too.
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == "lit_seg" \
                else [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names
                  if name.startswith("lit_seg.") and name.split(".")[1] in RANK]
    return found


def upward_imports(root) -> list[str]:
    bad = []
    for path in sorted((root / "lit_seg").rglob("*.py")):
        layer = path.relative_to(root / "lit_seg").parts[0].removesuffix(".py")
        if layer not in LAYERS:
            continue
        for line, other in imported_layers(path):
            if other != layer and RANK[other] >= RANK[layer]:
                bad.append(f"{path.relative_to(root)}:{line} {layer} imports {other}")
    return bad


def test_layers_import_only_from_the_layers_below_them():
    assert upward_imports(ROOT) == []


def test_the_layering_check_finds_an_upward_import(tmp_path):
    # The check itself can fail: a model that reaches up into the command line is caught.
    (tmp_path / "lit_seg" / "models").mkdir(parents=True)
    (tmp_path / "lit_seg" / "models" / "bad.py").write_text("def f():\n    from lit_seg.cli import main\n")
    (tmp_path / "lit_seg" / "study").mkdir()
    (tmp_path / "lit_seg" / "study" / "ok.py").write_text("from lit_seg import api\nfrom lit_seg.train import x\n")
    (tmp_path / "lit_seg" / "cli").mkdir()
    (tmp_path / "lit_seg" / "cli" / "side.py").write_text("import lit_seg.study.report\n")
    assert upward_imports(tmp_path) == ["lit_seg/cli/side.py:1 cli imports study",
                                        "lit_seg/models/bad.py:2 models imports cli"]


@pytest.mark.parametrize("old, new", sorted(lit_seg.MOVED_MODULES.items()))
def test_a_moved_module_imports_under_its_old_path_as_its_new_home(old, new):
    assert new.split(".")[1] in LAYERS  # lit_seg.<old place> -> lit_seg.<layer>.<module>
    assert not (ROOT / f"{old.replace('.', '/')}.py").exists()
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new and module.__name__ == new  # the old path does not rename it


def test_old_class_paths_in_a_saved_config_build_the_same_classes():
    # config.yaml of a run from before the grouping, as jsonargparse/LightningCLI reads it.
    callback = instantiate_class((), {"class_path": "lit_seg.callbacks.RunSummary"})
    from lit_seg.api.callbacks import RunSummary

    assert type(callback) is RunSummary
    plugin = instantiate_class((), {"class_path": "lit_seg.fault_tolerance.AtomicCheckpointIO"})
    assert type(plugin).__module__ == "lit_seg.train.fault_tolerance"


def test_old_pickled_references_unpickle():
    # A checkpoint's hyperparameters pickle the optimiser and schedule classes by module path.
    old = b"clit_seg.optim\nPolyLR\n."  # GLOBAL 'lit_seg.optim PolyLR', as pickled before the move
    from lit_seg.train.optim import PolyLR

    assert pickle.loads(old) is PolyLR
