"""Structured JSON logging shared by every component."""

import io
import logging
import sys
from typing import TextIO

import structlog


# The levels that settings accept for LOG_LEVEL.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Libraries whose DEBUG lines print request headers, credentials included (botocore's
# session token, the Kubernetes client's bearer token): never below INFO.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "kubernetes")


def _stamp(static: dict) -> list:
    stamp = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    if static:
        stamp.append(lambda _logger, _name, event: {**static, **event})
    return stamp


def json_formatter(**static) -> logging.Formatter:
    """A ``logging`` formatter that writes the same JSON lines as our own loggers; also
    usable from a dictConfig (gunicorn's logconfig_dict) as ``{"()": json_formatter}``."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *_stamp(static)],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    )


def whole_lines(stream: TextIO) -> TextIO:
    """``stream``, or a text stream over its file that writes every line whole.

    Under PYTHONUNBUFFERED (our images set it) sys.stdout hands each line to its file
    descriptor in one write() and drops what a short write left out. A write to a full
    pipe that a signal interrupts is short: the line was cut there and the rest of it lost
    (a SIGTERM as the kubelet stops a pod, in the middle of a long line). A BufferedWriter
    writes on until the whole line is out.
    """
    if not isinstance(getattr(stream, "buffer", None), io.RawIOBase):
        return stream  # buffered already, or not a file (a test's capture)
    raw = io.FileIO(stream.fileno(), "wb", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding=stream.encoding, errors=stream.errors)


class StdoutHandler(logging.StreamHandler):
    """A handler that writes whole lines to stdout; gunicorn's logconfig_dict names it."""

    def __init__(self):
        super().__init__(whole_lines(sys.stdout))


def configure(level: str = "INFO", **static) -> None:
    """Send JSON lines to stdout; ``static`` key/values go on every line.

    Libraries that log through the standard ``logging`` module (botocore, kubernetes,
    yoyo) get the same JSON lines, so that every line a component writes can be parsed.
    """
    stamp = _stamp(static)
    handler = StdoutHandler()
    handler.setFormatter(json_formatter(**static))
    logging.basicConfig(handlers=[handler], level=level.upper(), force=True)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level.upper())))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *stamp,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # One write per line: print() writes the line and its newline apart, and a line of
        # the standard library's logging (its own lock) from another thread could land between.
        logger_factory=structlog.WriteLoggerFactory(handler.stream),
        cache_logger_on_first_use=False,
    )


def crashed(exc: BaseException, service: str, name: str) -> None:
    """Log an exception that escaped a program's main() as one JSON line with its
    traceback: Python's own, in plain text on stderr, would be split by a log pipeline into
    an event per line."""
    configure(service=service)
    get_logger(name).exception("unexpected error", error=f"{type(exc).__name__}: {exc}")


def get_logger(name: str):
    return structlog.get_logger(name)


def bound(**fields):
    """A context manager: every line logged inside it, on this thread, carries ``fields``."""
    return structlog.contextvars.bound_contextvars(**fields)
