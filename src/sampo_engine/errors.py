"""User-facing errors. The CLI prints their message (no traceback) and exits with status 2;
the napari plugin shows it as a notification. Every message names the problem and the remedy."""


class SampoError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class ConfigError(SampoError, ValueError):
    """A configuration the job refuses before starting."""


class DataError(SampoError):
    """Unreadable, missing or inconsistent data."""


class CheckpointError(SampoError):
    """A model checkpoint or adapter bundle that cannot be used."""


class Cancelled(SampoError):
    """The user cancelled a long computation (a GUI's Cancel button, a stop flag)."""
