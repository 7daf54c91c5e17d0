"""Controller._hold's arithmetic, without SQS: how long a held message is hidden, and when
it is let go, for a message received some time ago."""

import time
from types import SimpleNamespace

import pytest
import structlog

from rates_controller import controller as controller_module
from rates_controller.metrics import Metrics
from rates_controller.queue import MAX_HIDDEN_S, Message


def holder(visibility_timeout: int):
    hidden = []
    fake = SimpleNamespace(settings=SimpleNamespace(visibility_timeout=visibility_timeout),
                           uploads=SimpleNamespace(retry_later=lambda message, seconds: hidden.append(seconds)),
                           _held=[], _held_before=set(), metrics=Metrics(), log=structlog.get_logger())
    return fake, hidden


def received(ago_s: float) -> Message:
    return Message(id="m", body="{}", receipt="r", receives=1, received_at=time.monotonic() - ago_s)


@pytest.mark.parametrize("visibility_timeout", [10, 20])
def test_a_held_message_is_hidden_past_the_next_try_whatever_the_visibility_timeout(visibility_timeout):
    # Hidden for less than QUOTA_RECHECK_SECONDS, it would be delivered again while held.
    fake, hidden = holder(visibility_timeout)
    controller_module.Controller._hold(fake, received(0), None)
    assert hidden == [3 * controller_module.QUOTA_RECHECK_SECONDS] and fake._held


def test_a_held_message_is_hidden_no_later_than_the_margin_before_sqs_limit():
    fake, hidden = holder(43200)
    controller_module.Controller._hold(fake, received(3600), None)
    [seconds] = hidden
    assert MAX_HIDDEN_S - 3600 - controller_module.HIDDEN_MARGIN_S - 1 <= seconds <= (
        MAX_HIDDEN_S - 3600 - controller_module.HIDDEN_MARGIN_S)


@pytest.mark.parametrize("left", [controller_module.QUOTA_RECHECK_SECONDS - 1, controller_module.QUOTA_RECHECK_SECONDS])
def test_a_message_with_no_more_than_a_try_s_time_left_is_let_go_not_hidden_for_less(left):
    # Hidden for `left` s, shorter than the wait for the next try, it would come back while held.
    fake, hidden = holder(60)
    controller_module.Controller._hold(fake, received(MAX_HIDDEN_S - controller_module.HIDDEN_MARGIN_S - left - 0.5),
                                       None)
    assert hidden == [] and fake._held == []


def test_a_message_with_more_than_a_try_s_time_left_is_held_for_what_is_left():
    left = controller_module.QUOTA_RECHECK_SECONDS + 5
    fake, hidden = holder(60)
    controller_module.Controller._hold(fake, received(MAX_HIDDEN_S - controller_module.HIDDEN_MARGIN_S - left - 0.5),
                                       None)
    assert hidden == [left] and len(fake._held) == 1


SQS_LIMIT_S = 12 * 3600  # SQS refuses to hide a message longer than this after its receive


def test_a_message_received_nearly_12_hours_ago_is_let_go_before_sqs_limit_with_a_margin():
    # The monotonic clock starts when the receive's answer arrives, after SQS's own: a hide
    # up to the limit by this clock would be refused.
    fake, hidden = holder(60)
    controller_module.Controller._hold(fake, received(SQS_LIMIT_S - 65), None)
    assert hidden == [] and fake._held == []


def test_a_message_received_an_hour_ago_is_hidden_within_sqs_limit():
    fake, hidden = holder(43200)
    controller_module.Controller._hold(fake, received(3600), None)
    [seconds] = hidden
    assert 3600 + seconds <= SQS_LIMIT_S - 30
