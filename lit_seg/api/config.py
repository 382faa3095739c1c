"""Experiment files composed, mmsegmentation-style: ``_base_`` pieces merged under a file's own keys.

An experiment names its pieces (``_base_: [../_base_/runtime.yaml, ...]``, paths relative to the
file) and states only what differs; the command line gets one ``--config`` per piece, in order, so
jsonargparse merges them as it merges repeated ``--config`` options. :func:`merged_config` is the
same merge in Python, for tools and tests that read an experiment without running it.
"""

from collections.abc import Sequence
from pathlib import Path

import yaml

from lit_seg.api.run_folder import expand_run_folder_ckpt, resume_checkpoint, resume_config
from lit_seg.errors import ConfigError


def expand_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[str]:
    """``--config`` values for ``path``: its ``_base_`` files first (recursively), then its own keys.

    ``_base_`` (a path or a list of paths, relative to the including file) lets an experiment
    YAML state only what differs from a shared base. The including file's own keys are passed
    as a YAML string with an ``experiment`` key (the file's stem) added unless it sets one.
    """
    if "\n" in str(path):
        # Inline YAML, as this function writes it: Lightning's DDP launcher starts each process
        # with the parent's (already expanded) command line.
        return [str(path)]
    path = Path(path)
    try:
        # Resolved, so that a cycle written through `../` or a symlink is seen as one.
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"cannot read config file {path}: {getattr(err, 'strerror', None) or err}") from err
    if resolved in _seen:
        raise ConfigError(f"config {path} includes itself through _base_ (a cycle: "
                          f"{' -> '.join(p.name for p in (*_seen, resolved))}); remove one of those _base_ entries")
    try:
        text = path.read_text()
        content = yaml.safe_load(text)
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".replace("\n", " ")) from err
    content = {} if content is None else content
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} holds a YAML {type(content).__name__}, not a mapping of settings: "
                          f"write `key: value` lines (model:, data:, trainer: ...), as "
                          f"experiments/_base_/runtime.yaml does")
    if "_base_" not in content:
        return [str(path)]
    bases = content.pop("_base_")
    if isinstance(bases, str):
        bases = [bases]
    if not bases or not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"config file {path}: _base_ must name a file or a list of files (relative to {path.parent}),"
                          f" e.g. `_base_: base.yaml`; got {bases!r}; give the file or remove the _base_ line")
    expanded: list[str] = []
    for base in bases:
        expanded += expand_bases(path.parent / base, _seen + (resolved,))
    content.setdefault("experiment", path.stem)
    return expanded + [yaml.safe_dump(content, sort_keys=False)]


def merged_config(*paths: str | Path) -> dict:
    """What an experiment file states, its ``_base_`` files merged in (later files win); with
    several files, each laid over the ones before, as repeated ``--config`` options are.

    The rules are the CLI's: nested keys merge, lists are replaced, and ``init_args`` are merged
    key by key, since jsonargparse keeps a base's init_args that a new ``class_path`` accepts
    (the base's head ``channels`` carries over to every head). Defaults the file does not state
    are not included: ``--print_config`` shows the complete configuration.
    """
    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merged: dict = {}
    for part in [part for path in paths for part in expand_bases(path)]:
        # expand_bases gives file paths and, for files with a `_base_`, their own keys as YAML text.
        content = yaml.safe_load(part if "\n" in part else Path(part).read_text()) or {}
        if isinstance(content, dict):
            merge(merged, content)
    return merged


def expand_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = expand_run_folder_ckpt(list(argv))
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-c", "--config") and i + 1 < len(args):
            out += [x for cfg in expand_bases(args[i + 1]) for x in (arg, cfg)]
            i += 2
            continue
        if arg == "--resume" and i + 1 < len(args) or arg.startswith("--resume="):
            # A run folder: its saved config first (later arguments override it), the folder itself,
            # and its newest last checkpoint (a later --ckpt_path overrides that).
            folder = args[i + 1] if arg == "--resume" else arg.split("=", 1)[1]
            out += ["--config", str(resume_config(folder)), "--resume", folder,
                    "--ckpt_path", str(resume_checkpoint(folder))]
            i += 2 if arg == "--resume" else 1
            continue
        if arg.startswith("--config="):
            out += [x for cfg in expand_bases(arg.split("=", 1)[1]) for x in ("--config", cfg)]
        else:
            out.append(arg)
        i += 1
    return out
