"""Errors that say whether a retry can help.

Library errors are mapped to these once, at the boundary (see ``db.classify``),
so callers decide on retries and exit codes without knowing the library.
"""


class RatesError(Exception):
    """Base class for the platform's own errors."""


class PermanentError(RatesError):
    """Retrying the same operation cannot succeed (bad input, missing object)."""


class TemporaryError(RatesError):
    """The operation may succeed if retried (database down, timeout, conflict)."""
