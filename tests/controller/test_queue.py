"""The SQS boundary against moto_server."""

import pytest

from rates_controller.queue import MAX_REASON_CHARS, Message, Queue, sqs_client
from rates_core.errors import TemporaryError
from tests.support.aws import silent_sts, web_identity


def test_a_reason_with_characters_sqs_refuses_still_sets_the_file_aside(sqs):
    # A job's error text can hold any character; real SQS refuses NUL and most control
    # characters in attributes, which would keep the file from ever being set aside.
    Queue(sqs.client, sqs.dead_url).send("{}", {"reason": "bad byte \x00 and bell \x07\tend\n", "job": ""})

    [dead] = sqs.dead_letters()
    assert dead["reason"] == "bad byte ? and bell ?\tend\n"
    assert dead["job"] == "-"  # SQS refuses an empty attribute value


def test_a_long_reason_is_cut_to_a_size_sqs_takes(sqs):
    Queue(sqs.client, sqs.dead_url).send("{}", {"reason": "x" * 300_000})

    [dead] = sqs.dead_letters()
    assert dead["reason"] == "x" * MAX_REASON_CHARS


def test_handled_messages_are_deleted_in_batches_of_ten(sqs):
    for i in range(23):
        sqs.send(f"m{i}")
    queue = Queue(sqs.client, sqs.uploads_url)
    received = []
    while len(received) < 23:
        received += queue.receive(10, 1, 30)

    queue.delete(received)

    assert sqs.counts() == (0, 0)


def test_messages_sqs_did_not_delete_are_reported(sqs):
    # They come back after their visibility timeout; the error is what the alert counts.
    sqs.send("m")
    queue = Queue(sqs.client, sqs.uploads_url)
    [received] = queue.receive(10, 1, 30)
    stale = Message(id="old", body="{}", receipt="not-a-receipt-handle", receives=1)
    with pytest.raises(TemporaryError, match=r"delete failed for 1 message\(s\): old: ReceiptHandleIsInvalid"):
        queue.delete([received, stale])
    assert sqs.counts() == (0, 0)  # the good one went


def _web_identity(aws_env, token_file) -> None:
    web_identity(aws_env, token_file, "rates-prod-controller")


def test_a_missing_irsa_token_file_is_a_retry_not_a_crash(aws_env, tmp_path):
    # botocore reads the file again at each hourly refresh; the kubelet may be rewriting it.
    _web_identity(aws_env, tmp_path / "no-such-token")
    queue = Queue(sqs_client(20), "https://sqs.eu-west-1.amazonaws.com/123456789012/uploads")
    with pytest.raises(TemporaryError, match="SQS receive: .*no-such-token"):
        queue.receive(10, 1, 30)


@pytest.mark.timeout(60)  # botocore's defaults would hang for 3 minutes, past the liveness limit
def test_a_silent_sts_gives_up_in_seconds(aws_env, tmp_path):
    with silent_sts(aws_env, tmp_path / "token", "rates-prod-controller") as sts:
        queue = Queue(sqs_client(20), "https://sqs.eu-west-1.amazonaws.com/123456789012/uploads")
        with pytest.raises(TemporaryError, match="SQS receive: "):
            queue.receive(10, 1, 30)
        assert len(sts.accepted) == 2  # it did ask STS, and tried once more only
