"""Errors that say whether a retry can help.

Library errors are mapped to these once, at the boundary (see ``db.classify``),
so callers decide on retries and exit codes without knowing the library.
"""


# Exit codes of every program of the platform, one meaning each: the ingest Job's
# podFailurePolicy, the controller and the migration hook act on them.
EXIT_OK = 0
EXIT_TEMPORARY = 1  # a retry may help
EXIT_PERMANENT = 2  # it cannot (for the ingest job: the file is invalid or gone)


class RatesError(Exception):
    """Base class for the platform's own errors."""


class PermanentError(RatesError):
    """Retrying the same operation cannot succeed (bad input, missing object)."""


class TemporaryError(RatesError):
    """The operation may succeed if retried (database down, timeout, conflict)."""
