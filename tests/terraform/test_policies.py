"""The IAM policies Terraform gives the controller, the ingest Jobs and the API, enforced.

terraform computes the three permission policies (modules/iam-policies) for a bucket and
queues that exist in a moto_server of this module's own, started with IAM enforcement: an
IAM user per role carries exactly that policy, and the real components run with its keys.
What they need must work, and what they do not need must be refused. A policy that is too
narrow breaks the first kind of test; one that is too wide, the second.

The rds-db:connect grants (the ingest Jobs' database login, and the API's only permission)
are beyond moto: nothing here logs in to RDS with an IAM token. The policy module's
`terraform test` suite asserts those statements as written (the exact user ARN) and that
the API is granted nothing else; here the API's role is refused the bucket and the queues.
"""

import json
import os
import subprocess
import sys

import boto3
import pytest
import requests

from rates_controller.queue import Queue
from rates_core.errors import TemporaryError
from rates_ingest.s3source import Download, ObjectRef, head
from tests.ingest.conftest import ROWS, as_csv, last_run, prices
from tests.support.aws import FAKE_AWS_ENV, start_moto, stop_moto, unique_name
from tests.support.infra import MOTO_ACCOUNT, TERRAFORM_ROOT, apply_module

PREFIX = "prices/"

# IAM authorises SQS's batch calls as their single-message action (DeleteMessageBatch needs
# sqs:DeleteMessage); moto asks for the batch action's own name instead, so the moto user
# gets both for each action the policy grants. Nothing else is added.
MOTO_BATCH_NAMES = {"sqs:DeleteMessage": "sqs:DeleteMessageBatch", "sqs:SendMessage": "sqs:SendMessageBatch",
                    "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch"}


def as_moto_policy(document: str) -> str:
    policy = json.loads(document)
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        statement["Action"] = actions + [MOTO_BATCH_NAMES[a] for a in actions if a in MOTO_BATCH_NAMES]
    return json.dumps(policy)


class Account:
    """A moto_server enforcing IAM, its resources, and keys for each role."""

    def __init__(self, url: str, names: dict, keys: dict):
        self.url, self.names, self.keys = url, names, keys

    def client(self, service: str, role: str):
        key_id, secret = self.keys[role]
        return boto3.client(service, endpoint_url=self.url, region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
                            aws_access_key_id=key_id, aws_secret_access_key=secret)

    def env(self, role: str) -> dict:
        key_id, secret = self.keys[role]
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return {**base, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": key_id,
                "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": ""}


@pytest.fixture(scope="module")
def account(terraform, tmp_path_factory):
    process, url = start_moto(log_path=tmp_path_factory.mktemp("moto-iam") / "moto.log")
    try:
        yield _provision(terraform, url, tmp_path_factory.mktemp("policies"))
    finally:
        stop_moto(process)


def _provision(terraform, url, tmp_path) -> Account:
    root = dict(endpoint_url=url, region_name=FAKE_AWS_ENV["AWS_DEFAULT_REGION"],
                aws_access_key_id="setup", aws_secret_access_key="setup")
    s3, sqs, iam = (boto3.client(s, **root) for s in ("s3", "sqs", "iam"))
    names = {"bucket": unique_name("prices"), "uploads": unique_name("uploads"), "dead": unique_name("dead")}
    s3.create_bucket(Bucket=names["bucket"])
    s3.put_bucket_versioning(Bucket=names["bucket"], VersioningConfiguration={"Status": "Enabled"})
    arns = {}
    for queue in ("uploads", "dead"):
        names[f"{queue}_url"] = sqs.create_queue(QueueName=names[queue])["QueueUrl"]
        arns[queue] = sqs.get_queue_attributes(QueueUrl=names[f"{queue}_url"],
                                               AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    outputs = apply_module(terraform, TERRAFORM_ROOT / "modules" / "iam-policies", {
        "oidc_provider_arn": f"arn:aws:iam::{MOTO_ACCOUNT}:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/T",
        "oidc_issuer": "oidc.eks.us-east-1.amazonaws.com/id/T",
        "namespace": "dev",
        "bucket_arn": f"arn:aws:s3:::{names['bucket']}",
        "prices_prefix": PREFIX,
        "bucket_kms_key_arn": f"arn:aws:kms:us-east-1:{MOTO_ACCOUNT}:key/00000000-0000-0000-0000-000000000000",
        "queue_arn": arns["uploads"],
        "dead_letter_queue_arn": arns["dead"],
        "database_arn": f"arn:aws:rds:us-east-1:{MOTO_ACCOUNT}:db:rates-dev",
        "database_resource_id": "db-ABCDEFGHIJKLMNOPQRSTUVWXY0",
    }, tmp_path)
    policies = {"controller": outputs["controller_policy"], "ingest_job": outputs["ingest_job_policy"],
                "api": outputs["api_policy"],
                "admin": json.dumps({"Version": "2012-10-17",
                                     "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})}
    keys = {}
    for role, document in policies.items():
        iam.create_user(UserName=role)
        iam.put_user_policy(UserName=role, PolicyName="permissions", PolicyDocument=as_moto_policy(document))
        key = iam.create_access_key(UserName=role)["AccessKey"]
        keys[role] = (key["AccessKeyId"], key["SecretAccessKey"])
    # From here on every request is checked against its caller's policies.
    requests.post(f"{url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    return Account(url, names, keys)


def _denied(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    text = str(info.value)
    assert "AccessDenied" in text or "403" in text, text
    return text


# --- the controller -----------------------------------------------------------------------------


def _controller_queues(account):
    sqs = account.client("sqs", "controller")
    return Queue(sqs, account.names["uploads_url"]), Queue(sqs, account.names["dead_url"])


def test_the_controller_can_do_everything_the_controller_does(account):
    admin = account.client("sqs", "admin")
    admin.send_message(QueueUrl=account.names["uploads_url"], MessageBody='{"Records": []}')
    uploads, dead = _controller_queues(account)

    [message] = uploads.receive(max_messages=10, wait_seconds=1, visibility_timeout=30)
    uploads.retry_later(message, 0)  # back in the queue at once
    [again] = uploads.receive(max_messages=10, wait_seconds=1, visibility_timeout=30)
    dead.send(again.body, {"reason": "set aside by the test"})
    uploads.delete([again])

    assert admin.receive_message(QueueUrl=account.names["uploads_url"], WaitTimeSeconds=0).get("Messages") is None
    [aside] = admin.receive_message(QueueUrl=account.names["dead_url"], WaitTimeSeconds=1,
                                    MessageAttributeNames=["All"])["Messages"]
    assert aside["MessageAttributes"]["reason"]["StringValue"] == "set aside by the test"


def test_the_controller_cannot_feed_its_own_queue_read_the_dead_letters_or_touch_files(account):
    uploads, dead = _controller_queues(account)
    with pytest.raises(TemporaryError, match="AccessDenied|403"):
        uploads.send("{}", {"reason": "x"})
    with pytest.raises(TemporaryError, match="AccessDenied|403"):
        dead.receive(max_messages=1, wait_seconds=0, visibility_timeout=10)
    s3 = account.client("s3", "controller")
    _denied(lambda: s3.list_objects_v2(Bucket=account.names["bucket"]))
    _denied(lambda: account.client("sqs", "controller").purge_queue(QueueUrl=account.names["uploads_url"]))


# --- the ingest job -----------------------------------------------------------------------------


def _upload(account, key: str, body: bytes) -> None:
    account.client("s3", "admin").put_object(Bucket=account.names["bucket"], Key=key, Body=body)


def _ingest(account, dsn: str, key: str) -> subprocess.CompletedProcess:
    env = {**account.env("ingest_job"), "DATABASE_URL": dsn}
    return subprocess.run([sys.executable, "-m", "rates_ingest", "--bucket", account.names["bucket"], "--key", key],
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_ingest_job_loads_a_file_under_the_prefix_with_its_role(account, world, dsn):
    _upload(account, f"{PREFIX}2016/january.csv", as_csv(ROWS))
    result = _ingest(account, dsn, f"{PREFIX}2016/january.csv")
    assert result.returncode == 0, result.stderr
    assert prices(world) == sorted((o, d, day, p) for o, d, day, p in ROWS)


def test_the_ingest_job_can_order_two_versions_of_a_key_with_its_role(account):
    # The call a load makes when two versions' times tie (loader.py): ListObjectVersions.
    key = f"{PREFIX}2016/twice.csv"
    _upload(account, key, as_csv(ROWS[:1]))
    _upload(account, key, as_csv(ROWS[1:]))
    s3 = account.client("s3", "ingest_job")
    ref = ObjectRef(account.names["bucket"], key, None)
    info = head(s3, ref)  # the newest version
    older = [v["VersionId"] for v in account.client("s3", "admin").list_object_versions(
        Bucket=account.names["bucket"], Prefix=key)["Versions"] if v["VersionId"] != info.version_id]
    assert Download(s3, ref, info).newest_of({info.version_id, *older}) == info.version_id
    # That listing is limited to the prefix by an s3:prefix condition, which moto does not
    # evaluate; modules/iam-policies/tests/policies.tftest.hcl asserts the condition.


def test_the_ingest_job_cannot_read_outside_the_prefix_nor_write(account, world, dsn):
    _upload(account, "elsewhere/january.csv", as_csv(ROWS))
    result = _ingest(account, dsn, "elsewhere/january.csv")
    # Forbidden is not "gone": the job cannot tell, so it leaves the decision to a retry.
    assert result.returncode == 1, result.stdout + result.stderr
    assert last_run(world)["status"] == "failed"
    assert "403" in last_run(world)["error"]
    assert prices(world) == []
    s3 = account.client("s3", "ingest_job")
    _denied(lambda: s3.put_object(Bucket=account.names["bucket"], Key=f"{PREFIX}x.csv", Body=b"x"))
    _denied(lambda: s3.delete_object(Bucket=account.names["bucket"], Key=f"{PREFIX}2016/january.csv"))
    _denied(lambda: account.client("sqs", "ingest_job").receive_message(QueueUrl=account.names["uploads_url"]))


# --- the API ------------------------------------------------------------------------------------


def test_the_api_role_reaches_no_file_or_queue(account):
    # Its one grant, rds-db:connect as rates_api, is checked by RDS at login, which moto
    # does not do (policies.tftest.hcl asserts it); the bucket and the queues refuse it.
    s3, sqs = account.client("s3", "api"), account.client("sqs", "api")
    _upload(account, f"{PREFIX}2016/api.csv", as_csv(ROWS))
    _denied(lambda: s3.get_object(Bucket=account.names["bucket"], Key=f"{PREFIX}2016/api.csv"))
    _denied(lambda: s3.list_objects_v2(Bucket=account.names["bucket"]))
    _denied(lambda: s3.put_object(Bucket=account.names["bucket"], Key=f"{PREFIX}x.csv", Body=b"x"))
    for url in (account.names["uploads_url"], account.names["dead_url"]):
        _denied(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0))
        _denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="{}"))
