"""Errors a user can act on: each names the problem and the fix."""


class ZeropointError(Exception):
    """Base for errors shown to users as a message, not a traceback."""

    exit_code = 2


class ConfigError(ZeropointError):
    """A config file or override is wrong (unknown key, wrong type, missing file)."""


class ScopeError(ZeropointError):
    """Compute refused: a mock flag is set or the device is simulated."""
