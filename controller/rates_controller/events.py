"""S3 event notifications, as SQS delivers them, turned into the objects to load.

A message body is an S3 notification (``{"Records": [...]}``), S3's one-off
``s3:TestEvent``, or either of these wrapped in an SNS envelope (for a bucket that fans
out through a topic). Anything else is a poison message: :class:`PoisonMessage` says why,
and retrying it cannot help. EventBridge's events of S3 are not taken (the Terraform sends
S3's notifications to the queue directly, and EventBridge's key is not documented as
encoded the same way): one is set aside saying what it is, as is SNS's confirmation of a
subscription, which only whoever subscribed the queue can act on.
"""

import json
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_plus

from rates_core.errors import PermanentError


# Marks a notification the controller sent to the dead-letter queue (its value: the Job
# set aside). Sent back - an SQS redrive - it starts the file again, where a second
# delivery of the upload's own event changes nothing. Those that controllers wrote before
# the mark are told apart by what S3 always writes and they never did: eventVersion.
SET_ASIDE_BY = "RatesSetAsideBy"
# And that Job's UID: a name comes back once the TTL has deleted the Job that held it, so
# only the UID tells which round a set-aside ended (marks written before it have none).
SET_ASIDE_UID = "RatesSetAsideUid"


class PoisonMessage(PermanentError):
    """A message that is not an S3 notification this controller can act on."""


@dataclass(frozen=True)
class UploadedObject:
    bucket: str
    key: str  # decoded: S3 writes keys URL-encoded into its events
    version_id: str | None
    etag: str | None
    size: int | None
    # Tells two uploads of one key apart even when their content (ETag) is the same, and is
    # the same in a second delivery of one event: S3's sequencer, else the event's time.
    sequencer: str | None = None
    # Sent back from the dead-letter queue (SET_ASIDE_BY): to be loaded again.
    redriven: bool = False
    # The UID of the Job that set it aside, which the notification gives (None if it does not).
    set_aside_uid: str | None = None
    # Who uploaded it, as S3 names them (userIdentity.principalId, e.g. AWS:AIDAEXAMPLE, or
    # AWS:AROAEXAMPLE:session-name for a role's session). None where the message has none:
    # ratesctl reconcile's, and those set aside before it was kept. Not part of the Job's
    # name, so Jobs made for one event before and after it was read are one Job.
    uploaded_by: str | None = None


@dataclass(frozen=True)
class Announcement:
    """What one message announces: the created objects to load, and, for the log, what in
    it makes no Job."""

    objects: list[UploadedObject]
    skipped: list[str] = field(default_factory=list)  # the event names of records that make no Job
    test_event: bool = False  # S3's s3:TestEvent, sent when the bucket's notifications are set


def uploaded_objects(body: str) -> list[UploadedObject]:
    """The created objects that ``body`` announces; [] for a test event or other event types."""
    return announcement(body).objects


def announcement(body: str) -> Announcement:
    """What ``body`` announces (PoisonMessage if it is not an S3 notification)."""
    document = _json(body, "the message body")
    _refuse_sns_confirmation(document)
    if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
        document = _json(document["Message"], "the SNS notification's Message")
    _refuse_eventbridge(document)
    if not isinstance(document, dict):
        raise PoisonMessage(f"not an S3 event notification: the body is a JSON {_json_type(document)}")
    if document.get("Event") == "s3:TestEvent":
        return Announcement(objects=[], test_event=True)
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        raise PoisonMessage("not an S3 event notification: no Records list")
    uid = document.get(SET_ASIDE_UID)
    set_aside_uid = uid if isinstance(uid, str) and uid else None
    _check_job_text("the notification's", {SET_ASIDE_UID: set_aside_uid})  # the first Job's annotation
    redriven = isinstance(document.get(SET_ASIDE_BY), str) or not any(
        isinstance(r, dict) and "eventVersion" in r for r in records)
    objects, skipped = [], []
    for record in records:
        obj = _created_object(record)
        if obj is None:
            skipped.append(_skipped_name(record))
        else:
            objects.append(replace(obj, redriven=redriven, set_aside_uid=set_aside_uid) if redriven else obj)
    return Announcement(objects=objects, skipped=skipped)


def _skipped_name(record: dict) -> str:
    """A record that makes no Job, as the log names it: its event name, and for a created
    object, that it was a folder (the only ObjectCreated record that makes none)."""
    name = record.get("eventName")
    name = name[:100] if isinstance(name, str) and name else "a record without an eventName"
    return f"{name} (a folder)" if name.startswith("ObjectCreated:") else name


# SNS sends these to a subscribed queue itself, not on behalf of the bucket.
_SNS_CONFIRMATIONS = {
    "SubscriptionConfirmation": "whoever subscribed this queue to the topic must confirm the subscription "
                                "(the message's SubscribeURL) before S3's notifications come through it",
    "UnsubscribeConfirmation": "the topic's subscription of this queue was deleted, so S3's notifications "
                               "sent through that topic no longer come here (the message's SubscribeURL "
                               "subscribes it again)",
}


def _refuse_sns_confirmation(document) -> None:
    kind = document.get("Type") if isinstance(document, dict) else None
    if isinstance(kind, str) and kind in _SNS_CONFIRMATIONS:
        raise PoisonMessage(f"an SNS {kind}, not an S3 event notification: {_SNS_CONFIRMATIONS[kind]}")


def _refuse_eventbridge(document) -> None:
    """An S3 event routed through EventBridge: named, so that the reason says where the
    bucket's events are wired wrong instead of only what the message lacks."""
    if not isinstance(document, dict) or document.get("source") != "aws.s3" or "detail-type" not in document:
        return
    kind = document["detail-type"]
    named = f" ({kind[:100]})" if isinstance(kind, str) and kind else ""
    raise PoisonMessage(f"an EventBridge event{named}: this controller takes S3 event notifications sent to "
                        "SQS directly or through SNS")


def _json(text, what: str):
    if not isinstance(text, str):
        raise PoisonMessage(f"{what} is a JSON {_json_type(text)}, not a string")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PoisonMessage(f"{what} is not JSON: {exc}") from None
    except RecursionError:
        raise PoisonMessage(f"{what} is JSON nested too deeply") from None


# JSON's names for what json.loads makes: a reason is read by whoever wrote the message,
# who knows no Python. bool before int, which it is a kind of.
_JSON_TYPES = ((type(None), "null"), (bool, "boolean"), (int, "number"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"))


def _json_type(value) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


def _field(record: dict, path: str):
    """The value at ``path`` in an ObjectCreated record; the path, dotted, is how reasons
    name a field (s3.bucket.name and s3.object.key are both a name)."""
    value, walked = record, []
    for name in path.split("."):
        if not isinstance(value, dict):
            raise PoisonMessage(f"an ObjectCreated record's {'.'.join(walked)} is a JSON {_json_type(value)}, "
                                "not an object")
        if name not in value:
            raise PoisonMessage(f"an ObjectCreated record lacks {path}")
        value = value[name]
        walked.append(name)
    return value


def _text(record: dict, path: str) -> str:
    value = _field(record, path)
    if not isinstance(value, str):
        raise PoisonMessage(f"an ObjectCreated record's {path} is a JSON {_json_type(value)}, not a string")
    if not value:
        raise PoisonMessage(f"an ObjectCreated record's {path} is empty")
    return value


def _optional_text(record: dict, path: str) -> str | None:
    parent, _, name = path.rpartition(".")
    value = (_field(record, parent) if parent else record).get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PoisonMessage(f"an ObjectCreated record's {path} is a JSON {_json_type(value)}, not a string")
    return value


def _created_object(record) -> UploadedObject | None:
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        raise PoisonMessage("not an S3 event notification: a record's eventSource is not aws:s3")
    if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
        return None  # a removal or restore: nothing to load
    bucket = _text(record, "s3.bucket.name")
    key = _text(record, "s3.object.key")
    try:
        # Strict: by default unquote_plus turns %FF into U+FFFD, a key that does not exist.
        key = unquote_plus(key, errors="strict")
    except UnicodeError:
        raise PoisonMessage("an ObjectCreated record's s3.object.key is not valid UTF-8") from None
    if not key:
        raise PoisonMessage("an ObjectCreated record's s3.object.key is empty")
    # Each reaches the Job: its name (a hash of them all), its annotations, and for the
    # first three its environment.
    job_text = {"s3.bucket.name": bucket, "s3.object.key": key,
                "s3.object.versionId": _optional_text(record, "s3.object.versionId"),
                "s3.object.eTag": _optional_text(record, "s3.object.eTag")}
    sequenced_by = "s3.object.sequencer" if _optional_text(record, "s3.object.sequencer") else "eventTime"
    job_text[sequenced_by] = _optional_text(record, sequenced_by)
    _check_job_text("an ObjectCreated record's", job_text)
    size = record["s3"]["object"].get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    if key.endswith("/") and not size:
        return None  # a "folder" made by the S3 console, not a file
    return UploadedObject(bucket=bucket, key=key, version_id=job_text["s3.object.versionId"],
                          etag=job_text["s3.object.eTag"], size=size, sequencer=job_text[sequenced_by],
                          uploaded_by=_uploader(record))


# S3's principal ids are a prefix, an id of 21 characters and, for a role's session, the
# session's name (at most 64): far fewer than this, which bounds what a hand-made message
# puts into every Job of the file.
UPLOADED_BY_CHARS = 256


def _uploader(record: dict) -> str | None:
    """Who S3 says uploaded the object (userIdentity.principalId), cut to UPLOADED_BY_CHARS;
    None if the record does not say."""
    identity = record.get("userIdentity")
    if identity is None:
        return None
    if not isinstance(identity, dict):
        raise PoisonMessage(f"an ObjectCreated record's userIdentity is a JSON {_json_type(identity)}, "
                            "not an object")
    principal = _optional_text(record, "userIdentity.principalId")
    principal = principal[:UPLOADED_BY_CHARS] if principal else None
    # Not in the Job's name, but in its annotations and its environment.
    _check_job_text("an ObjectCreated record's", {"userIdentity.principalId": principal})
    return principal


def check_source(objects: list[UploadedObject], bucket: str, prefix: str) -> None:
    """Refuse uploads from elsewhere than ``bucket`` (and under ``prefix``), when given: the
    queue takes messages from anyone its policy lets send, and the Jobs' role reads only
    there, so such a Job could only fail MAX_ATTEMPTS times before the file was set aside."""
    for obj in objects:
        if bucket and obj.bucket != bucket:
            raise PoisonMessage(f"an upload to s3://{obj.bucket}/{obj.key}, not to this controller's bucket "
                                f"{bucket}")
        if prefix and not obj.key.startswith(prefix):
            raise PoisonMessage(f"an upload to s3://{obj.bucket}/{obj.key}, outside this controller's prefix "
                                f"{prefix}")


def _check_job_text(whose: str, values: dict[str, str | None]) -> None:
    """What reaches the Job must be UTF-8 (a lone surrogate comes from a \\ud800 escape in
    the JSON), or hashing it into the Job's name fails; and hold no NUL, which no process
    environment holds (the pod would never start) and no upload's key, ETag or time has."""
    for name, value in values.items():
        if value is None:
            continue
        try:
            value.encode()
        except UnicodeEncodeError:
            raise PoisonMessage(f"{whose} {name} is not valid UTF-8") from None
        if "\0" in value:
            raise PoisonMessage(f"{whose} {name} holds a NUL character")
