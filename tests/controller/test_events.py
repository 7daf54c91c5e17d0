"""S3 event notifications as SQS delivers them (the bodies are S3's documented shapes)."""

import json
from dataclasses import replace

import pytest

from rates_controller import jobs
from rates_controller.controller import notification
from rates_controller.settings import JobSettings
from rates_controller.events import PoisonMessage, UploadedObject, announcement, check_source, uploaded_objects


def record(key, event="ObjectCreated:Put", bucket="uploads", **obj):
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": event,
            "s3": {"bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": key, "size": 10, "eTag": "abc", **obj}}}


def body(*records):
    return json.dumps({"Records": list(records)})


def test_an_object_created_record_becomes_the_object_to_load():
    assert uploaded_objects(body(record("2016/jan.csv", versionId="v1", sequencer="0A"))) == [
        UploadedObject(bucket="uploads", key="2016/jan.csv", version_id="v1", etag="abc", size=10, sequencer="0A")]


def test_who_uploaded_it_is_s3s_principal_id_and_leaves_the_jobs_name_alone():
    user = {**record("a.csv", sequencer="0A"), "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"}}
    role = {**record("b.csv"), "userIdentity": {"principalId": "AWS:AROAEXAMPLE:jane@example.com"}}
    assert [o.uploaded_by for o in uploaded_objects(body(user, role))] == [
        "AWS:AIDAEXAMPLE", "AWS:AROAEXAMPLE:jane@example.com"]
    # Jobs made for one event before the uploader was read, and after, are one Job.
    [without] = uploaded_objects(body(record("a.csv", sequencer="0A")))
    [with_it] = uploaded_objects(body(user))
    assert without.uploaded_by is None and jobs.job_name(with_it, 1) == jobs.job_name(without, 1)


@pytest.mark.parametrize("identity", [{}, {"principalId": None}, {"principalId": ""}])
def test_a_record_that_names_no_uploader_has_none(identity):
    assert uploaded_objects(body({**record("a.csv"), "userIdentity": identity}))[0].uploaded_by is None


def test_an_uploader_longer_than_s3_writes_is_cut():
    rec = {**record("a.csv"), "userIdentity": {"principalId": "AWS:AROAEXAMPLE:" + "x" * 1000 + "\ud800"}}
    [obj] = uploaded_objects(body(rec))
    assert obj.uploaded_by == ("AWS:AROAEXAMPLE:" + "x" * 1000)[:256]
    # Only what reaches the Job is checked: the lone surrogate was cut off with the rest.
    json.dumps(jobs.manifest(obj, JobSettings(namespace="prod", image="i"))).encode()


@pytest.mark.parametrize("encoded, key", [
    ("prices+2016+01.csv", "prices 2016 01.csv"),      # S3 writes a space as +
    ("a%2Bb.csv", "a+b.csv"),                          # and a + as %2B
    ("dir%2Fsub%2Fx.csv", "dir/sub/x.csv"),            # moto encodes the slash too; AWS does not
    ("dir/sub/x.csv", "dir/sub/x.csv"),
    ("%C3%A5rhus%E2%82%AC.csv", "århus€.csv"),
])
def test_keys_are_url_decoded(encoded, key):
    assert [o.key for o in uploaded_objects(body(record(encoded)))] == [key]


def test_every_created_record_of_a_message_counts_and_other_events_do_not():
    objects = uploaded_objects(body(record("a.csv"), record("b.csv", event="ObjectRemoved:Delete"),
                                    record("c.csv", event="ObjectCreated:CompleteMultipartUpload")))
    assert [o.key for o in objects] == ["a.csv", "c.csv"]


def test_records_that_make_no_job_are_named_by_their_event_for_the_log():
    announced = announcement(body(record("a.csv"), record("b.csv", event="ObjectRemoved:Delete"),
                                  record("2016/", size=0), {"eventSource": "aws:s3"}))
    assert [o.key for o in announced.objects] == ["a.csv"]
    assert announced.skipped == ["ObjectRemoved:Delete", "ObjectCreated:Put (a folder)",
                                 "a record without an eventName"]
    assert not announced.test_event
    assert announcement(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})).test_event


def test_s3s_test_event_and_console_folders_announce_nothing():
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "uploads"})
    assert uploaded_objects(test_event) == []
    assert uploaded_objects(body(record("2016/", size=0))) == []
    # A key ending in / that holds data is a file (the job will say what it makes of it).
    assert [o.key for o in uploaded_objects(body(record("odd/", size=5)))] == ["odd/"]


def test_without_a_sequencer_the_events_time_tells_uploads_of_one_content_apart():
    # moto's events have no sequencer; AWS's do. Either way a redelivery keeps the value.
    rec = {**record("p.csv"), "eventTime": "2026-11-29T04:00:00.123Z"}
    assert uploaded_objects(body(rec))[0].sequencer == "2026-11-29T04:00:00.123Z"
    assert uploaded_objects(body({**rec, "s3": {**rec["s3"], "object": {
        **rec["s3"]["object"], "sequencer": "0055AED6DCD90281E5"}}}))[0].sequencer == "0055AED6DCD90281E5"


def test_what_the_controller_sets_aside_comes_back_as_the_same_object_sent_back():
    obj = UploadedObject(bucket="uploads", key="2016/jan prices+1.csv", version_id="v1", etag="abc", size=None,
                         sequencer="0A", uploaded_by="AWS:AROAEXAMPLE:jane")
    [back] = uploaded_objects(notification(obj, "ingest-0123-2", "uid-2"))
    assert back == replace(obj, redriven=True, set_aside_uid="uid-2")
    # Marked before the UID was: sent back all the same, but with no round to be a copy of.
    assert uploaded_objects(notification(obj, "ingest-0123-2")) == [replace(obj, redriven=True)]
    assert jobs.job_name(back, 1) == jobs.job_name(obj, 1)  # the same chain of Jobs
    assert not uploaded_objects(body(record("2016/jan.csv")))[0].redriven  # S3's own event
    # What a controller before the mark sent to the dead-letter queue: no mark, but none of
    # S3's eventVersion either.
    legacy = json.loads(notification(obj, "ingest-0123-2"))
    del legacy["RatesSetAsideBy"]
    assert uploaded_objects(json.dumps(legacy)) == [replace(obj, redriven=True)]


def test_a_notification_wrapped_by_sns_is_unwrapped():
    envelope = json.dumps({"Type": "Notification", "TopicArn": "arn:aws:sns:eu-west-1:1:t",
                           "Message": body(record("x.csv"))})
    assert [o.key for o in uploaded_objects(envelope)] == ["x.csv"]


EVENTBRIDGE = {"version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "Object Created",
               "source": "aws.s3", "account": "111122223333", "time": "2021-11-12T00:00:00Z",
               "region": "ca-central-1", "resources": ["arn:aws:s3:::uploads"],
               "detail": {"version": "0", "bucket": {"name": "uploads"},
                          "object": {"key": "prices/jan.csv", "size": 5, "etag": "b1946ac9",
                                     "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e", "sequencer": "617f08299329d189"},
                          "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
                          "source-ip-address": "1.2.3.4", "reason": "PutObject"}}


def test_an_eventbridge_event_is_set_aside_saying_it_is_not_supported():
    # Its shape has no Records; the reason must say where the bucket's events are wired wrong.
    with pytest.raises(PoisonMessage) as caught:
        uploaded_objects(json.dumps(EVENTBRIDGE))
    assert str(caught.value) == ("an EventBridge event (Object Created): this controller takes S3 event "
                                 "notifications sent to SQS directly or through SNS")
    # Delivered through an SNS topic all the same, and with no detail-type the reason can name.
    envelope = {"Type": "Notification", "Message": json.dumps({**EVENTBRIDGE, "detail-type": 5})}
    with pytest.raises(PoisonMessage, match=r"^an EventBridge event: this controller takes"):
        uploaded_objects(json.dumps(envelope))


@pytest.mark.parametrize("kind, says", [
    ("SubscriptionConfirmation", "whoever subscribed this queue to the topic must confirm the subscription"),
    ("UnsubscribeConfirmation", "the topic's subscription of this queue was deleted"),
])
def test_an_sns_subscription_message_is_set_aside_naming_it(kind, says):
    envelope = json.dumps({"Type": kind, "MessageId": "165545c9", "Token": "2336412f37",
                           "TopicArn": "arn:aws:sns:eu-west-1:1:t", "Message": "You have chosen to ...",
                           "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"})
    with pytest.raises(PoisonMessage) as caught:
        uploaded_objects(envelope)
    assert str(caught.value).startswith(f"an SNS {kind}, not an S3 event notification: {says}")


def test_the_events_time_is_not_checked_where_the_sequencer_stands_for_it():
    # Only what reaches the Job is: with a sequencer, the time is not part of its name.
    rec = {**record("x.csv", sequencer="0A"), "eventTime": "\ud800"}
    assert uploaded_objects(body(rec))[0].sequencer == "0A"


def test_every_object_an_event_announces_makes_a_job_manifest():
    # What passes the checks can be hashed into a name and written into the Job.
    rec = {**record("x\u00e5\U0001F600.csv", versionId="v\u00e9", eTag="\u00e9", sequencer="\U0001F600"),
           "eventTime": "2026"}
    [obj] = uploaded_objects(json.dumps({"Records": [rec], "RatesSetAsideBy": "j", "RatesSetAsideUid": "\u00fc"}))
    manifest = jobs.manifest(obj, JobSettings(namespace="prod", image="i"))
    json.dumps(manifest).encode()
    assert manifest["metadata"]["annotations"][jobs.REDRIVE_OF] == "\u00fc"


def test_a_missing_version_id_and_etag_are_none():
    rec = record("x.csv")
    del rec["s3"]["object"]["eTag"]
    assert uploaded_objects(body(rec))[0] == UploadedObject("uploads", "x.csv", None, None, 10)


CREATED = '{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": %s}]}'


# Reasons name types as JSON does, and fields by their path in the record: whoever reads one
# wrote JSON, and both the bucket's and the object's field are called "name" or "key".
@pytest.mark.parametrize("text, reason", [
    ("not json", "is not JSON"),
    ("[1, 2]", "not an S3 event notification: the body is a JSON array"),
    ("null", "not an S3 event notification: the body is a JSON null"),
    ('"x"', "not an S3 event notification: the body is a JSON string"),
    ("1.5", "not an S3 event notification: the body is a JSON number"),
    ("true", "not an S3 event notification: the body is a JSON boolean"),
    ("{}", "no Records list"),
    ('{"Records": []}', "no Records list"),
    ('{"Records": [{"eventSource": "aws:sqs"}]}', "eventSource is not aws:s3"),
    ('{"Records": ["x"]}', "eventSource is not aws:s3"),
    ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}',
     "an ObjectCreated record lacks s3.bucket.name"),
    (CREATED % '{"bucket": {"name": "b"}}', "an ObjectCreated record lacks s3.object.key"),
    (CREATED % '{"bucket": {"arn": "arn:aws:s3:::b"}, "object": {"key": "k"}}',
     "an ObjectCreated record lacks s3.bucket.name"),
    (CREATED % '{"bucket": "b", "object": {"key": "k"}}',
     "an ObjectCreated record's s3.bucket is a JSON string, not an object"),
    (CREATED % '[]', "an ObjectCreated record's s3 is a JSON array, not an object"),
    (CREATED % '{"bucket": {"name": "b"}, "object": {"key": 7}}',
     "an ObjectCreated record's s3.object.key is a JSON number, not a string"),
    (CREATED % '{"bucket": {"name": null}, "object": {"key": "k"}}',
     "an ObjectCreated record's s3.bucket.name is a JSON null, not a string"),
    (CREATED % '{"bucket": {"name": ""}, "object": {"key": "k"}}', "an ObjectCreated record's s3.bucket.name is empty"),
    (CREATED % '{"bucket": {"name": "b"}, "object": {"key": ""}}', "an ObjectCreated record's s3.object.key is empty"),
    ('{"Type": "Notification", "Message": "nope"}', "SNS notification's Message is not JSON"),
    ('{"Type": "Notification", "Message": {"Records": []}}',
     "the SNS notification's Message is a JSON object, not a string"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (body(record("x.csv", versionId=5)),
     "an ObjectCreated record's s3.object.versionId is a JSON number, not a string"),
    (body(record("x.csv", versionId=True)),
     "an ObjectCreated record's s3.object.versionId is a JSON boolean, not a string"),
    (body(record("x.csv", eTag=["a"])), "an ObjectCreated record's s3.object.eTag is a JSON array, not a string"),
    (body(record("x.csv", sequencer={})),
     "an ObjectCreated record's s3.object.sequencer is a JSON object, not a string"),
    (body({**record("x.csv"), "eventTime": 1}), "an ObjectCreated record's eventTime is a JSON number, not a string"),
    (body(record("\ud800.csv")), "s3.object.key is not valid UTF-8"),
    (body(record("a%FF.csv")), "s3.object.key is not valid UTF-8"),  # percent-encoded bytes that are no UTF-8
    (body(record("a%ED%A0%80.csv")), "s3.object.key is not valid UTF-8"),  # an encoded surrogate
    (body(record("a%00.csv")), "s3.object.key holds a NUL"),
    (body(record("x.csv", versionId="v\x00")), "s3.object.versionId holds a NUL"),
    (body(record("x.csv", versionId="v\ud800")), "s3.object.versionId is not valid UTF-8"),
    (body(record("x.csv", bucket="up\x00loads")), "s3.bucket.name holds a NUL"),
    (body(record("x.csv", bucket="up\udc80loads")), "s3.bucket.name is not valid UTF-8"),
    # Not in the Job's environment, but hashed into its name and written in its annotations.
    (body(record("x.csv", eTag="ab\ud800")), "an ObjectCreated record's s3.object.eTag is not valid UTF-8"),
    (body(record("x.csv", eTag="ab\x00")), "an ObjectCreated record's s3.object.eTag holds a NUL character"),
    (body(record("x.csv", sequencer="0A\udfff")), "an ObjectCreated record's s3.object.sequencer is not valid UTF-8"),
    (body(record("x.csv", sequencer="0A\x00")), "an ObjectCreated record's s3.object.sequencer holds a NUL"),
    (body({**record("x.csv"), "eventTime": "2026-11-29T04:00:00\ud800"}),
     "an ObjectCreated record's eventTime is not valid UTF-8"),
    (body({**record("x.csv"), "eventTime": "2026-11-29\x00"}), "an ObjectCreated record's eventTime holds a NUL"),
    # Not in the Job's name, but in its annotations and environment.
    (body({**record("x.csv"), "userIdentity": {"principalId": "AWS:AIDA\ud800"}}),
     "an ObjectCreated record's userIdentity.principalId is not valid UTF-8"),
    (body({**record("x.csv"), "userIdentity": {"principalId": "AWS:AIDA\x00"}}),
     "an ObjectCreated record's userIdentity.principalId holds a NUL character"),
    (body({**record("x.csv"), "userIdentity": {"principalId": 7}}),
     "an ObjectCreated record's userIdentity.principalId is a JSON number, not a string"),
    (body({**record("x.csv"), "userIdentity": "AWS:AIDAEXAMPLE"}),
     "an ObjectCreated record's userIdentity is a JSON string, not an object"),
    (json.dumps({"Records": [record("x.csv")], "RatesSetAsideBy": "ingest-0123-2", "RatesSetAsideUid": "u\ud800"}),
     "the notification's RatesSetAsideUid is not valid UTF-8"),
    (json.dumps({"Records": [record("x.csv")], "RatesSetAsideBy": "ingest-0123-2", "RatesSetAsideUid": "u\x00"}),
     "the notification's RatesSetAsideUid holds a NUL"),
])
def test_anything_else_is_a_poison_message_with_the_reason(text, reason):
    with pytest.raises(PoisonMessage) as caught:
        uploaded_objects(text)
    assert reason in str(caught.value)


@pytest.mark.parametrize("bucket, key, refused", [
    ("uploads", "prices/2016/jan.csv", None),
    ("uploads", "prices-archive/jan.csv", "outside this controller's prefix prices/"),  # the stem alone is not it
    ("uploads", "Prices/jan.csv", "outside this controller's prefix prices/"),
    ("uploads-old", "prices/jan.csv", "not to this controller's bucket uploads"),
])
def test_only_uploads_to_the_bucket_and_under_the_whole_prefix_are_taken(bucket, key, refused):
    objects = uploaded_objects(body(record(key, bucket=bucket)))
    if refused is None:
        check_source(objects, "uploads", "prices/")
    else:
        with pytest.raises(PoisonMessage, match=refused):
            check_source(objects, "uploads", "prices/")
