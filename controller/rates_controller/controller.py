"""The control loop: ended Jobs first, then new messages, as capacity allows.

A message is deleted once every object it announces has its Job, so a crash at any
point redelivers it and the deterministic Job names make the second create a no-op.
What cannot be retried - a poison message, a file the job calls invalid, a file whose
Jobs kept failing - is sent to the dead-letter queue with the reason, and then removed.

That send is at least once: a crash after it and before the Job is labelled (or the
poison message deleted) sends the same entry again. Sent back twice, such a file starts
one new round: the round's first Job has the UID of the Job that set the file aside, and
so does each copy. tests/controller/test_crashes.py kills the controller before and after
each of its calls to the API server and SQS, and checks what a new one makes of it;
tests/controller/test_faults.py makes each of those calls fail once instead.

Two controllers can overlap (a partitioned node's old pod beside its replacement, or the
Deployment scaled to 2). A message both receive (its visibility timeout ran out) and an
ended Job both act on still make one Job and one retry: the second create meets the name
(409) and counts nothing. The label is written on the version of the Job that was listed,
so of two controllers that saw it ended, one label lands; the other's gets 409 Conflict and
that one counts the Job in neither jobs_finished nor errors. What is at least once stays
so: both may send the file (or a poison message) to the dead-letter queue before either
has noted it, so its entry can be there once per controller, the same entry. Each counts
the running Jobs but receives for itself, so together they may start up to twice
MAX_ACTIVE_JOBS. tests/controller/test_two_controllers.py runs two, one call at a time.
"""

import datetime
import math
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from rates_core import logs, s3events
from rates_core.errors import PermanentError, TemporaryError

from . import events, jobs
from .events import UploadedObject
from .kube import REQUEST_TIMEOUT, Conflict, JobsApi, QuotaFull, Unreachable
from .metrics import JOB_RESULTS, Metrics
from .queue import MAX_HIDDEN_S, Message, Queue
from .settings import Settings

# Backoff for a message whose Job could not be created: 5 s, doubling, at most 15 min.
MESSAGE_BACKOFF_SECONDS = (5, 900)
# The longest wait before a file's next Job, however many attempts it has had.
MAX_RETRY_DELAY = datetime.timedelta(days=1)
# A chain of Jobs for one object longer than this is a bug, not a retry policy.
MAX_CHAIN = 1000
# How long a retry's Job may keep failing to be created, from the first failure, for a
# reason that may pass (an admission policy or webhook, the API server down) before the
# file is set aside. Counted by this process: a restart starts the clock again. Not for a
# full quota, which the retry waits out however long it lasts (see _hold_retry).
RETRY_CREATE_GIVE_UP = datetime.timedelta(hours=1)
# The largest ttlSecondsAfterFinished (an int32).
INT32_MAX = 2**31 - 1

SUCCEEDED, RETRIED, SET_ASIDE = JOB_RESULTS

# How often the Jobs of messages and retries held for a full quota are tried again (see
# _hold and _hold_retry).
QUOTA_RECHECK_SECONDS = 10
# A held message is let go this long before SQS's limit on hiding it: the monotonic clock
# starts when the receive's answer arrives, after SQS's own.
HIDDEN_MARGIN_S = 60


@dataclass
class Batch:
    """What the messages of one receive share.

    Once a Job create in it has failed (``failed``), the rest of the batch waits its backoff
    without trying: what failed (the API server, a full quota) would fail them too, and
    against a hung API server each try takes the read timeout, so ten of them would outlast
    the messages' visibility, and their backoff with it. A message on its last delivery is
    tried all the same while a create begun now would still end within the visibility
    timeout (``last_try_by``): it is then set aside for what its own create says, not for
    another message's; after that it is only sent back.
    """

    last_try_by: float  # time.monotonic()
    failed: TemporaryError | None = None


class PassFailed(TemporaryError):
    """A call the whole pass needs failed; ``operation`` names it, as the errors metric does."""

    def __init__(self, operation: str, error: TemporaryError):
        super().__init__(str(error))
        self.operation = operation


class Controller:
    def __init__(self, settings: Settings, kube: JobsApi, uploads: Queue, dead_letters: Queue,
                 metrics: Metrics, log):
        self.settings = settings
        self.kube = kube
        self.uploads = uploads
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.log = log
        # Set on SIGTERM/SIGINT by cli's watcher thread, never in the handler itself (see
        # cli.py); a long poll in progress is finished first.
        self.stopping = threading.Event()
        # Ended Jobs whose file went to the dead-letter queue but whose label did not land
        # yet (the patch failed): the next pass only labels them, instead of sending again.
        self._set_aside: set[str] = set()
        # When creating an ended Job's retry first failed for a reason that may pass, by its uid.
        # A duration in this process, so on the monotonic clock: a clock step must not end it.
        self._retry_failing_since: dict[str, float] = {}
        # Ended Jobs whose retry a full ResourceQuota refused, by uid: since when, and when to
        # try again (time.monotonic()). See _hold_retry.
        self._retries_held: dict[str, tuple[float, float]] = {}
        # Messages whose Job a full ResourceQuota refused: kept hidden and tried again each
        # pass, never received again meanwhile (see _hold).
        self._held: list[Message] = []
        self._held_before: set[str] = set()  # ids of the messages held when this try began
        self._next_held_try = 0.0  # time.monotonic()
        self._created = 0  # first Jobs created by this pass's messages, for slots_in_use

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.step()
            except TemporaryError as exc:
                # A "will retry" line with the operation, as _guarded writes: the errors
                # alert and the runbook send operators to these lines.
                operation = exc.operation if isinstance(exc, PassFailed) else None
                self.log.warning("will retry", operation=operation, error=str(exc))
                # Alive, even so: restarting would not bring SQS or the API back.
                self.metrics.loop_completed()
                self.stopping.wait(5)

    def step(self) -> None:
        busy = self.reconcile()
        self._created = 0
        self.poll(capacity=self.settings.max_active_jobs - busy)
        # Again after the creates: between a pass that sees its Jobs end and the next, the
        # gauge would dip below full during a backlog, and reset the at-capacity alert.
        self.metrics.slots_in_use.set(busy + self._created)
        self.metrics.held.set(len(self._held) + len(self._retries_held))
        self.metrics.loop_completed()

    # --- ended Jobs -------------------------------------------------------------

    def reconcile(self) -> int:
        """Act on Jobs that ended; the number of slots taken (running Jobs and due retries)."""
        try:
            listed = self.kube.unhandled()
        except TemporaryError as exc:
            self.metrics.errors.labels("list_jobs").inc()
            # Not known until a list is answered: the last pass's figures would show a
            # backlog (and keep the at-capacity alert going) or an idle controller, either
            # of which may have ended since.
            self.metrics.active_jobs.set(math.nan)
            self.metrics.slots_in_use.set(math.nan)
            raise PassFailed("list_jobs", exc) from exc
        ended_jobs = [ended for ended in map(jobs.finished, listed) if ended is not None]
        running = len(listed) - len(ended_jobs)
        busy = running
        # Those another controller has acted on since, or that were deleted, are waited for no more.
        uids = {ended.uid for ended in ended_jobs}
        for waiting in (self._retries_held, self._retry_failing_since):
            for uid in waiting.keys() - uids:
                del waiting[uid]
        # Once the API server leaves a call unanswered, the rest wait for the next pass (they
        # are listed again): each would wait as long, and against a hung server a pass over
        # a few ended Jobs outlasted the liveness probe's patience.
        unreachable = False
        for ended in ended_jobs:
            retry_waits = not ended.succeeded and not ended.file_is_invalid and self._retries_left(ended)
            if unreachable or retry_waits and (busy >= self.settings.max_active_jobs or not self._retry_due(ended)
                                               or self._retry_held(ended)):
                if retry_waits:
                    busy += 1  # its retry will take a slot: hold one for it
                continue
            try:
                handled = self._guarded("handle_job", self._ended, ended, stop_on=Unreachable)
            except Unreachable:
                unreachable = handled = True
            if handled and retry_waits:
                busy += 1
        self.metrics.active_jobs.set(running)
        self.metrics.slots_in_use.set(busy)
        return busy

    def _ended(self, ended: jobs.Finished) -> None:
        # Sent to the dead-letter queue by an earlier pass whose label did not land: only label it.
        result = SET_ASIDE if ended.uid in self._set_aside else self._act_on(ended)
        if result is None:
            return  # its retry is held for a full quota: the Job stays as it is
        if result == SET_ASIDE:
            self._set_aside.add(ended.uid)
        labelled = self._label(ended, result)
        self._set_aside.discard(ended.uid)
        self._retry_failing_since.pop(ended.uid, None)
        held = self._retries_held.pop(ended.uid, None)
        if labelled:
            self.metrics.jobs_finished.labels(result).inc()
        self.log.info("job ended", job=ended.name, bucket=ended.obj.bucket, key=ended.obj.key,
                      attempt=ended.attempt, reason=ended.reason, result=result,
                      labelled_by="this controller" if labelled else "another controller",
                      **({"held_for_quota_s": round(time.monotonic() - held[0])} if held else {}))

    def _label(self, ended: jobs.Finished, result: str) -> bool:
        """Label the ended Job with ``result``; False if another controller labelled it
        since it was listed (two at once: both acted on it, one label lands)."""
        try:
            self.kube.mark_handled(ended.name, result, self._ttl_from_now(ended), ended.resource_version)
            return True
        except Conflict:
            job = self.kube.get(ended.name)
            if job is not None and jobs.HANDLED not in (job.metadata.labels or {}):
                raise  # changed for another reason: the next pass lists it as it is now
            return False

    def _ttl_from_now(self, ended: jobs.Finished) -> int:
        """JOB_TTL_SECONDS from now, as ttlSecondsAfterFinished, which Kubernetes counts from
        the Job's end: a Job acted on later than that (a retry not yet due, every slot
        taken, the controller down) was deleted, pods and logs, the moment it was labelled."""
        ttl = self.settings.job.ttl_seconds
        if ended.ended_at is not None:
            ttl += max(0, math.ceil((_now() - ended.ended_at).total_seconds()))
        return min(ttl, INT32_MAX)

    def _act_on(self, ended: jobs.Finished) -> str | None:
        """Retry the ended Job's file or set it aside, as its end calls for; the result, or
        None if a full quota refused the retry (held, see _hold_retry)."""
        if ended.succeeded:
            result = SUCCEEDED
        elif ended.file_is_invalid:
            result = self._set_aside_file(ended, "invalid_file", "the ingest job rejected the file")
        elif self._retries_left(ended):
            try:
                self._create_next(ended)
                result = RETRIED
            except PermanentError as exc:
                result = self._set_aside_file(ended, "rejected", f"its next Job cannot be created: {exc}")
            except QuotaFull as exc:
                self._hold_retry(ended, exc)
                return None
            except TemporaryError as exc:
                self._retries_held.pop(ended.uid, None)  # another failure now: tried each pass, and given up
                since = self._retry_failing_since.setdefault(ended.uid, time.monotonic())
                if time.monotonic() - since < RETRY_CREATE_GIVE_UP.total_seconds():
                    raise
                result = self._set_aside_file(ended, "rejected",
                                              f"its next Job could not be created for {RETRY_CREATE_GIVE_UP}: {exc}")
        else:
            result = self._set_aside_file(ended, "attempts_exhausted",
                                          f"the file did not load in {ended.round_job} Jobs")
        return result

    def _hold_retry(self, ended: jobs.Finished, refused: QuotaFull) -> None:
        """Keep the ended Job as it is, with its slot, and try its retry again in
        QUOTA_RECHECK_SECONDS, as a held message's Job (_hold).

        A full quota is no fault of the file's and lasts until Jobs reach their TTL (hours
        in dev and staging, in a backfill): tried each pass and set aside after
        RETRY_CREATE_GIVE_UP, every file that failed once meanwhile went to the dead-letter
        queue. So it waits as long as the quota is full, as held messages do: the slot it
        keeps could take no other Job meanwhile. A restart loses nothing: the Job, not yet
        labelled, is listed again, and the new process holds its retry in its turn. The failed
        Job counts in the quota too, with no TTL until it is acted on, so a quota no larger
        than the slots can be filled by such Jobs alone: then only raising it lets them go on.
        """
        # The quota is the API server's last admission check (after the admission policies
        # and webhooks): a refusal by it is an answer, so whatever failed before has passed.
        self._retry_failing_since.pop(ended.uid, None)
        now = time.monotonic()
        held = self._retries_held.get(ended.uid)
        if held is None:  # once, not at each try
            self.metrics.errors.labels("handle_job").inc()
            self.log.warning("retry held: the namespace's quota has no room for its Job", job=ended.name,
                             bucket=ended.obj.bucket, key=ended.obj.key, attempt=ended.attempt, error=str(refused))
        self._retries_held[ended.uid] = (held[0] if held else now, now + QUOTA_RECHECK_SECONDS)

    def _retry_held(self, ended: jobs.Finished) -> bool:
        """Whether the ended Job's retry, refused by a full quota, waits for its next try."""
        held = self._retries_held.get(ended.uid)
        return held is not None and time.monotonic() < held[1]

    def _retries_left(self, ended: jobs.Finished) -> bool:
        return ended.round_job < self.settings.max_attempts

    def _retry_due(self, ended: jobs.Finished) -> bool:
        if ended.ended_at is None:
            return True
        # In whole seconds first: a timedelta of the uncapped delay could overflow.
        seconds = self.settings.retry_delay_seconds * 2 ** min(ended.round_job - 1, 100)
        delay = datetime.timedelta(seconds=min(seconds, MAX_RETRY_DELAY.total_seconds()))
        return _now() >= ended.ended_at + delay

    def _create_next(self, ended: jobs.Finished) -> None:
        def ours(existing) -> bool:
            # Created by an earlier pass that stopped before labelling `ended`; a Job of an
            # older chain only holds the name, so go on past it.
            return _annotation(existing, jobs.PREVIOUS) == ended.uid

        self._create_free(ended.obj, ended.attempt + 1, ended.round_start, ours, previous=ended.uid,
                          round_job=ended.round_job + 1)

    def _set_aside_file(self, ended: jobs.Finished, why: str, summary: str) -> str:
        words = jobs.pod_words(self.kube.termination_message(ended.name))
        reason = f"{summary} ({ended.reason}: {ended.message})" + (f"; {words}" if words else "")
        if not words and ended.reason == "DeadlineExceeded":
            # Not the file's fault, most likely, but the Job controller has deleted the pods
            # by now, and with them what kept them from running: point where to look.
            reason += ("; no pod of it left a word: it may never have started (an image that cannot be "
                       "pulled, a missing Secret, no node for it), or was stopped before it could say why; "
                       "the namespace's events say which")
        self.dead_letters.send(notification(ended.obj, ended.name, ended.uid), {
            "reason": reason, "job": ended.name, "attempts": str(ended.round_job)})
        self.metrics.set_aside.labels(why).inc()
        self.log.warning("file set aside", job=ended.name, bucket=ended.obj.bucket, key=ended.obj.key,
                         reason=reason)
        return SET_ASIDE

    # --- new messages ----------------------------------------------------------

    def poll(self, capacity: int) -> None:
        if self.stopping.is_set():
            # Stopped during the pass over ended Jobs: a batch taken now could be cut off
            # by the kill at the end of the grace period, hidden for its visibility timeout.
            return
        if self._held:
            capacity = self._try_held(capacity)
        if capacity <= 0:
            # Full: leave the messages in the queue, where they wait at no cost. Looked at
            # again each second, so a slot is taken soon after its Job ends: at 5 s a
            # backfill of small files drained 3.2 times slower than its loads took.
            self.stopping.wait(min(self.settings.poll_wait_seconds, 1))
            return
        try:
            messages = self.uploads.receive(capacity, self.settings.poll_wait_seconds,
                                            self.settings.visibility_timeout)
        except TemporaryError as exc:
            self.metrics.errors.labels("receive").inc()
            raise PassFailed("receive", exc) from exc
        done: list[Message] = []
        # A create, and the read that checks whether it took effect when its answer was lost.
        batch = Batch(time.monotonic() + self.settings.visibility_timeout - 2 * sum(REQUEST_TIMEOUT))
        for message in messages:
            # Every line about the message, its Jobs' included, names it: an upload can be
            # followed from its notification to its Job (and on by the Job's bucket, key
            # and version to the ingest run's record).
            with logs.bound(message_id=message.id):
                if not self._guarded("handle_message", self.handle, message, done, batch):
                    self._guarded("set_aside_message", self._set_aside_message, message, done, "unexpected",
                                  "the controller failed on this message; see its log")
        # After the batch: a crash before this redelivers the messages, and their Jobs exist.
        self._guarded("delete_messages", self.uploads.delete, done)

    def _try_held(self, capacity: int) -> int:
        """Try the held messages again, as many as there are slots; the capacity left for
        new messages: none while any is still held (the quota is still full)."""
        if time.monotonic() < self._next_held_try:
            return 0
        self._next_held_try = time.monotonic() + QUOTA_RECHECK_SECONDS
        held, self._held = self._held, []
        self._held_before = {message.id for message in held}
        done: list[Message] = []
        batch = Batch(time.monotonic() + self.settings.visibility_timeout - 2 * sum(REQUEST_TIMEOUT))
        for number, message in enumerate(held):
            with logs.bound(message_id=message.id):
                if number >= capacity:
                    self._guarded("hold_message", self._hold, message, None)
                elif not self._guarded("handle_message", self.handle, message, done, batch):
                    self._guarded("set_aside_message", self._set_aside_message, message, done, "unexpected",
                                  "the controller failed on this message; see its log")
        self._guarded("delete_messages", self.uploads.delete, done)
        return 0 if self._held else capacity - len(held)

    def _hold(self, message: Message, refused: QuotaFull | None) -> None:
        """Keep the message hidden, to try its Job again next pass.

        A full quota is no fault of the file's, and waits for Jobs to reach their TTL
        (hours in dev and staging): sent back, the message would be received again and
        again meanwhile, and each delivery counts towards setting it aside, here and by
        SQS's own maxReceiveCount. Held, it is received once every 12 hours, as SQS hides
        a message for that long after its receive at most. If the controller stops, it
        comes back after its visibility timeout.
        """
        # SQS refused an extension past the 12 hours, and the message dropped out of the held
        # ones unsaid: the gauge fell to 0 and the message came back as a new delivery.
        left = int(MAX_HIDDEN_S - (time.monotonic() - message.received_at)) - HIDDEN_MARGIN_S
        if left <= QUOTA_RECHECK_SECONDS:
            self.log.info("held message let go: SQS hides a message 12 h after its receive at most; it comes "
                          "back, one more delivery, and is held again while the quota is full")
            return
        self.uploads.retry_later(message, min(max(self.settings.visibility_timeout, 3 * QUOTA_RECHECK_SECONDS), left))
        self._held.append(message)
        if refused is not None and message.id not in self._held_before:  # once, not at each try
            self.metrics.errors.labels("create_job").inc()
            self.metrics.messages.labels("held").inc()
            self.log.warning("message held: the namespace's quota has no room for its Job", error=str(refused))

    def handle(self, message: Message, done: list[Message], batch: Batch) -> None:
        """Act on one message of ``batch``; append it to ``done`` if it is to be deleted."""
        try:
            announced = events.announcement(message.body)
            events.check_source(announced.objects, self.settings.uploads_bucket, self.settings.uploads_prefix)
        except events.PoisonMessage as exc:
            self._set_aside_message(message, done, "poison", str(exc))
            return
        # Only the first few: a hand-made message may hold many records.
        with logs.bound(keys=[f"s3://{o.bucket}/{o.key}" for o in announced.objects[:5]]):
            self._handle_objects(message, announced, done, batch)

    def _handle_objects(self, message: Message, announced: events.Announcement, done: list[Message],
                        batch: Batch) -> None:
        objects = announced.objects
        if objects and isinstance(batch.failed, QuotaFull):
            self._hold(message, batch.failed)  # not tried: the quota is as full for it
            return
        if objects and batch.failed and self._held_back(message, batch):
            # Outside the handlers below: if SQS fails this too, the message comes back as
            # it is, and is not set aside for it.
            self._back_off(message, f"not tried, as a Job create failed earlier in this batch: {batch.failed}")
            return
        try:
            created = sum(self._start(obj) for obj in objects)
        except PermanentError as exc:
            self._set_aside_message(message, done, "rejected", str(exc))
            return
        except QuotaFull as exc:
            batch.failed = exc
            self._hold(message, exc)
            return
        except TemporaryError as exc:
            batch.failed = batch.failed or exc
            self.metrics.errors.labels("create_job").inc()
            self._retry_message(message, done, exc)
            return
        self._created += created
        done.append(message)
        outcome = "jobs_created" if created else "duplicate" if objects else "ignored"
        self.metrics.messages.labels(outcome).inc()
        self.log.info("message handled", objects=len(objects), jobs_created=created, outcome=outcome,
                      **_made_no_job(announced))

    def _held_back(self, message: Message, batch: Batch) -> bool:
        last = message.receives >= self.settings.max_receives
        return not last or time.monotonic() > batch.last_try_by

    def _start(self, obj: UploadedObject) -> bool:
        """Create the object's Job, unless one has it in hand; sent back from the dead-letter
        queue after a set-aside, a new round."""
        def in_hand(existing) -> bool:
            # The round this notification sent back began, by an earlier delivery of it: it
            # is a duplicate even if that round has been set aside again since.
            if obj.set_aside_uid and _annotation(existing, jobs.REDRIVE_OF) == obj.set_aside_uid:
                return True
            # Running, waiting for its retry or loaded: this delivery is a duplicate. So is a
            # second delivery of a set-aside file's event, unless it was sent back.
            passed = (RETRIED, SET_ASIDE) if obj.redriven else (RETRIED,)
            return (existing.metadata.labels or {}).get(jobs.HANDLED) not in passed

        return self._create_free(obj, 1, None, in_hand)

    def _create_free(self, obj: UploadedObject, attempt: int, round_start: int | None,
                     taken_care_of: Callable, previous: str | None = None, round_job: int = 1) -> bool:
        """Create the Job at the first free attempt number from ``attempt``; False if an
        existing Job is ``taken_care_of`` the object. ``round_start`` None starts a round."""
        for number in range(attempt, attempt + MAX_CHAIN):
            if self._create(obj, number, number if round_start is None else round_start, previous, round_job):
                return True
            name = jobs.job_name(obj, number)
            existing = self.kube.get(name)
            if existing is None:
                raise TemporaryError(f"Job {name} was deleted while being looked at")
            if taken_care_of(existing):
                return False
        raise PermanentError(f"{MAX_CHAIN} Jobs exist for s3://{obj.bucket}/{obj.key}")

    def _create(self, obj: UploadedObject, attempt: int, round_start: int, previous: str | None,
                round_job: int) -> bool:
        manifest = jobs.manifest(obj, self.settings.job, attempt, round_start=round_start, previous=previous,
                                 round_job=round_job)
        manifest["metadata"]["annotations"][jobs.CREATE_ID] = uuid.uuid4().hex
        try:
            created = self.kube.create(manifest)
        except TemporaryError:
            # The create may have taken effect though its answer was lost (a timeout, a cut
            # connection): set aside now, on a last delivery, the file would load regardless.
            if not self._made_anyway(manifest):
                raise
            created = True
        if created:
            self.metrics.jobs_created.labels("first" if round_job == 1 else "retry").inc()
            self.log.info("job created", job=manifest["metadata"]["name"], bucket=obj.bucket, key=obj.key,
                          version_id=obj.version_id, attempt=attempt)
        return created

    def _made_anyway(self, manifest: dict) -> bool:
        """Whether the Job of ``manifest`` exists, as made from it, after a failed create."""
        try:
            existing = self.kube.get(manifest["metadata"]["name"])
        except TemporaryError:
            return False
        ours = manifest["metadata"]["annotations"][jobs.CREATE_ID]
        return existing is not None and (existing.metadata.annotations or {}).get(jobs.CREATE_ID) == ours

    def _retry_message(self, message: Message, done: list[Message], exc: TemporaryError) -> None:
        if message.receives >= self.settings.max_receives:
            self._set_aside_message(message, done, "undeliverable",
                                    f"no Job could be created in {message.receives} deliveries: {exc}")
            return
        self._back_off(message, str(exc))

    def _back_off(self, message: Message, error: str) -> None:
        delay = message_backoff(message.receives)
        self.log.warning("message will be retried", receives=message.receives,
                         retry_in_s=delay, error=error)
        self.metrics.messages.labels("retry_later").inc()
        self.uploads.retry_later(message, delay)

    def _set_aside_message(self, message: Message, done: list[Message], why: str, reason: str) -> None:
        self.dead_letters.send(message.body, {"reason": reason, "message-id": message.id})
        done.append(message)
        self.metrics.messages.labels("set_aside").inc()
        self.metrics.set_aside.labels(why).inc()
        self.log.warning("message set aside", reason=reason)

    def _guarded(self, operation: str, action, *args, stop_on: type | tuple = ()) -> bool:
        """Run one item's action; a failure leaves the item for a later pass. True if it ran.

        Any exception is caught: one odd message or Job must not stop the loop for all others.
        A TemporaryError of a ``stop_on`` type is counted, logged, then raised again, for the
        caller to stop the other items' actions too.
        """
        try:
            action(*args)
            return True
        except TemporaryError as exc:
            self.metrics.errors.labels(operation).inc()
            self.log.warning("will retry", operation=operation, error=str(exc))
            if isinstance(exc, stop_on):
                raise
            return True  # not the item's fault: it is retried as it is
        except Exception:  # noqa: BLE001 - see the docstring
            self.metrics.errors.labels(operation).inc()
            self.log.exception("unexpected error", operation=operation)
            return False


def message_backoff(receives: int) -> int:
    """Seconds a message whose Job could not be created waits after its ``receives``-th delivery."""
    low, high = MESSAGE_BACKOFF_SECONDS
    return min(low * 2 ** min(receives - 1, 20), high)


def _made_no_job(announced: events.Announcement) -> dict:
    """For the "message handled" line: the records of the message that made no Job, so that
    an operator who looks for an upload's Job sees why there is none."""
    said = {}
    if announced.skipped:
        said["skipped"] = announced.skipped[:5]  # the first few, as for the keys
    if announced.test_event:
        said["test_event"] = True
    return said


def _annotation(job, name: str) -> str | None:
    return (job.metadata.annotations or {}).get(name)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def notification(obj: UploadedObject, set_aside_by: str, uid: str | None = None) -> str:
    """An S3 ObjectCreated notification for ``obj``, marked as set aside by the Job named
    ``set_aside_by`` (of UID ``uid``): what a redrive from the dead-letter queue needs to
    start the file again, once, with who uploaded it."""
    marks = {events.SET_ASIDE_BY: set_aside_by, **({events.SET_ASIDE_UID: uid} if uid else {})}
    return s3events.object_created(obj.bucket, obj.key, version_id=obj.version_id, etag=obj.etag,
                                   sequencer=obj.sequencer, principal_id=obj.uploaded_by, **marks)
