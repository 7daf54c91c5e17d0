"""Runtime.check_database's choices on the probe port, without a server: which connection
it checks on, and what it raises, for each state of the request pool."""

from contextlib import contextmanager

import pytest

from rates_api.runtime import Runtime
from rates_core.db import PoolExhausted
from rates_core.errors import TemporaryError


class FakePool:
    def __init__(self, opened=0, idle=0, opened_none=False):
        self.opened, self.idle, self._opened_none = opened, idle, opened_none

    def holds_connections(self):
        return self.opened > 0

    def lends_all(self):
        return self.opened > 0 and self.idle == 0

    def opened_none(self):
        return self._opened_none


class Checked(Runtime):
    """check_database as it is; each connection a context manager that fails as told."""

    def __init__(self, pool: FakePool, probe_fails=None, pool_fails=None):  # noqa: super() not called
        self.pool, self.probe_fails, self.pool_fails, self.tried = pool, probe_fails, pool_fails, []

    @staticmethod
    def _check(connection) -> None:
        with connection():
            pass

    @contextmanager
    def connection(self):
        self.tried.append("pool")
        if self.pool_fails:
            raise self.pool_fails
        yield

    @contextmanager
    def _probe_connection(self):
        self.tried.append("probe")
        if self.probe_fails:
            raise self.probe_fails
        yield


REFUSED = TemporaryError("the probe's connection: too many connections for role")


def test_the_api_port_checks_on_the_pool_only():
    rt = Checked(FakePool(opened=1, idle=1))
    rt.check_database(False)
    assert rt.tried == ["pool"]


def test_a_probe_that_connects_leaves_a_serving_pool_alone():
    rt = Checked(FakePool(opened=2, idle=1))
    rt.check_database(True)
    assert rt.tried == ["probe"]


def test_a_probe_that_connects_tries_a_pool_that_opened_none():
    rt = Checked(FakePool(opened_none=True), pool_fails=TemporaryError("pool refused"))
    with pytest.raises(TemporaryError, match="pool refused"):
        rt.check_database(True)
    assert rt.tried == ["probe", "pool"]


def test_a_refused_probe_with_no_pool_connection_is_unready_without_opening_one():
    rt = Checked(FakePool(), probe_fails=REFUSED)
    with pytest.raises(TemporaryError) as raised:
        rt.check_database(True)
    assert raised.value is REFUSED and not isinstance(raised.value, PoolExhausted)
    assert rt.tried == ["probe"]


def test_a_refused_probe_with_every_pool_connection_lent_is_busy():
    rt = Checked(FakePool(opened=2, idle=0), probe_fails=REFUSED)
    with pytest.raises(PoolExhausted):
        rt.check_database(True)
    assert rt.tried == ["probe"]


def test_a_refused_probe_with_an_idle_pool_connection_that_answers_is_ready():
    rt = Checked(FakePool(opened=2, idle=1), probe_fails=REFUSED)
    rt.check_database(True)
    assert rt.tried == ["probe", "pool"]


def test_a_refused_probe_whose_pool_is_lent_out_meanwhile_is_busy():
    rt = Checked(FakePool(opened=2, idle=1), probe_fails=REFUSED, pool_fails=PoolExhausted("all lent"))
    with pytest.raises(PoolExhausted):
        rt.check_database(True)


def test_a_refused_probe_whose_pool_fails_too_says_the_probe_s_refusal():
    rt = Checked(FakePool(opened=2, idle=1), probe_fails=REFUSED, pool_fails=TemporaryError("pool down"))
    with pytest.raises(TemporaryError) as raised:
        rt.check_database(True)
    assert raised.value is REFUSED


class OneConnection:
    @contextmanager
    def connection(self):
        yield "the probe's connection"


def probe_runtime(budget_s: float) -> Runtime:
    import threading

    rt = object.__new__(Runtime)  # only what _probe_connection reads
    rt.probe_pool, rt._probe_turn, rt.request_budget_s = OneConnection(), threading.Lock(), budget_s
    return rt


def test_a_probe_waits_its_turn_behind_the_check_before_it():
    # Not refused at once: refused, it would fall back on the request pool, and answer
    # "busy" with every connection lent, while the check before it was about to fail.
    import threading

    rt = probe_runtime(budget_s=10)
    rt._probe_turn.acquire()
    threading.Timer(0.5, rt._probe_turn.release).start()
    with rt._probe_connection() as conn:
        assert conn == "the probe's connection"
    assert not rt._probe_turn.locked()


def test_a_probe_whose_turn_does_not_come_within_a_request_s_budget_is_refused():
    rt = probe_runtime(budget_s=0.3)
    rt._probe_turn.acquire()
    with pytest.raises(TemporaryError, match="still waiting"):
        with rt._probe_connection():
            pass
