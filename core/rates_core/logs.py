"""Structured JSON logging shared by every component."""

import logging
import sys

import structlog


# The levels that settings accept for LOG_LEVEL.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure(level: str = "INFO", **static) -> None:
    """Send JSON lines to stdout; ``static`` key/values go on every line."""
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=level.upper(), force=True)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if static:
        processors.append(lambda _logger, _name, event: {**static, **event})
    processors += [
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str):
    return structlog.get_logger(name)
