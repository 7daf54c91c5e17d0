"""``ratesctl reconcile``: the uploads whose latest version in S3 is not the file the
database has loaded for its key, and, with ``--send``, a new event for each on the uploads
queue. With it, the earlier versions S3 still holds that are newer than the key's file (all
of them for a key with no file recorded).

Nothing else compares the bucket with the database. After a restore to an earlier time, a
database rebuilt empty, a queue or bucket notification lost, or a namespace deleted with
Jobs in flight, the API would serve old prices with no error anywhere.

Why the earlier versions: a rejected upload does not replace its key's file, so a key
whose newest upload was rejected keeps an older version's prices. In a database emptied
(runbook/sql/reload_all.sql) or rebuilt, the latest version alone would be rejected again,
and those prices would be gone for good; after a restore to an earlier time, or an event
lost, a version between the key's file and a rejected latest would never load. Sent all, the key ends with the file it had: the
job keeps a key's newest file that loads whatever the order its events are handled in
(rates_ingest.loader: a version older than the loaded one is ``superseded``; a newer one
that is rejected leaves the older loaded). Each earlier version that loads and is then
replaced costs about its load again. Versions listed behind a delete marker are left out,
as a key whose latest is one is: a rebuild does not bring back what was deleted (a
withdrawn file's object, which the README says to delete, for one).
"""

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import boto3
import botocore.exceptions

from rates_core import aws, db, s3events
from rates_core.errors import PermanentError, RatesError, TemporaryError
from rates_ingest import formats
from rates_ingest.s3source import ObjectInfo

from .terminal import shown

# As S3 writes it, so that the controller takes the event as an upload's own.
EVENT_VERSION = "2.1"
_SQS_BATCH = 10


@dataclass(frozen=True)
class Upload:
    key: str
    info: ObjectInfo
    loaded: str | None  # the identity of the key's loaded file, if another
    last_run: tuple[str, str | None] | None  # (status, error) of this version's last run
    withdrawn: bool = False  # whether the loaded file's prices were withdrawn
    never_loads: bool = False  # its name is no price file's (the job refuses it unread)
    older: bool = False  # an earlier version newer than the key's file (if any), sent in case the newer does not load


def missing(s3, conn, bucket: str, prefix: str) -> tuple[list[Upload], int]:
    """The keys under ``prefix`` whose latest version (not deleted) is not their loaded
    file, and how many keys S3 holds there (a mistyped prefix holds none). Such a key comes
    with its earlier versions newer than its file too, newest first (all of them for a key
    with no file recorded: none loaded, none withdrawn; see above)."""
    loaded = _loaded_files(conn, bucket, prefix)
    examined = 0
    unloaded = []
    earlier = False  # whether the earlier versions of the key listed now are wanted
    for key, info, latest in _versions(s3, bucket, prefix):  # kept only if not loaded: a bucket may hold millions
        recorded = loaded.get(key, (None,))[0]
        if latest:
            examined += 1
            # A key refused by its name is refused in every version: its latest says so.
            earlier = recorded != info.identity and _not_a_price_file(key) is None
            if recorded != info.identity:
                unloaded.append((key, info, False))
        elif earlier and recorded == info.identity:
            earlier = False  # the key's file, and what is older than it, stay as they are
        elif earlier and info.versioned:
            # An earlier "null" version (written before versioning was enabled) cannot be
            # named in an event: the job would read the key's latest instead.
            unloaded.append((key, info, True))
    runs = _last_runs(conn, bucket, [(key, info) for key, info, _ in unloaded])
    uploads = []
    for key, info, older in unloaded:
        version, withdrawn = loaded.get(key, (None, False))
        named = _not_a_price_file(key)
        uploads.append(Upload(key, info, version, named or runs.get((key, info.version_id)), withdrawn,
                              named is not None, older))
    return uploads, examined


def _not_a_price_file(key: str) -> tuple[str, str] | None:
    """A key the job rejects by its name alone, as a rejected run: the job refuses it before
    it reads the object, so that run names no version or ETag to find it by."""
    try:
        formats.detect(key)
    except formats.FileRejected as exc:
        return "rejected", str(exc)
    return None


def _versions(s3, bucket: str, prefix: str) -> Iterator[tuple[str, ObjectInfo, bool]]:
    """(key, version, whether it is the latest) of the versions under ``prefix``: each key's
    latest, then its earlier ones newest first, down to its newest earlier delete marker.
    Nothing of a key whose latest is a delete marker: its prices stay, as after any deletion,
    and a rebuild does not bring them back (README)."""
    pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix)
    key, behind_marker = None, False
    with _mapped(f"listing s3://{bucket}/{prefix}"):
        for page in pages:
            # S3 lists a key's versions and delete markers in one order, newest first (a key's
            # may run on to the next pages), but boto3 splits each page into two lists. Merged
            # again by time, the latest first, and a delete marker before a version of its
            # second (S3's times have a one-second resolution): so a version is never taken
            # to be newer than a delete marker that is newer than it, though a version put
            # in the second of a deletion, or a multipart upload begun before it (its time
            # is its start), is taken to be behind it, and left out.
            entries = sorted([(version, False) for version in page.get("Versions", [])]
                             + [(marker, True) for marker in page.get("DeleteMarkers", [])],
                             key=lambda entry: (entry[0]["Key"], not entry[0]["IsLatest"],
                                                -entry[0]["LastModified"].timestamp(), not entry[1]))
            for entry, is_marker in entries:
                if entry["Key"] != key:
                    key, behind_marker = entry["Key"], False
                behind_marker = behind_marker or is_marker
                if behind_marker or key.endswith("/"):
                    continue
                yield key, ObjectInfo(version_id=entry["VersionId"], etag=entry["ETag"], size=entry["Size"],
                                      last_modified=entry["LastModified"]), entry["IsLatest"]


def _loaded_files(conn, bucket: str, prefix: str) -> dict[str, tuple[str, bool]]:
    """key -> (version, withdrawn) of each key's current file. A withdrawn one counts as
    loaded: what S3 holds under its key was taken out on purpose."""
    with db.classified(), conn.cursor() as cur:
        cur.execute("""SELECT key, version, withdrawn_at IS NOT NULL FROM ingest_files
                       WHERE bucket = %s AND starts_with(key, %s) AND replaced_at IS NULL""", (bucket, prefix))
        return {key: (version, withdrawn) for key, version, withdrawn in cur.fetchall()}


def _last_runs(conn, bucket: str, uploads: list[tuple[str, ObjectInfo]]) -> dict[tuple[str, str], tuple]:
    """(key, version id) -> (status, error) of the last finished run of each of ``uploads``;
    one without versioning is its ETag in a run that names no version. Only theirs: a
    year of runs is millions of rows."""
    keys = [key for key, _ in uploads]
    with db.classified(), conn.cursor() as cur:
        cur.execute("""SELECT DISTINCT ON (u.key, u.version_id) u.key, u.version_id, r.status, r.error
                       FROM unnest(%s::text[], %s::text[], %s::text[]) AS u (key, version_id, etag)
                       JOIN ingest_runs r ON r.bucket = %s AND r.key = u.key
                        AND (r.version_id = u.version_id OR (r.version_id IS NULL AND r.etag = u.etag))
                       WHERE r.status <> 'running'
                       ORDER BY u.key, u.version_id, r.id DESC""",
                    (keys, [info.version_id for _, info in uploads], [info.etag for _, info in uploads], bucket))
        return {(key, version): (status, error) for key, version, status, error in cur.fetchall()}


def send(sqs, queue_url: str, bucket: str, uploads: list[Upload]) -> int:
    """An ObjectCreated event for each, with a sequencer of its own: the controller then
    starts a Job for it even where a Job of the upload's first event, or of an earlier
    reconcile's, is still kept. How many were sent; cut short (a refusal, a Ctrl-C), the
    error says how many were.

    Random, not derived from the upload: whatever it were derived from, an emptied or
    restored database can bring back, and the event would then be taken for a duplicate
    of a Job still kept from before, and load nothing.
    """
    round_id = uuid.uuid4().hex[:12]
    sent = 0
    try:
        for start in range(0, len(uploads), _SQS_BATCH):
            entries = [{"Id": str(n), "MessageBody": s3events.object_created(
                            bucket, upload.key, version_id=upload.info.version_id if upload.info.versioned else None,
                            etag=upload.info.etag, size=upload.info.size,
                            sequencer=f"reconcile-{round_id}-{start + n}",
                            event_version=EVENT_VERSION)}
                       for n, upload in enumerate(uploads[start:start + _SQS_BATCH])]
            with _mapped("sending to the uploads queue"):
                answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            sent += len(answer.get("Successful", []))
            if answer.get("Failed"):
                refused = [shown(uploads[start + int(entry["Id"])].key) for entry in answer["Failed"]]
                raise TemporaryError(f"the uploads queue refused the events of {', '.join(refused)} "
                                     f"({answer['Failed'][0].get('Message')})")
    except KeyboardInterrupt:
        raise TemporaryError(f"stopped: {_so_far(sent, uploads)}") from None
    except RatesError as exc:
        # Whether a retry helps is the error's; a second --send would start second Jobs
        # for those sent already, so it says how many were.
        raise (PermanentError if isinstance(exc, PermanentError) else TemporaryError)(
            f"{exc}; {_so_far(sent, uploads)}") from exc
    return sent


def _so_far(sent: int, uploads: list[Upload]) -> str:
    return f"{sent} of {len(uploads)} sent, which load as usual; run reconcile without --send to see what is left"


def sqs_client():
    """An SQS client from boto3's standard chain; AWS_ENDPOINT_URL(_SQS) selects a local one.
    Its credential refreshes give up in seconds, as the controller's do (rates_core.aws)."""
    try:
        return boto3.session.Session(botocore_session=aws.session()).client("sqs")
    except botocore.exceptions.NoRegionError:
        # This boto3 reads AWS_DEFAULT_REGION only: naming AWS_REGION sent operators round.
        raise PermanentError("no AWS region for the uploads queue: set AWS_DEFAULT_REGION") from None


def check_queue(sqs, queue_url: str) -> None:
    """Fail now if the uploads queue cannot be reached as ``queue_url`` (a mistyped URL, the
    wrong region or account, no rights): before the listing, which takes minutes on a big
    bucket, not after it."""
    with _mapped(f"checking the uploads queue {queue_url}"):
        sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """botocore's errors as the platform's: a refusal of the request (4xx) cannot pass on
    retry; throttling, 5xx and the network may."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(error.get("Code"))
        throttled = status == 429 or "Throttl" in code or code == "SlowDown"
        message = f"{what}: {code}: {error.get('Message')}"
        raise (PermanentError if 400 <= status < 500 and not throttled else TemporaryError)(message) from exc
    except (botocore.exceptions.ParamValidationError, botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError) as exc:
        # No credentials at all is the caller's setup, not something a retry changes.
        raise PermanentError(f"{what}: {exc}") from exc
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise TemporaryError(f"{what}: {type(exc).__name__}: {exc}") from exc
