"""The load transaction: lock the key, decide, COPY, then delete the rows it replaces.

The file is downloaded and validated in a thread a few chunks ahead of the COPY, so
that the job's work overlaps the server's.

Everything happens in one transaction, so a file's rows (and the derived totals that
the triggers on prices keep) appear all at once or not at all.
"""

from typing import Iterator

import psycopg2

from rates_core import db
from rates_core.errors import TemporaryError

from . import formats
from .readahead import read_ahead
from .runs import Outcome, write_outcome
from .s3source import CHUNK_BYTES, Download, ObjectRef
from .termination import termination

APPLICATION_NAME = "rates-ingest"
# Download and validation run this many chunks (of about CHUNK_BYTES) ahead of COPY.
READ_AHEAD_CHUNKS = 4
COPY_SQL = "COPY prices (orig_code, dest_code, day, price, source_id) FROM STDIN (FORMAT csv)"


class CopyStream:
    """A file-like object for copy_expert whose read() returns the next validated chunk."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            for chunk in self._chunks:
                if chunk:  # an empty chunk would tell psycopg2 the data has ended
                    return chunk
            return b""
        except BaseException as exc:
            # psycopg2 aborts the COPY but reports only "error in .read() call"; keep the cause.
            self.error = exc
            raise


def load(conn, ref: ObjectRef, download: Download, fmt: formats.Format, log, *, work_mem: str,
         run_id: int, max_file_bytes: int = formats.DEFAULT_MAX_FILE_BYTES) -> Outcome:
    """Run the whole load in one transaction on ``conn``; roll back on any error."""
    # Whatever the database's default: the key's lock is taken first and what it guards
    # read after it (see _load), and the totals are updated after the COPY. Under repeatable
    # read the snapshot would predate both, and every load that committed meanwhile would
    # fail this one's update of the totals.
    conn.isolation_level = psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED
    try:
        with db.classified():
            with conn.cursor() as cur:
                cur.execute("SET LOCAL work_mem = %s", (work_mem,))
            outcome = _load(conn, ref, download, fmt, log, max_file_bytes)
            with conn.cursor() as cur:
                # Committed with the load: if the run's own connection cannot record the end
                # afterwards, the record still says what happened (and no sweep calls it abandoned).
                write_outcome(cur, run_id, outcome)
            termination.finishing()
            conn.commit()
            return outcome
    finally:
        if not conn.closed:
            try:
                conn.rollback()
            except psycopg2.Error:
                pass


def _load(conn, ref: ObjectRef, download: Download, fmt: formats.Format, log, max_file_bytes: int) -> Outcome:
    info = download.info
    with conn.cursor() as cur:
        # Taken before looking: of two runs for one key, the second waits, then sees the first's rows.
        lock_key(cur, ref.bucket, ref.key)
        skipped = _skip(cur, ref, download)
        if skipped:
            return skipped
        cur.execute("SAVEPOINT before_load")  # undone whole for a withdrawn file's bytes (below)
        retired = _retire_current(cur, ref)
        cur.execute("""INSERT INTO ingest_files (bucket, key, version, last_modified, rows, bytes)
                       VALUES (%s, %s, %s, %s, 0, 0) RETURNING id""",
                    (ref.bucket, ref.key, info.identity, info.last_modified))
        file_id = cur.fetchone()[0]
        # Held until commit (0021): a port deleted meanwhile would leave rows counted nowhere.
        cur.execute("SELECT rates_ports_for_load()")
        parser = formats.parser_for(fmt, formats.Rules(code for (code,) in cur), file_id, max_file_bytes)
        termination.check()  # _skip may have asked S3, whose client retries what a signal cuts short
        _copy(cur, parser, download)
        withdrawn = _withdrawn_twin(cur, ref, download)
        if withdrawn:
            cur.execute("ROLLBACK TO SAVEPOINT before_load")
            return _withdrawn_again(cur, ref, download, *withdrawn)
        # The replaced file's rows go after the COPY: deleting them takes the totals' lock
        # (data_version's row) until commit, and taken before the COPY it would make
        # replacement loads wait for each other's whole COPY instead of only its end.
        replaced = _delete_prices(cur, retired) if retired else None
        cur.execute("UPDATE ingest_files SET rows = %s, bytes = %s, sha256 = %s WHERE id = %s",
                    (parser.rows, download.bytes, download.sha256, file_id))
        twin = _loaded_elsewhere(cur, ref, download, file_id)
    log.info("file copied", file_id=file_id, rows=parser.rows, bytes=download.bytes, replaced=replaced)
    note = None
    if twin:
        note = (f"the same file ({download.bytes} bytes) is also loaded as s3://{ref.bucket}/{twin}, so its "
                "prices count twice: a move, rename or copy within the prefix loads a file again")
        log.warning("file loaded under two keys", other_key=twin)
    return Outcome("loaded", rows=parser.rows, bytes=download.bytes, file_id=file_id, info=info, error=note)


def lock_key(cur, bucket: str, key: str) -> None:
    """Take the key's lock until the transaction ends: whatever changes which of the key's
    files counts (a load, a withdrawal) holds it."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{bucket}/{key}",))


def try_lock_key(cur, bucket: str, key: str) -> bool:
    """Take the key's lock if it is free; whether it was."""
    cur.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (f"{bucket}/{key}",))
    return cur.fetchone()[0]


def _loaded_elsewhere(cur, ref: ObjectRef, download: Download, file_id: int) -> str | None:
    """The key of a file with the same bytes loaded under another key, if any.

    Each key stays its own file's truth (a copy loads), so this only tells: skipping a copy
    would lose its prices once the other key got a new file, and which of two keys holding
    the same bytes should count them is for a person to say.
    """
    cur.execute("""SELECT key FROM ingest_files
                   WHERE bucket = %s AND sha256 = %s AND replaced_at IS NULL AND id <> %s
                     AND withdrawn_at IS NULL
                   ORDER BY id LIMIT 1""", (ref.bucket, download.sha256, file_id))
    row = cur.fetchone()
    return row[0] if row else None


def _withdrawn_twin(cur, ref: ObjectRef, download: Download) -> tuple | None:
    """(version, withdrawn_at, reason) of a file of the key with these very bytes whose
    prices were withdrawn, if any. A copy of an object onto itself (an edit of its storage
    class, encryption or metadata in the S3 console, a Batch Operations re-encryption) is a
    new version with an ObjectCreated event, and so is the console's restore of an older
    version: either would otherwise bring withdrawn prices back unnoticed. (Files loaded
    before 0016 have no hash, and are not found.)"""
    # The file whose prices were withdrawn (it had rows), before a copy marked withdrawn for it.
    cur.execute("""SELECT version, withdrawn_at, withdrawn_reason FROM ingest_files
                   WHERE bucket = %s AND key = %s AND withdrawn_at IS NOT NULL AND sha256 = %s
                   ORDER BY rows = 0, id DESC LIMIT 1""", (ref.bucket, ref.key, download.sha256))
    return cur.fetchone()


def _withdrawn_again(cur, ref: ObjectRef, download: Download, version: str, withdrawn_at,
                     reason: str | None) -> Outcome:
    """Make the upload the key's file, as any upload is, but withdrawn as its twin was, and
    without prices: it is what S3 holds under the key now (so reconcile finds nothing to
    send), and the prices of the file it replaces go, as a replacement's do."""
    info = download.info
    retired = _retire_current(cur, ref)
    # Withdrawn now, for the reason its twin was: what a later look at the key shows.
    cur.execute("""INSERT INTO ingest_files (bucket, key, version, last_modified, rows, bytes, sha256,
                                             withdrawn_at, withdrawn_reason)
                   VALUES (%s, %s, %s, %s, 0, %s, %s, now(), %s) RETURNING id""",
                (ref.bucket, ref.key, info.identity, info.last_modified, download.bytes, download.sha256,
                 f"the same bytes as version {version}, withdrawn: {reason or 'no reason recorded'}"))
    file_id = cur.fetchone()[0]
    replaced = _delete_prices(cur, retired) if retired else None
    taken = (replaced or {}).get("rows")
    error = _withdrawn(f"the same bytes as this key's version {version}, whose prices were withdrawn", withdrawn_at,
                       reason, then="a changed file uploaded to the key loads; the same bytes again do not"
                       + (f"; the {taken} price(s) of the key's previous file were taken out" if taken else ""))
    return Outcome("superseded", bytes=download.bytes, file_id=file_id, info=info, error=error)


def _copy(cur, parser: formats.Parser, download: Download) -> None:
    chunks = read_ahead(parser.copy_chunks(download.chunks()), depth=READ_AHEAD_CHUNKS)
    stream = CopyStream(chunks)
    try:
        cur.copy_expert(COPY_SQL, stream, size=CHUNK_BYTES)
    except psycopg2.Error as exc:
        if stream.error is not None:
            raise stream.error from None
        if isinstance(exc, psycopg2.DataError):
            # Class 22 from COPY: the content got past validation but not past the server.
            raise formats.InvalidFile(f"the database refused the file's content: {exc}".strip()) from exc
        if exc.pgcode is None and cur.connection.closed:
            # libpq may lose the server's last words (a PANIC on a full WAL disk reaches
            # only stderr, and the error is then "invalid socket"): say what happened.
            raise TemporaryError(f"lost the database connection during the COPY ({str(exc).strip()}): the "
                                 "server ended it or stopped; its log says why") from exc
        raise
    finally:
        chunks.close()


def _skip(cur, ref: ObjectRef, download: Download) -> Outcome | None:
    """An outcome if this object needs no load: loaded before, or older than what is loaded."""
    info = download.info
    cur.execute("""SELECT id, rows, bytes, replaced_at IS NULL, withdrawn_at, withdrawn_reason FROM ingest_files
                   WHERE bucket = %s AND key = %s AND version = %s""", (ref.bucket, ref.key, info.identity))
    found = cur.fetchone()
    if found:
        file_id, rows, size, current, withdrawn_at, reason = found
        if current and withdrawn_at:
            what = ("this file's prices were withdrawn" if rows else
                    "this file, the bytes of a withdrawn one, was kept out")
            return Outcome("superseded", file_id=file_id, info=info, error=_withdrawn(what, withdrawn_at, reason))
        if not current and not info.versioned and download.current_identity() == info.identity:
            # Without a version id, and S3 holds these bytes under the key now (asked under
            # the key's lock): the replaced file's bytes uploaded again, in the second they
            # were first uploaded (S3's times are to the second), and nothing tells the two
            # apart. Skipped as "superseded", the key would keep the later file's prices
            # while S3 holds these. (A "null" version that a newer one followed, or an
            # upload since replaced, is not what S3 holds now: superseded, below.)
            raise formats.FileRejected(
                f"s3://{ref.bucket}/{ref.key} holds the same bytes (ETag {info.etag}), uploaded in the same "
                f"second ({info.last_modified:%Y-%m-%d %H:%M:%S} UTC), as a file of this key that a later one "
                "replaced; in a bucket without versioning the two cannot be told apart, so the key keeps the "
                "later file's prices: upload the file again")
        if current:
            return Outcome("already_loaded", rows=rows, bytes=size, file_id=file_id, info=info)
        loaded = _current_file(cur, ref)
        if info.versioned and loaded and download.current_identity() == info.identity:
            # The newer version was deleted, so S3 holds this one again; the key keeps the
            # deleted one's prices. (A replaced file's row cannot be made current again: its
            # key's newer files could no longer be replaced, 0011.)
            return Outcome("superseded", rows=rows, bytes=size, file_id=file_id, info=info,
                           error=f"the key's loaded version {loaded[1]} is newer, though S3 no longer holds it "
                                 "(deleted?), and holds this one again: this version does not load twice; to load "
                                 "its prices again, upload it again (a copy of the version makes a new one)")
        return Outcome("superseded", rows=rows, bytes=size, file_id=file_id, info=info,
                       error=_why_superseded(loaded))
    current = _current_file(cur, ref)
    if current and _newer_than_ours(current[1], current[2], download):
        # An event for an older version arrived after a newer version was loaded.
        return Outcome("superseded", file_id=current[0], info=info, error=_why_superseded(current))
    return None


def _current_file(cur, ref: ObjectRef) -> tuple | None:
    cur.execute("""SELECT id, version, last_modified, withdrawn_at, withdrawn_reason FROM ingest_files
                   WHERE bucket = %s AND key = %s AND replaced_at IS NULL""", (ref.bucket, ref.key))
    return cur.fetchone()


def _why_superseded(current: tuple | None) -> str:
    # The operator reading this run wants the withdrawal's reason above all, or an older
    # file's event would look like a plain skip beside an empty key.
    if current and current[3]:
        return _withdrawn("a newer version of this key was loaded, and its prices withdrawn", *current[3:])
    return "a newer version of this key is already loaded"


def _withdrawn(what: str, withdrawn_at, reason: str | None,
               then: str = "a changed file uploaded to the key loads; the same bytes again do not") -> str:
    """Why a withdrawn file keeps this one from loading, with the withdrawal's reason."""
    return f"{what} on {db.in_utc(withdrawn_at)} ({reason or 'no reason recorded'}); {then}"


def _newer_than_ours(version: str, last_modified, download: Download) -> bool:
    """Whether the key's loaded file (its version, or identity, and time) is newer than ours."""
    ours = download.info
    # What S3 holds now is the newest, when it is one of the two. Times alone can mislead:
    # a multipart upload's LastModified is when it began, not when it became the key's object.
    now = download.current_identity()
    if now in (version, ours.identity):
        return now == version
    if last_modified is None or last_modified != ours.last_modified:
        return last_modified is not None and last_modified > ours.last_modified
    # S3 times have a one-second resolution, so two versions uploaded in the same second
    # tie; only S3's own order of the key's versions tells which is newer.
    return ours.versioned and download.newest_of({version, ours.version_id}) == version


def _retire_current(cur, ref: ObjectRef) -> int | None:
    """Mark the key's current file as replaced; its id, if there was one."""
    cur.execute("""UPDATE ingest_files SET replaced_at = now()
                   WHERE bucket = %s AND key = %s AND replaced_at IS NULL RETURNING id""", (ref.bucket, ref.key))
    row = cur.fetchone()
    return row[0] if row else None


def _delete_prices(cur, file_id: int) -> dict:
    """Delete a replaced file's prices (the triggers adjust the totals).

    Through migration 0011's function: the job's user may delete only a replaced file's rows.
    """
    cur.execute("SELECT rates_delete_replaced_file(%s)", (file_id,))
    return {"file_id": file_id, "rows": cur.fetchone()[0]}
