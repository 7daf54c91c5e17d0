"""The control loop: ended Jobs first, then new messages, as capacity allows.

A message is deleted once every object it announces has its Job, so a crash at any
point redelivers it and the deterministic Job names make the second create a no-op.
What cannot be retried - a poison message, a file the job calls invalid, a file whose
Jobs kept failing - is sent to the dead-letter queue with the reason, and then removed.
"""

import datetime
import json
import threading
from urllib.parse import quote_plus

from rates_core.errors import PermanentError, TemporaryError

from . import events, jobs
from .events import UploadedObject
from .kube import JobsApi
from .metrics import Metrics
from .queue import Message, Queue
from .settings import Settings

# Backoff for a message whose Job could not be created: 5 s, doubling, at most 15 min.
MESSAGE_BACKOFF_SECONDS = (5, 900)
# A chain of Jobs for one object longer than this is a bug, not a retry policy.
MAX_CHAIN = 1000

SUCCEEDED, RETRIED, SET_ASIDE = "succeeded", "retried", "set-aside"


class Controller:
    def __init__(self, settings: Settings, kube: JobsApi, uploads: Queue, dead_letters: Queue,
                 metrics: Metrics, log):
        self.settings = settings
        self.kube = kube
        self.uploads = uploads
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.log = log
        # Set by a signal handler; a long poll in progress is finished first.
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.step()
            except TemporaryError as exc:
                self.log.warning("control loop pass failed; retrying", error=str(exc))
                self.stopping.wait(5)

    def step(self) -> None:
        active = self.reconcile()
        self.poll(capacity=self.settings.max_active_jobs - active)
        self.metrics.loop_completed()

    # --- ended Jobs -------------------------------------------------------------

    def reconcile(self) -> int:
        """Act on Jobs that ended and were not yet acted on; the number still running."""
        try:
            listed = self.kube.list()
        except TemporaryError:
            self.metrics.errors.labels("list_jobs").inc()
            raise
        active = 0
        for job in listed:
            ended = jobs.finished(job)
            if ended is None:
                active += 1
            elif jobs.HANDLED not in (job.metadata.annotations or {}):
                self._guarded("handle_job", self._ended, ended)
        self.metrics.active_jobs.set(active)
        return active

    def _ended(self, ended: jobs.Finished) -> None:
        if ended.succeeded:
            result = SUCCEEDED
        elif ended.file_is_invalid:
            result = self._set_aside_file(ended, "invalid_file", "the ingest job rejected the file")
        elif ended.attempt - ended.round_start + 1 < self.settings.max_attempts:
            if not self._retry_due(ended):
                return
            self._create(ended.obj, ended.attempt + 1, round_start=ended.round_start)
            result = RETRIED
        else:
            result = self._set_aside_file(ended, "attempts_exhausted",
                                          f"the file did not load in {self.settings.max_attempts} Jobs")
        self.kube.mark_handled(ended.name, result)
        self.metrics.jobs_finished.labels(result).inc()
        self.log.info("job ended", job=ended.name, bucket=ended.obj.bucket, key=ended.obj.key,
                      attempt=ended.attempt, reason=ended.reason, result=result)

    def _retry_due(self, ended: jobs.Finished) -> bool:
        delay = self.settings.retry_delay_seconds * 2 ** (ended.attempt - ended.round_start)
        if ended.ended_at is None:
            return True
        return _now() >= ended.ended_at + datetime.timedelta(seconds=delay)

    def _set_aside_file(self, ended: jobs.Finished, why: str, summary: str) -> str:
        detail = jobs.last_words(self.kube.termination_message(ended.name))
        reason = f"{summary} ({ended.reason}: {ended.message})" + (f"; the job said: {detail}" if detail else "")
        self.dead_letters.send(notification(ended.obj), {
            "reason": reason, "job": ended.name, "attempts": str(ended.attempt)})
        self.metrics.set_aside.labels(why).inc()
        self.log.warning("file set aside", job=ended.name, bucket=ended.obj.bucket, key=ended.obj.key,
                         reason=reason)
        return SET_ASIDE

    # --- new messages ----------------------------------------------------------

    def poll(self, capacity: int) -> None:
        if capacity <= 0:
            # Full: leave the messages in the queue, where they wait at no cost.
            self.stopping.wait(min(self.settings.poll_wait_seconds, 5))
            return
        try:
            messages = self.uploads.receive(capacity, self.settings.poll_wait_seconds,
                                            self.settings.visibility_timeout)
        except TemporaryError:
            self.metrics.errors.labels("receive").inc()
            raise
        for message in messages:
            self._guarded("handle_message", self.handle, message)

    def handle(self, message: Message) -> None:
        try:
            objects = events.uploaded_objects(message.body)
            for obj in objects:
                self._start(obj)
        except PermanentError as exc:
            self._set_aside_message(message, "poison" if isinstance(exc, events.PoisonMessage) else "rejected",
                                    str(exc))
            return
        except TemporaryError as exc:
            self._retry_message(message, exc)
            return
        self.uploads.delete(message)
        self.metrics.messages.labels("jobs_created" if objects else "ignored").inc()
        self.log.info("message handled", message_id=message.id, objects=len(objects))

    def _start(self, obj: UploadedObject) -> None:
        """Create the object's Job, unless one exists; after a set-aside, a new round of Jobs."""
        for attempt in range(1, MAX_CHAIN + 1):
            if self._create(obj, attempt, round_start=attempt):
                return
            existing = self.kube.get(jobs.job_name(obj, attempt))
            if existing is None:
                raise TemporaryError(f"Job {jobs.job_name(obj, attempt)} was deleted while being looked at")
            if (existing.metadata.annotations or {}).get(jobs.HANDLED) not in (RETRIED, SET_ASIDE):
                return  # a duplicate delivery: this Job, or its retry chain, has it
        raise PermanentError(f"{MAX_CHAIN} Jobs exist for s3://{obj.bucket}/{obj.key}")

    def _create(self, obj: UploadedObject, attempt: int, round_start: int) -> bool:
        manifest = jobs.manifest(obj, self.settings.job, attempt, round_start=round_start)
        created = self.kube.create(manifest)
        if created:
            self.metrics.jobs_created.labels(str(attempt)).inc()
            self.log.info("job created", job=manifest["metadata"]["name"], bucket=obj.bucket, key=obj.key,
                          version_id=obj.version_id, attempt=attempt)
        return created

    def _retry_message(self, message: Message, exc: TemporaryError) -> None:
        if message.receives >= self.settings.max_receives:
            self._set_aside_message(message, "undeliverable",
                                    f"no Job could be created in {message.receives} deliveries: {exc}")
            return
        low, high = MESSAGE_BACKOFF_SECONDS
        delay = min(low * 2 ** (message.receives - 1), high)
        self.log.warning("message will be retried", message_id=message.id, receives=message.receives,
                         retry_in_s=delay, error=str(exc))
        self.metrics.messages.labels("retry_later").inc()
        self.uploads.retry_later(message, delay)

    def _set_aside_message(self, message: Message, why: str, reason: str) -> None:
        self.dead_letters.send(message.body, {"reason": reason, "message-id": message.id})
        self.uploads.delete(message)
        self.metrics.messages.labels("set_aside").inc()
        self.metrics.set_aside.labels(why).inc()
        self.log.warning("message set aside", message_id=message.id, reason=reason)

    def _guarded(self, operation: str, action, *args) -> None:
        """Run one item's action; a temporary failure leaves the item for a later pass."""
        try:
            action(*args)
        except TemporaryError as exc:
            self.metrics.errors.labels(operation).inc()
            self.log.warning("will retry", operation=operation, error=str(exc))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def notification(obj: UploadedObject) -> str:
    """An S3 ObjectCreated notification for ``obj``: what a redrive from the dead-letter
    queue needs to start the file again."""
    record = {"bucket": {"name": obj.bucket}, "object": {"key": quote_plus(obj.key, safe="/")}}
    if obj.version_id:
        record["object"]["versionId"] = obj.version_id
    if obj.etag:
        record["object"]["eTag"] = obj.etag
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": record}]})
