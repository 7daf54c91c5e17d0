"""The uploaded object in S3: its identity and its bytes, streamed.

botocore errors are mapped here, once, to FileRejected (the object is gone) or
TemporaryError (S3 unreachable, throttled, timed out): nothing else sees botocore.
"""

import datetime
import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import boto3.session
import botocore.exceptions
from botocore.config import Config

from rates_core import aws
from rates_core.errors import TemporaryError

from .formats import FileRejected

CHUNK_BYTES = 1 << 20
# Error codes that mean the object (or its version, or its bucket) is not there and
# will not appear by retrying: a new upload arrives as a new event and a new run.
_GONE = {"404", "NoSuchKey", "NoSuchVersion", "NoSuchBucket", "405", "MethodNotAllowed",
         "InvalidArgument"}
# Archived (Glacier, Deep Archive): there, but not to be read until restored, which takes
# hours; the reason says what to do, since "gone" would send someone looking for a deletion.
_ARCHIVED = "InvalidObjectState"


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class ObjectInfo:
    version_id: str | None
    etag: str
    size: int
    last_modified: datetime.datetime

    @property
    def versioned(self) -> bool:
        # "null" is the version of an object written before versioning was enabled;
        # it can be overwritten, so it does not identify content.
        return self.version_id not in (None, "null")

    @property
    def identity(self) -> str:
        """What makes two runs "the same file": the version id, else ETag and upload time.

        The upload time is part of it so that re-uploading the same bytes to an
        unversioned key (after a different upload) counts as a new file again.
        """
        if self.versioned:
            return self.version_id
        return f"{self.etag}@{self.last_modified.isoformat()}"


def client(retry_mode: str = "standard", max_attempts: int = 5):
    """An S3 client from boto3's standard chain; AWS_ENDPOINT_URL(_S3) selects a local S3."""
    # total_max_attempts counts the first try, as AWS_MAX_ATTEMPTS does; botocore's
    # "max_attempts" here would count retries only (one more request than asked for).
    retries = {"mode": retry_mode, "total_max_attempts": max_attempts}
    config = Config(connect_timeout=10, read_timeout=60, retries=retries)
    return boto3.session.Session(botocore_session=aws.session()).client("s3", config=config)


@contextmanager
def mapped_errors(ref: ObjectRef) -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        where = _where(ref)
        if code == "NoSuchBucket":
            raise FileRejected(_no_bucket(ref)) from exc
        if code in _GONE or status == 404:
            raise FileRejected(f"{where} is gone: {code or status}") from exc
        if code == _ARCHIVED:
            raise FileRejected(f"{where} is archived ({code}): restore it in S3, then send its message back "
                               "from the dead-letter queue (nothing needs doing if only its storage class "
                               "changed after it loaded: the prices of its earlier version are the same)") from exc
        raise TemporaryError(f"S3 error for {where}: {code or status}: {exc}") from exc
    except botocore.exceptions.ParamValidationError as exc:
        # Checked before any request: a bucket name S3 cannot have names no object.
        raise FileRejected(f"s3://{ref.bucket}/{ref.key} cannot name an S3 object: {exc}") from exc
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        # Connection refused/reset, timeouts, a stream cut short: all worth a retry.
        raise TemporaryError(f"S3 unavailable: {type(exc).__name__}: {exc}") from exc


def head(s3, ref: ObjectRef) -> ObjectInfo:
    kwargs = {"VersionId": ref.version_id} if ref.version_id else {}
    try:
        with mapped_errors(ref):
            response = s3.head_object(Bucket=ref.bucket, Key=ref.key, **kwargs)
    except TemporaryError as exc:
        if ref.version_id and _bare_bad_request(exc.__cause__):
            _explain_bad_request(s3, ref)
        raise
    except FileRejected as exc:
        if _bare_not_found(exc.__cause__):
            _explain_not_found(s3, ref)
        raise
    # The version asked for, if S3 does not name it (moto leaves out "null", for one).
    return ObjectInfo(version_id=response.get("VersionId") or ref.version_id, etag=response["ETag"],
                      size=response["ContentLength"], last_modified=response["LastModified"])


def _bare_bad_request(exc: BaseException | None) -> bool:
    # A HEAD response has no body, so S3 says only "400" where a GET would say why
    # (InvalidArgument for a version id that cannot exist, for one).
    return (isinstance(exc, botocore.exceptions.ClientError)
            and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 400
            and exc.response.get("Error", {}).get("Code") in ("400", "BadRequest"))


def _where(ref: ObjectRef) -> str:
    return f"s3://{ref.bucket}/{ref.key}" + (f" (version {ref.version_id})" if ref.version_id else "")


def _no_bucket(ref: ObjectRef) -> str:
    # Still exit 2: the upload's event named the bucket, so a bucket gone since took the
    # file with it (a new bucket of that name is a new upload and event); a mistyped
    # --bucket fails the same way on every try.
    return f"{_where(ref)} is gone: the bucket {ref.bucket} does not exist (NoSuchBucket)"


def _bare_not_found(exc: BaseException | None) -> bool:
    # The same bodiless HEAD: a missing key and a missing bucket are both a bare 404.
    return (isinstance(exc, botocore.exceptions.ClientError)
            and exc.response.get("Error", {}).get("Code") in ("404", "NotFound"))


def _explain_not_found(s3, ref: ObjectRef) -> None:
    """Raise FileRejected naming the bucket if it is the bucket that is missing."""
    try:
        s3.head_bucket(Bucket=ref.bucket)
    except botocore.exceptions.ClientError as exc:
        # A 403 (no s3:ListBucket) says nothing either way: the object's 404 stands.
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            raise FileRejected(_no_bucket(ref)) from exc
    except (botocore.exceptions.BotoCoreError, OSError):
        pass  # the question failed, not the answer: the object is gone all the same


def _explain_bad_request(s3, ref: ObjectRef) -> None:
    """Ask for the version's first byte, whose error names the reason; raises if it fails."""
    with mapped_errors(ref):
        s3.get_object(Bucket=ref.bucket, Key=ref.key, VersionId=ref.version_id, Range="bytes=0-0")["Body"].close()


class Download:
    """The bytes of exactly the version that ``head`` saw, in chunks; counts and hashes them.

    A stream cut short (a reset, a read timeout, a proxy giving up) is resumed from the
    first missing byte with a ranged GET of the same version, up to ``MAX_RESUMES`` times
    per file, so a long load does not start over, nor its transaction roll back, for one
    network hiccup.
    """

    MAX_RESUMES = 5
    RESUME_DELAY_S = 0.5

    def __init__(self, s3, ref: ObjectRef, info: ObjectInfo, log=None):
        self.s3, self.ref, self.info, self.log = s3, ref, info, log
        self.bytes = 0
        self.resumes = 0
        self._sha256 = hashlib.sha256()

    def chunks(self) -> Iterator[bytes]:
        while True:
            body = self._open()
            try:
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    self.bytes += len(chunk)
                    self._sha256.update(chunk)
                    yield chunk
                return  # botocore compares with Content-Length: a short body raises instead
            except botocore.exceptions.FlexibleChecksumError as exc:
                # The bytes arrived but are not the object's: start the whole load over.
                raise TemporaryError(f"S3 object failed its checksum: {exc}") from exc
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                if self.bytes == self.info.size:
                    return  # every byte arrived; only the end of the response was lost
                if self.resumes >= self.MAX_RESUMES:
                    raise TemporaryError(f"S3 stream cut {self.resumes + 1} times; the last at byte "
                                         f"{self.bytes}: {type(exc).__name__}: {exc}") from exc
                self.resumes += 1
                if self.log:
                    self.log.warning("s3 stream cut; resuming", at_byte=self.bytes, resume=self.resumes,
                                     error=f"{type(exc).__name__}: {exc}")
                time.sleep(self.RESUME_DELAY_S * self.resumes)
            finally:
                body.close()

    @property
    def sha256(self) -> bytes:
        """The SHA-256 of the bytes read so far: the whole object's once they all are."""
        return self._sha256.digest()

    def current_identity(self) -> str | None:
        """The identity of what S3 holds under the key now; None if the key is gone."""
        try:
            return head(self.s3, ObjectRef(self.ref.bucket, self.ref.key)).identity
        except FileRejected:
            return None

    def newest_of(self, version_ids: set[str]) -> str | None:
        """Which of these versions of the key S3 lists first, that is, the newest; None if none.

        Needs s3:ListBucketVersions. Used only when two versions' times tie.
        """
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=self.ref.bucket, Prefix=self.ref.key)
        with mapped_errors(self.ref):
            for page in pages:
                for version in page.get("Versions", []):
                    if version["Key"] == self.ref.key and version["VersionId"] in version_ids:
                        return version["VersionId"]
        return None

    def _open(self):
        # The version id pins the object, and If-Match on the ETag pins one that can be
        # overwritten (no version id, or the "null" version): if it was overwritten since
        # head(), S3 answers 412 and a retry of the job sees the new one (a new upload also
        # has its own event).
        pin = {"VersionId": self.info.version_id} if self.info.version_id else {}
        if not self.info.versioned:
            pin["IfMatch"] = self.info.etag
        if self.bytes:
            pin["Range"] = f"bytes={self.bytes}-"
        with mapped_errors(self.ref):
            return self.s3.get_object(Bucket=self.ref.bucket, Key=self.ref.key, **pin)["Body"]
