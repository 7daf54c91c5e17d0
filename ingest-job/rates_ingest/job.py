"""One run of the job, from settings to exit code.

Exit codes (the Helm chart's podFailurePolicy and the controller rely on them):
  0  loaded, or nothing to do (already loaded, or an older version than the one loaded)
  2  the file itself is invalid or gone: retrying cannot help
  1  anything else; it may pass on retry (S3 or the database unavailable, timeouts)
"""

import time

from rates_core import db
from rates_core.errors import EXIT_OK, EXIT_PERMANENT, EXIT_TEMPORARY, PermanentError, TemporaryError
from rates_core.logs import get_logger
from rates_core.rds_auth import password_source

from . import formats, loader, s3source
from .runs import CLIENT_CHECK_MS, Outcome, RunLog
from .settings import Settings
from .termination import termination

# The job's names for them, as the README and the controller speak of them.
EXIT_RETRY, EXIT_REJECTED = EXIT_TEMPORARY, EXIT_PERMANENT
# A server busy with I/O may stop reading a COPY for a while; only a much longer silence
# means the host is gone (see rates_core.db).
LOAD_TCP_USER_TIMEOUT_MS = 120_000
BRIEF_ERROR_CHARS = 1000
log = get_logger("rates_ingest")


def run(settings: Settings, s3=None) -> int:
    ref = s3source.ObjectRef(settings.bucket, settings.key, settings.version_id)
    bound = log.bind(bucket=ref.bucket, key=ref.key, version_id=ref.version_id)
    started = time.monotonic()
    password = password_source(settings.database_url, settings.database_iam_auth)
    try:
        runs = RunLog(settings.database_url, password)
        run_id = runs.start(ref, settings.uploaded_by)
    except (TemporaryError, PermanentError) as exc:
        # Nowhere to record it: the log line is the only trace, so it has the fields of the
        # last line of a recorded run (README, "Logs"). A retry may find the database.
        bound.error("ingest failed before it could be recorded", status="failed", rows=None, bytes=None,
                    error=_brief(str(exc), recorded=False), recorded=False, exit_code=EXIT_RETRY,
                    duration_s=round(time.monotonic() - started, 3))
        return EXIT_RETRY
    bound = bound.bind(run_id=run_id)
    seen: dict = {}
    try:
        termination.check()  # the sweep in runs.start() tolerates errors, the signal's among them
        outcome = _ingest(settings, ref, s3, bound, seen, run_id, password)
    except BaseException as exc:  # noqa: BLE001 - every ending is recorded, then mapped to an exit code
        outcome = _failure(exc, bound)
        outcome.info = seen.get("info")
        outcome.bytes = seen["download"].bytes if "download" in seen else None
    # The outcome is known: a signal from here on must not turn a rejected file's exit 2 into 1.
    termination.finishing()
    recorded = runs.finish(run_id, outcome)
    runs.close()
    code = _exit_code(outcome)
    level = bound.info if code == EXIT_OK else bound.error
    noted = {"signal": termination.received} if termination.received else {}
    level("ingest finished", status=outcome.status, rows=outcome.rows, bytes=outcome.bytes,
          error=_brief(outcome.error), recorded=recorded, exit_code=code,
          duration_s=round(time.monotonic() - started, 3), **noted)
    return code


def _ingest(settings: Settings, ref: s3source.ObjectRef, s3, log, seen: dict, run_id: int,
            password: db.PasswordSource) -> Outcome:
    """Load the object; ``seen`` keeps what is known so far for the record of a failure."""
    fmt = formats.detect(ref.key)
    s3 = s3 or s3source.client(settings.s3_retry_mode, settings.s3_max_attempts)
    termination.stops_retries(s3)
    info = seen["info"] = s3source.head(s3, ref)
    termination.check()  # botocore retries a request that the signal cut short
    log.info("ingest started", etag=info.etag, object_version=info.version_id, size=info.size, format=fmt.kind,
             gzip=fmt.gzip)
    if info.size is not None and info.size > settings.max_file_bytes:
        # Before a byte of it reaches COPY. A gzip object too: a price file inflates, and
        # one of empty gzip members inflates to nearly nothing, so the cap on what comes
        # out of it would let its whole download run (and hold its slot) to the deadline.
        raise formats.FileTooLarge(settings.max_file_bytes, compressed=fmt.gzip)
    # If this process dies without closing the connection (SIGKILL), the server notices
    # within a second instead of finishing the statement first, holding its locks.
    conn = db.connect(settings.database_url, application_name=loader.APPLICATION_NAME,
                      client_check_interval_ms=CLIENT_CHECK_MS, tcp_user_timeout_ms=LOAD_TCP_USER_TIMEOUT_MS,
                      password=password)
    try:
        download = seen["download"] = s3source.Download(s3, ref, info, log)
        with termination.cancels(conn):
            return loader.load(conn, ref, download, fmt, log, work_mem=settings.work_mem, run_id=run_id,
                               max_file_bytes=settings.max_file_bytes)
    finally:
        conn.close()


def _brief(error: str | None, recorded: bool = True) -> str | None:
    # The controller quotes this line's error when it sets the file aside, from the pod's
    # termination message: the log's last 2 KiB. A longer line would lose its start there,
    # and the reason with it. The whole error is in the run's record, if there is one.
    if error is None or len(error) <= BRIEF_ERROR_CHARS:
        return error
    return f"{error[:BRIEF_ERROR_CHARS]}… (cut{'; the whole error is in ingest_runs' if recorded else ''})"


def _failure(exc: BaseException, log) -> Outcome:
    if termination.received:
        # Terminated runs are retried, whatever error the termination surfaced as.
        error = f"terminated by signal {termination.received}"
        return Outcome("failed", error=error if error in str(exc) else f"{error} ({type(exc).__name__}: {exc})")
    if isinstance(exc, formats.FileRejected):
        return Outcome("rejected", error=str(exc), bad_rows=exc.bad_rows)
    if isinstance(exc, (TemporaryError, PermanentError)):
        log.debug("ingest error", exc_info=exc)
    else:
        # Not an error the job knows (S3 or the database down): a bug, most likely, and its
        # record and last line say only "KeyError: 'x'". The traceback goes on a line of its
        # own, before the last one, which the controller reads as the reason.
        log.error("unexpected error", exc_info=exc)
    return Outcome("failed", error=f"{type(exc).__name__}: {exc}")


def _exit_code(outcome: Outcome) -> int:
    if outcome.status == "rejected":
        return EXIT_REJECTED
    if outcome.status == "failed":
        return EXIT_RETRY
    return EXIT_OK
