"""SIGTERM and SIGINT end the run cleanly, even while the server is busy with the load.

Kubernetes sends SIGTERM at a Job's deadline or when a node drains. Python runs signal
handlers only between bytecodes of the main thread, which waits inside libpq while the
server copies and aggregates a large file: the handler alone would run only after the
server finished, or never, if SIGKILL follows first. So the signal also wakes a thread
(through signal.set_wakeup_fd) that cancels the statement in progress; libpq returns,
and the handler raises TemporaryError, which rolls the load back and records the run.
Whichever error surfaces first (the handler's or the cancelled statement's), ``received``
says that the run was terminated.

Library code may catch the handler's exception and go on (botocore retries a request that
it cut short; the sweep of abandoned runs tolerates errors), so the job also calls
``check()`` at points between its steps, and ``stops_retries`` makes the S3 client give up
instead of retrying: against an S3 that accepts connections and never answers, its
retries would take minutes, past the pod's grace period.

Once the load starts to commit, a signal no longer interrupts anything: the commit may
already have happened on the server, and the run only has to record it and exit, which
takes milliseconds. Raising then would record a committed load as failed.
"""

import signal
from contextlib import contextmanager
from typing import Callable, Iterator

from rates_core import signals
from rates_core.errors import TemporaryError

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Termination:
    def __init__(self) -> None:
        # The load's connection.cancel while a load runs; the job has one load at a time.
        self._cancel: Callable[[], None] | None = None
        self._finishing = False
        self.received: int | None = None

    def install(self) -> None:
        """Install the handlers; call once, from the main thread."""
        for signum in _SIGNALS:
            signal.signal(signum, self._raise)
        signals.watch(_SIGNALS, self._cancel_load, name="termination")

    @contextmanager
    def cancels(self, conn) -> Iterator[None]:
        """While inside, a termination signal cancels ``conn``'s statement in progress."""
        self._cancel = conn.cancel
        try:
            self.check()
            yield
        finally:
            self._cancel = None

    def check(self) -> None:
        """Raise if a termination signal has arrived (and the load is not committing)."""
        if self.received and not self._finishing:
            raise TemporaryError(f"terminated by signal {self.received}")

    def stops_retries(self, client) -> None:
        """Make a boto3 ``client`` raise, rather than retry, once a signal has arrived."""
        client.meta.events.register("needs-retry", self._before_a_retry, unique_id="rates-ingest-termination")

    def _before_a_retry(self, **_) -> None:
        self.check()  # None otherwise: botocore's own retry handler decides

    def finishing(self) -> None:
        """From here on a signal is only noted: it neither raises nor cancels."""
        self._finishing = True
        self._cancel = None

    def _cancel_load(self, signum: int) -> None:
        self.received = self.received or signum
        cancel = None if self._finishing else self._cancel
        if cancel is not None:
            try:
                cancel()
            except Exception:  # noqa: BLE001 - a closed connection has nothing to cancel
                pass

    def _raise(self, signum, _frame):
        self.received = signum
        if not self._finishing:
            raise TemporaryError(f"terminated by signal {signum}")


termination = Termination()
