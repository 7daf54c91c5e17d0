"""SQS, seen from the controller: the uploads queue and the queue for files set aside.

botocore's errors are mapped here, once. Nothing the controller does to SQS is
permanent: a missing queue or a denied call is a configuration to fix, so it is a
TemporaryError and the message waits.
"""

import contextlib
import re
import time
from dataclasses import dataclass, field

import boto3.session
import botocore.config
import botocore.exceptions

from rates_core import aws
from rates_core.env import ConfigError
from rates_core.errors import TemporaryError

# SQS caps one receive at 10 messages, and a message attribute value at the message size.
MAX_BATCH = 10
# SQS refuses to keep a message hidden for longer than this after it was received.
MAX_HIDDEN_S = 12 * 3600
MAX_REASON_CHARS = 4000
# Characters SQS refuses in a message or attribute (it allows XML's): a job's error text
# may hold any of them, and a refused send would keep a file from ever being set aside.
_REFUSED = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Message:
    id: str
    body: str
    receipt: str
    receives: int  # ApproximateReceiveCount: 1 on the first delivery
    received_at: float = field(default_factory=time.monotonic)  # SQS hides it 12 h from then, at most


def sqs_client(poll_wait_seconds: int):
    # The read timeout must outlast a long poll; "standard" retries back off on throttling.
    cfg = botocore.config.Config(connect_timeout=5, read_timeout=poll_wait_seconds + 10,
                                 retries={"mode": "standard", "max_attempts": 3})
    try:
        return boto3.session.Session(botocore_session=aws.session()).client("sqs", config=cfg)
    except botocore.exceptions.NoRegionError:
        raise ConfigError("no AWS region: set AWS_DEFAULT_REGION (boto3 does not read AWS_REGION)") from None


@contextlib.contextmanager
def classified(what: str):
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise TemporaryError(f"SQS {what}: {code}: {exc}") from exc
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        # OSError: IRSA's token file, read again at each credential refresh, missing.
        raise TemporaryError(f"SQS {what}: {type(exc).__name__}: {exc}") from exc


class Queue:
    def __init__(self, sqs, url: str):
        self._sqs = sqs
        self.url = url

    def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        with classified("receive"):
            response = self._sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=min(max_messages, MAX_BATCH),
                WaitTimeSeconds=wait_seconds, VisibilityTimeout=visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"])
        return [Message(id=m["MessageId"], body=m.get("Body", ""), receipt=m["ReceiptHandle"],
                        receives=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")))
                for m in response.get("Messages", [])]

    def delete(self, messages: list[Message]) -> None:
        """Delete handled messages, ten to a request (SQS bills by the request)."""
        failed = []
        for start in range(0, len(messages), MAX_BATCH):
            batch = messages[start:start + MAX_BATCH]
            with classified("delete"):
                response = self._sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(batch)])
            failed += [f"{batch[int(f['Id'])].id}: {f.get('Code')}" for f in response.get("Failed", [])]
        if failed:
            # They come back after their visibility timeout and are handled again, harmlessly.
            raise TemporaryError(f"SQS delete failed for {len(failed)} message(s): {', '.join(failed)}")

    def retry_later(self, message: Message, seconds: int) -> None:
        """Hide the message for ``seconds`` more, so its next delivery comes after a backoff."""
        with classified("change visibility"):
            self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=message.receipt,
                                                VisibilityTimeout=seconds)

    def send(self, body: str, attributes: dict[str, str]) -> None:
        values = {name: {"DataType": "String", "StringValue": _REFUSED.sub("?", value[:MAX_REASON_CHARS]) or "-"}
                  for name, value in attributes.items()}
        with classified("send"):
            self._sqs.send_message(QueueUrl=self.url, MessageBody=body, MessageAttributes=values)
