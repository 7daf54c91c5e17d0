"""When the controller retries: a file's next Job and a message whose Job could not be
created (pure logic, with plain fakes for the queue)."""

import datetime
from types import SimpleNamespace

import pytest

from rates_controller import controller as controller_module
from rates_controller import jobs
from rates_controller.controller import Controller
from rates_controller.events import UploadedObject
from rates_controller.jobs import Finished
from rates_controller.metrics import Metrics
from rates_controller.queue import Message
from rates_controller.settings import JobSettings
from rates_core import logs
from rates_core.errors import TemporaryError

ENDED = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def make(**settings) -> Controller:
    defaults = dict(retry_delay_seconds=60, max_receives=100)
    return Controller(SimpleNamespace(**{**defaults, **settings}), kube=None, uploads=None, dead_letters=None,
                      metrics=Metrics(), log=logs.get_logger("test"))


def ended(round_job: int, attempt: int | None = None) -> Finished:
    attempt = attempt or round_job
    return Finished(name="j", uid="u", obj=None, attempt=attempt, round_start=1, round_job=round_job,
                    succeeded=False, reason="BackoffLimitExceeded", message="", ended_at=ENDED)


@pytest.mark.parametrize("base, round_job, delay", [(60, 1, 60), (60, 2, 120), (60, 3, 240), (60, 40, 86400),
                                                     (600, 100, 86400)])  # MAX_ATTEMPTS allows 100
def test_a_rounds_retries_wait_the_delay_doubling_at_most_a_day(monkeypatch, base, round_job, delay):
    controller = make(retry_delay_seconds=base)
    for attempt in (round_job, round_job + 7):  # numbers an older round held do not count
        monkeypatch.setattr(controller_module, "_now", lambda: ENDED + datetime.timedelta(seconds=delay - 1))
        assert not controller._retry_due(ended(round_job, attempt))
        monkeypatch.setattr(controller_module, "_now", lambda: ENDED + datetime.timedelta(seconds=delay))
        assert controller._retry_due(ended(round_job, attempt))


class RecordingQueue:
    def __init__(self):
        self.delays = []

    def retry_later(self, message, seconds):
        self.delays.append(seconds)


def test_a_message_whose_job_could_not_be_created_comes_back_after_a_doubling_backoff():
    controller = make()
    controller.uploads = RecordingQueue()
    for receives in range(1, 10):
        controller._retry_message(Message("m", "{}", "r", receives), [], TemporaryError("down"))
    assert controller.uploads.delays == [5, 10, 20, 40, 80, 160, 320, 640, 900]


class LostAnswers:
    """A JobsApi whose creates fail as if their answers were lost; ``existing`` is what a
    read of the name then finds: the call's own Job, or an older one of that name."""

    def __init__(self, made_by_the_call: bool):
        self.made_by_the_call, self.created = made_by_the_call, None

    def create(self, manifest):
        self.created = manifest
        raise TemporaryError("creating Job: read timed out")

    def get(self, name):
        annotations = dict(self.created["metadata"]["annotations"])
        if not self.made_by_the_call:  # an older round's Job: every annotation alike but the call's token
            annotations[jobs.CREATE_ID] = "another call"
        return SimpleNamespace(metadata=SimpleNamespace(name=name, annotations=annotations))


@pytest.mark.parametrize("made_by_the_call", [True, False])
def test_after_a_lost_answer_only_the_calls_own_job_counts_as_created(made_by_the_call):
    controller = make(job=JobSettings(namespace="n", image="rates-ingest:1"))
    controller.kube = LostAnswers(made_by_the_call)
    obj = UploadedObject(bucket="b", key="k.csv", version_id=None, etag="e", size=1)
    if made_by_the_call:
        assert controller._create(obj, 1, 1, None, 1) is True
    else:
        with pytest.raises(TemporaryError, match="read timed out"):
            controller._create(obj, 1, 1, None, 1)
