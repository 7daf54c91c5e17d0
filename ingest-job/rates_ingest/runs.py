"""The record of each run in ``ingest_runs``.

It is written on its own autocommit connection, outside the load transaction, so a
load that fails or is rolled back still leaves a record that says why.

A run that is killed (SIGKILL, a lost node) cannot record its end. So each run holds a
session advisory lock on its id for as long as its process lives, and every new run
first marks as failed the runs still recorded as running whose lock nobody holds.
"""

import itertools
import json
import time
from dataclasses import dataclass, field

import psycopg2

from rates_core import db
from rates_core.errors import TemporaryError
from rates_core.logs import get_logger

from .s3source import ObjectInfo, ObjectRef
from .termination import termination

APPLICATION_NAME = "rates-ingest-runs"
# The first key of the two-key advisory locks on run ids (a space apart from the one-key
# locks that loads take on their object).
RUN_LOCK_CLASS = 7_201_601
# If the process dies without closing its connections (SIGKILL) while one of them waits in
# a statement, the server ends that session within this time instead of after the
# statement, which could be long: a run's connection holds the run's advisory lock, and a
# sweeping run's also the lock of the run it sweeps.
CLIENT_CHECK_MS = 1000
ABANDONED = ("abandoned: the run ended without recording an outcome (its process was killed or its node "
             "lost, or the database stayed out of reach while it tried; the Job's log says which)")
# A run that lost the database retries its record this long: a server that crashed (a
# full disk) or restarted takes seconds to take connections again.
RECORD_FOR_S = 10.0
log = get_logger(__name__)


def _lock_key(run_id: int) -> int:
    # The two-key form takes integers and run ids are bigint: ids 2^31 - 1 apart share a
    # lock, which could only delay the sweep of one of them.
    return run_id % 2_147_483_647


@dataclass
class Outcome:
    status: str  # loaded, already_loaded, superseded, rejected, failed
    rows: int | None = None
    bytes: int | None = None
    file_id: int | None = None
    info: ObjectInfo | None = None
    error: str | None = None
    bad_rows: list[dict] = field(default_factory=list)


class RunLog:
    def __init__(self, dsn: str, password: db.PasswordSource = None):
        self.dsn = dsn
        self.password = password
        self.conn = self._connect()

    def start(self, ref: ObjectRef, uploaded_by: str | None = None) -> int:
        """Record the run as running; its id. ``uploaded_by``: who uploaded the file, as S3's
        event names them (None when the event did not say)."""
        try:
            self.sweep()
        except TemporaryError as exc:
            # Tidying other runs' records must not stop this run; the next run tries again.
            log.warning("could not check for abandoned runs", error=str(exc))
        with db.classified(), self.conn.cursor() as cur:
            # The lock is taken before the row exists, so no sweep sees it running unlocked.
            cur.execute("SELECT nextval(pg_get_serial_sequence('ingest_runs', 'id'))")
            run_id = cur.fetchone()[0]
            cur.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, _lock_key(run_id)))
            cur.execute("""INSERT INTO ingest_runs (id, bucket, key, version_id, uploaded_by)
                           VALUES (%s, %s, %s, %s, %s)""", (run_id, ref.bucket, ref.key, ref.version_id, uploaded_by))
            return run_id

    def sweep(self) -> list[int]:
        """Mark as failed the runs recorded as running whose process is gone; their ids."""
        swept = []
        with db.classified(), self.conn.cursor() as cur:
            cur.execute("SELECT id FROM ingest_runs WHERE status = 'running' ORDER BY id")
            for (run_id,) in cur.fetchall():
                cur.execute("SELECT pg_try_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, _lock_key(run_id)))
                if not cur.fetchone()[0]:
                    continue  # its process is alive
                try:
                    cur.execute("""UPDATE ingest_runs SET status = 'failed', error = %(error)s, finished_at = now()
                                   WHERE id = %(id)s AND status = 'running'""", {"id": run_id, "error": ABANDONED})
                    if cur.rowcount:
                        swept.append(run_id)
                finally:
                    cur.execute("SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, _lock_key(run_id)))
        if swept:
            log.warning("marked abandoned runs as failed", run_ids=swept)
        return swept

    def finish(self, run_id: int, outcome: Outcome) -> bool:
        """Record the outcome; on a lost connection try again on new ones for RECORD_FOR_S.

        Returns False if it could not be recorded (the run then stays 'running').
        """
        give_up = time.monotonic() + RECORD_FOR_S
        for attempt in itertools.count(1):
            try:
                if attempt > 1:
                    time.sleep(min(2 ** (attempt - 2) / 2, max(0.0, give_up - time.monotonic())))
                if attempt > 1 or self.conn.closed:
                    self.close()
                    self.conn = self._connect()
                self._update(run_id, outcome)
                return True
            except Exception as exc:  # noqa: BLE001 - the outcome is logged whatever happens here
                log.warning("could not record the run's outcome", run_id=run_id, attempt=attempt, error=str(exc))
            # A terminated run has its grace period to exit in; the next run's sweep records it.
            if termination.received or time.monotonic() >= give_up:
                return False

    def _connect(self):
        return db.connect(self.dsn, application_name=APPLICATION_NAME, autocommit=True, password=self.password,
                          client_check_interval_ms=CLIENT_CHECK_MS)

    def _update(self, run_id: int, outcome: Outcome) -> None:
        with self.conn.cursor() as cur:
            write_outcome(cur, run_id, outcome, keep_committed=True)

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg2.Error:
            pass


# What the load's own transaction records as it commits (loader.load).
COMMITTED = ("loaded", "already_loaded", "superseded")


def write_outcome(cur, run_id: int, outcome: Outcome, keep_committed: bool = False) -> None:
    """Record ``outcome`` as the run's end, on ``cur``'s connection and transaction.

    ``keep_committed`` leaves an outcome that the load committed in place: a COMMIT whose
    answer was lost fails the job (it cannot know), but the record of what it committed
    must not then say 'failed'.
    """
    info = outcome.info
    # clock_timestamp(): inside the load's transaction now() would be when the load began.
    cur.execute(
        """UPDATE ingest_runs
           SET status = %s, rows = %s, bytes = %s, file_id = %s, error = %s, bad_rows = %s,
               version_id = coalesce(%s, version_id), etag = %s, finished_at = clock_timestamp()
           WHERE id = %s AND NOT (%s AND status = ANY(%s))""",
        (outcome.status, outcome.rows, outcome.bytes, outcome.file_id, _storable(outcome.error),
         json.dumps([{k: _storable(v) for k, v in row.items()} for row in outcome.bad_rows])
         if outcome.bad_rows else None,
         info.version_id if info else None, info.etag if info else None, run_id, keep_committed, list(COMMITTED)))


def _storable(value):
    """``value`` with NUL escaped, if it is a string: a file's text may hold NUL, which
    PostgreSQL's text and jsonb cannot."""
    return value.replace("\x00", "\\x00") if isinstance(value, str) else value
