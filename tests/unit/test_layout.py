"""lit_seg/ grouped by layer, and run folders and checkpoints written before the grouping still load."""

import importlib
import pickle

import pytest
from lightning.pytorch.cli import instantiate_class

import lit_seg
from tests.conftest import ROOT

LAYERS = {"models", "data", "train", "inference", "cli", "study"}


def test_the_package_top_level_holds_only_the_layers():
    top = {p.stem for p in (ROOT / "lit_seg").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert top == LAYERS | {"__init__", "__main__", "errors"}


@pytest.mark.parametrize("old, new", sorted(lit_seg.MOVED_MODULES.items()))
def test_a_moved_module_imports_under_its_old_path_as_its_new_home(old, new):
    assert old.count(".") == 1 and new.split(".")[1] in LAYERS  # lit_seg.<module> -> lit_seg.<layer>.<module>
    assert not (ROOT / f"{old.replace('.', '/')}.py").exists()
    module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert module.__spec__.name == new and module.__name__ == new  # the old path does not rename it


def test_old_class_paths_in_a_saved_config_build_the_same_classes():
    # config.yaml of a run from before the grouping, as jsonargparse/LightningCLI reads it.
    callback = instantiate_class((), {"class_path": "lit_seg.callbacks.RunSummary"})
    from lit_seg.train.callbacks import RunSummary

    assert type(callback) is RunSummary
    plugin = instantiate_class((), {"class_path": "lit_seg.fault_tolerance.AtomicCheckpointIO"})
    assert type(plugin).__module__ == "lit_seg.train.fault_tolerance"


def test_old_pickled_references_unpickle():
    # A checkpoint's hyperparameters pickle the optimiser and schedule classes by module path.
    old = b"clit_seg.optim\nPolyLR\n."  # GLOBAL 'lit_seg.optim PolyLR', as pickled before the move
    from lit_seg.train.optim import PolyLR

    assert pickle.loads(old) is PolyLR
