"""The record of each run in ``ingest_runs``.

It is written on its own autocommit connection, outside the load transaction, so a
load that fails or is rolled back still leaves a record that says why.
"""

import json
from dataclasses import dataclass, field

import psycopg2

from rates_core import db
from rates_core.logs import get_logger

from .s3source import ObjectInfo, ObjectRef

APPLICATION_NAME = "rates-ingest-runs"
log = get_logger(__name__)


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
    def __init__(self, dsn: str):
        self.dsn = dsn
        self.conn = db.connect(dsn, application_name=APPLICATION_NAME, autocommit=True)

    def start(self, ref: ObjectRef) -> int:
        with db.classified(), self.conn.cursor() as cur:
            cur.execute("INSERT INTO ingest_runs (bucket, key, version_id) VALUES (%s, %s, %s) RETURNING id",
                        (ref.bucket, ref.key, ref.version_id))
            return cur.fetchone()[0]

    def finish(self, run_id: int, outcome: Outcome) -> bool:
        """Record the outcome; on a lost connection try once more on a new one.

        Returns False if it could not be recorded (the run then stays 'running').
        """
        for attempt in (1, 2):
            try:
                if attempt == 2 or self.conn.closed:
                    self.close()
                    self.conn = db.connect(self.dsn, application_name=APPLICATION_NAME, autocommit=True)
                self._update(run_id, outcome)
                return True
            except Exception as exc:  # noqa: BLE001 - the outcome is logged whatever happens here
                log.warning("could not record the run's outcome", run_id=run_id, attempt=attempt, error=str(exc))
        return False

    def _update(self, run_id: int, outcome: Outcome) -> None:
        info = outcome.info
        with self.conn.cursor() as cur:
            cur.execute(
                """UPDATE ingest_runs
                   SET status = %s, rows = %s, bytes = %s, file_id = %s, error = %s, bad_rows = %s,
                       version_id = coalesce(%s, version_id), etag = %s, finished_at = now()
                   WHERE id = %s""",
                (outcome.status, outcome.rows, outcome.bytes, outcome.file_id, outcome.error,
                 json.dumps(outcome.bad_rows) if outcome.bad_rows else None,
                 info.version_id if info else None, info.etag if info else None, run_id))

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg2.Error:
            pass
