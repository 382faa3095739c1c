"""User-facing errors: the CLI prints these as one line, without a traceback."""


class ConfigError(ValueError):
    """A bad input the user can fix: the message names the cause and the fix."""


class RunError(RuntimeError):
    """A run stopped by something outside the code (a full disk, a diverged loss); the message says
    what happened, what was kept and how to go on. The CLI prints it as one line, exit status 1."""
