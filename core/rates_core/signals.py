"""Acting on signals from a thread of its own, where taking a lock is safe.

A Python signal handler runs on the main thread between two bytecodes: maybe in the
middle of a log line, or of an Event's wait, whose locks are not reentrant. Work that
takes a lock done there can wait for ever on a lock its own thread holds. Python also
writes each signal's number to a wakeup pipe; a thread that reads the pipe can do it.
"""

import os
import signal
import threading
from typing import Callable, Iterable


def watch(signals: Iterable[int], on_signal: Callable[[int], None], name: str) -> None:
    """Call ``on_signal(signum)`` on a daemon thread each time one of ``signals`` arrives.

    The handlers stay whatever the caller installed; install them from the main thread.
    """
    wanted = frozenset(signals)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def run() -> None:
        while True:
            for signum in os.read(read_end, 64):
                if signum in wanted:
                    on_signal(signum)

    threading.Thread(target=run, name=name, daemon=True).start()
