"""One exception root whose messages are written for people, and its few subclasses."""

from __future__ import annotations


class BastionError(Exception):
    """Root of every error Bastion raises on purpose; the CLI prints :meth:`diagnostics` and exits 2."""

    def diagnostics(self) -> str:
        """Return the one-line message shown to a person."""
        return str(self) or self.__class__.__name__


class UsageError(BastionError):
    """The command line itself is wrong (a missing path, a bad flag value)."""


class ConfigError(BastionError):
    """A configuration, suppression or baseline file is invalid."""


class InputError(BastionError):
    """An input file cannot be read or is not what the command needs."""


class LimitExceeded(BastionError):
    """A hostile-input limit (depth, size, opcode count) was reached while analysing a file."""


class MalformedInput(BastionError):
    """A file's bytes do not follow their format (truncated, corrupt or deliberately broken)."""
