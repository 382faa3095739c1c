"""W&B's mode, checked before a run starts: offline unless asked, and online only with a key and
a reachable server (otherwise the W&B client retries for minutes before training begins);
inside `wandb agent`, the sweep's run id.
"""

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from lit_seg.api.environment import process_rank
from lit_seg.errors import ConfigError


def sweep_agent_run_id() -> str | None:
    """The run id that `wandb agent` gives the process it starts (None outside a sweep)."""
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        return os.environ["WANDB_RUN_ID"]
    return None


def wandb_online(args) -> bool:
    """Whether a WandbLogger with these init args logs online (its own mode, else WANDB_MODE)."""
    mode = args.get("mode") or os.environ.get("WANDB_MODE", "online")
    return not args.get("offline") and mode in ("online", "run")


def check_wandb_mode() -> None:
    """Sets WANDB_MODE (offline unless set); online, a ConfigError without a key or a server."""
    # Offline by default; a `wandb agent` child (WANDB_SWEEP_ID set) reports to its sweep online.
    os.environ.setdefault("WANDB_MODE", "online" if os.environ.get("WANDB_SWEEP_ID") else "offline")
    if os.environ["WANDB_MODE"] not in ("online", "run"):
        return
    has_netrc = (Path.home() / ".netrc").is_file() and "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    if not os.environ.get("WANDB_API_KEY") and not has_netrc:
        raise ConfigError(
            "WANDB_MODE=online needs a W&B API key: set WANDB_API_KEY (or run `wandb login`), "
            "or log offline with WANDB_MODE=offline and upload later with `wandb sync`"
        )
    check_wandb_reachable()


def check_wandb_reachable(timeout: float = 3.0) -> None:
    """Online W&B without a network would retry for minutes before training starts: fail at once instead."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"WANDB_MODE=online but the W&B server {host}:{port} cannot be reached from here "
            f"({err.strerror or type(err).__name__}); log offline with WANDB_MODE=offline and upload later "
            f"with `wandb sync runs/<experiment>/<run>/wandb/offline-run-*`") from None


def start_wandb_service_early(argv: Sequence[str]) -> threading.Thread | None:
    """Start W&B's service process in the background while the CLI parses and builds the model.

    ``wandb.init`` starts that process (``wandb-core``) and waits for it; started first, it overlaps
    the CLI's parse and model build (0.26 s less start-up, README "Cost of each operator"; ``wandb.setup``,
    thread-safe: ``wandb.init`` later waits on the same lock, then finds the service running).
    Only for a run that will log to W&B here: a Lightning subcommand, a config naming the
    WandbLogger, W&B not disabled, rank zero (the other DDP ranks do not log). Any failure is left
    for ``wandb.init`` to report.
    """
    if not argv or argv[0] not in ("fit", "validate", "test", "predict"):
        return None
    if os.environ.get("WANDB_MODE") == "disabled" or os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true"):
        return None
    if process_rank() != 0 or not any("WandbLogger" in _config_text(arg) for arg in argv):
        return None

    def setup() -> None:
        try:
            import wandb

            wandb.setup()
        except Exception:  # noqa: BLE001 - wandb.init starts it again and says what is wrong
            pass

    thread = threading.Thread(target=setup, name="lit-seg-wandb-service", daemon=True)
    thread.start()
    return thread


def _config_text(arg: str) -> str:
    """A command-line value as text: a config part's YAML (inline, as expand_bases gives it, or its file)."""
    if "\n" in arg or "WandbLogger" in arg:
        return arg
    if arg.endswith((".yaml", ".yml")):
        try:
            return Path(arg).read_text()
        except OSError:
            return ""
    return ""
