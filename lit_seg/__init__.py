"""lit-seg: context (self-attention) decoders for semantic segmentation, compared fairly.

Layers, each importing only from those before it: ``lit_seg.models`` (operators, heads, encoder,
evaluation modes) and ``lit_seg.data`` (data sets, tasks); ``lit_seg.train`` (the LightningModule,
losses, metrics, fault tolerance, checkpoints); ``lit_seg.inference`` (``lit_seg.load``, predictions,
export, attention maps); ``lit_seg.api`` (composed configs, runs, run folders and records:
``api.fit``, ``api.validate``, ...); ``lit_seg.study`` (ablation, report, cost harness) and
``lit_seg.cli`` (the command).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"


def load(path, device: str = "cpu", **eval_settings):
    """A run folder or checkpoint -> :class:`lit_seg.inference.Segmenter` (``lit_seg.load(run)(image)``).

    Imported on use: ``import lit_seg`` stays free of torch."""
    from lit_seg.inference import load as _load

    return _load(path, device, **eval_settings)


# Modules that moved when lit_seg/ was grouped by layer. Run folders and checkpoints written before
# name classes by their old paths (config.yaml's class_path, pickled hyperparameters): those paths
# still import, as the module's new home.
MOVED_MODULES = {
    "lit_seg.module": "lit_seg.train.module",
    "lit_seg.losses": "lit_seg.train.losses",
    "lit_seg.metrics": "lit_seg.train.metrics",
    "lit_seg.optim": "lit_seg.train.optim",
    "lit_seg.callbacks": "lit_seg.api.callbacks",
    "lit_seg.train.callbacks": "lit_seg.api.callbacks",
    "lit_seg.fault_tolerance": "lit_seg.train.fault_tolerance",
    "lit_seg.flops": "lit_seg.train.flops",
    "lit_seg.checkpoints": "lit_seg.train.checkpoints",
    "lit_seg.run_lock": "lit_seg.api.run_lock",
    "lit_seg.console": "lit_seg.cli.console",
    "lit_seg.wandb_env": "lit_seg.api.wandb_env",
    "lit_seg.predict": "lit_seg.inference.predict",
    "lit_seg.export": "lit_seg.inference.export",
    "lit_seg.visualize": "lit_seg.inference.visualize",
    "lit_seg.query_dependence": "lit_seg.inference.query_dependence",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module) -> None:
        # The module is its new home, already executed; the import system has just given it the old
        # name's spec and loader: give its own back.
        own = importlib.util.spec_from_file_location(module.__name__, module.__file__)
        module.__spec__, module.__loader__ = own, own.loader


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
