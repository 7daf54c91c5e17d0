"""``ratesctl withdraw``: take the prices of a key's loaded file out, as the schema's owner.

Deleting an object takes nothing out (the uploads queue gets ObjectCreated events only),
and no upload can empty a key, so a file that should never have loaded (the wrong month,
a copy under a second key) stays counted until someone withdraws it. The file stays its
key's current file, marked withdrawn (migration 0017): events for it or for an older
version are still skipped, and the key's next upload loads as usual.
"""

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import psycopg2.extensions

from rates_core import db
from rates_core.errors import PermanentError
from rates_ingest.loader import try_lock_key

from .terminal import shown

APPLICATION_NAME = "ratesctl-withdraw"
# Asked for again and again rather than waited for in the server: psycopg2 holds a Ctrl-C
# back until a blocking statement returns, here when the load commits.
LOCK_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LoadedFile:
    id: int
    version: str  # the version id, or ETag and upload time without versioning (as ingest_files has it)
    rows: int
    loaded_at: datetime
    withdrawn_at: datetime | None


def loaded_file(conn, bucket: str, key: str) -> LoadedFile | None:
    """The key's current file, withdrawn or not; None if the key has none."""
    with db.classified():
        with conn.cursor() as cur:
            found = _current(cur, bucket, key)
        # Ended, so that the caller may withdraw next on this connection (which sets its
        # isolation level, refused inside a transaction) and holds no snapshot meanwhile.
        conn.rollback()
    return found


def withdraw(conn, bucket: str, key: str, version: str, reason: str,
             waiting: Callable[[], None] = lambda: None,
             committing: Callable[[], None] = lambda: None) -> tuple[LoadedFile, int | None]:
    """Delete the prices of the key's current file if it is ``version``, and record why.

    Returns the file and the prices deleted (None if it was withdrawn before and holds
    none). The version is asked for so that a file loaded since the caller looked is never
    the one withdrawn. ``waiting`` is called if a load of the key holds its lock,
    ``committing`` just before the commit, from which the withdrawal cannot be stopped.
    """
    # Whatever the database's default: under repeatable read the snapshot would predate
    # the wait for the key's lock, and a load committed meanwhile would fail the delete.
    conn.isolation_level = psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED
    # On any error the caller closes the connection, which rolls the whole withdrawal back.
    with db.classified():
        with conn.cursor() as cur:
            # A load of the key in progress finishes first; the file it loads is then current.
            if not try_lock_key(cur, bucket, key):
                waiting()
                while not try_lock_key(cur, bucket, key):
                    time.sleep(LOCK_POLL_SECONDS)
            found = _current(cur, bucket, key)
            _check(found, bucket, key, version)
            # Also when marked withdrawn before: the mark alone (which the ingest user may
            # write) must not keep prices in.
            cur.execute("DELETE FROM prices WHERE source_id = %s", (found.id,))
            deleted = cur.rowcount
            if found.withdrawn_at and not deleted:
                return found, None
            # The prices triggers took the file's rows out of the totals and bumped data_version.
            cur.execute("""UPDATE ingest_files SET withdrawn_at = coalesce(withdrawn_at, now()), withdrawn_reason = %s
                           WHERE id = %s""", (reason, found.id))
            cur.execute("""INSERT INTO ingest_runs (bucket, key, version_id, etag, status, file_id, rows,
                                                   finished_at, error)
                           VALUES (%s, %s, %s, %s, 'withdrawn', %s, %s, now(), %s)""",
                        (bucket, key, *_run_ids(found.version), found.id, deleted, reason))
        committing()
        conn.commit()
    return found, deleted


def _run_ids(version: str) -> tuple[str | None, str | None]:
    """(version_id, etag) for the run's record, as a load's run names its object: a file's
    version is its version id, or, without versioning, its quoted ETag, "@" and upload time."""
    if version.startswith('"') and "@" in version:
        return None, version.rpartition("@")[0]
    return version, None


def _check(found: LoadedFile | None, bucket: str, key: str, version: str) -> None:
    if found is None:
        raise PermanentError(f"no file is loaded for s3://{bucket}/{shown(key)}")
    if found.version != version:
        raise PermanentError(f"the file loaded for s3://{bucket}/{shown(key)} is version {found.version}, "
                             f"not {version} (a newer upload has loaded since?): nothing withdrawn; look again")


def _current(cur, bucket: str, key: str) -> LoadedFile | None:
    cur.execute("""SELECT id, version, rows, loaded_at, withdrawn_at FROM ingest_files
                   WHERE bucket = %s AND key = %s AND replaced_at IS NULL""", (bucket, key))
    row = cur.fetchone()
    return LoadedFile(*row) if row else None
