"""S3 ObjectCreated notifications, for the messages the platform writes itself: the
controller's to its dead-letter queue, and ``ratesctl reconcile``'s to the uploads queue."""

import json
from urllib.parse import quote_plus


def object_created(bucket: str, key: str, *, version_id: str | None = None, etag: str | None = None,
                   size: int | None = None, sequencer: str | None = None, event_version: str | None = None,
                   principal_id: str | None = None, **marks: str) -> str:
    """The body of a message that announces one uploaded object, as S3 writes it (the key
    URL-encoded; ``principal_id`` as the uploader's userIdentity); ``marks`` are fields of
    the body's own, beside ``Records``."""
    obj: dict = {"key": quote_plus(key, safe="/")}
    for name, value in (("size", size), ("versionId", version_id), ("eTag", etag), ("sequencer", sequencer)):
        if value is not None and value != "":
            obj[name] = value
    record = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket},
                                                                             "object": obj}}
    if principal_id:
        record["userIdentity"] = {"principalId": principal_id}
    if event_version:
        record = {"eventVersion": event_version, **record}
    return json.dumps({"Records": [record], **marks})
