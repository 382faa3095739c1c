"""User-facing errors: the CLI prints these as one line, without a traceback."""


class ConfigError(ValueError):
    """A bad input the user can fix: the message names the cause and the fix."""
