"""User-facing errors: the CLI prints these as one line, without a traceback."""


class ConfigError(ValueError):
    """A bad input the user can fix: the message names the cause and the fix."""


class RunError(RuntimeError):
    """A run stopped by something outside the code (a full disk, a diverged loss); the message says
    what happened, what was kept and how to go on. The CLI prints it as one line, exit status 1."""


class RunInterrupted(RunError):
    """A fit stopped by Ctrl-C or SIGTERM after saving ``last.ckpt`` (``signal``: which one; None
    when it stopped before training started, with nothing saved); ``lit-seg fit --resume`` goes on."""

    def __init__(self, message: str, signal: int | None) -> None:
        super().__init__(message)
        self.signal = signal


def one_line(err: BaseException) -> str:
    """An error's message in one line; for one re-raised from a DataLoader worker (which carries the
    worker's traceback in its text), the original message only."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.startswith(("lit_seg.errors.", "ConfigError", "RunError")) else last
    return " ".join(text.split())
