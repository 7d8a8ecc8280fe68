"""One exception type per kind of user-facing failure.

Every message is a single line that names the file, line, key or value at fault and, where there is
one, the fix. The CLI prints ``lmforge: error: <message>`` and exits non-zero; a traceback is only
shown for bugs (anything that is not an ``LmforgeError``).
"""


class LmforgeError(Exception):
    """Base of all errors caused by the user's input rather than by a bug."""

    exit_code = 2


class ConfigError(LmforgeError):
    """A config file or override is wrong: unknown key, wrong type, bad value."""


class DataError(LmforgeError):
    """A data file is missing, malformed, or holds a row that cannot be used."""


class ModelError(LmforgeError):
    """A model cannot be found or loaded safely."""


class RunFolderError(LmforgeError):
    """The run folder is missing, incomplete, or holds a different run."""


class TrainingError(LmforgeError):
    """Training cannot go on (for example a non-finite loss)."""

    exit_code = 3


class MissingDependencyError(LmforgeError):
    """An optional package is needed for this feature and is not installed."""
