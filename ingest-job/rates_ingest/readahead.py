"""Run an iterator in a background thread, a bounded number of items ahead.

COPY sends a chunk and waits while the server parses it; validating the next chunk in
the meantime lets the two overlap (psycopg2 releases the GIL while it sends). The
queue's bound keeps memory bounded: at most ``depth`` chunks wait at any time.
"""

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()
# How often a blocked producer checks whether the consumer has gone away.
_POLL_SECONDS = 0.1
_JOIN_SECONDS = 5.0


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


def read_ahead(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Yield what ``items`` yields, produced in a thread; its exceptions are re-raised here.

    Closing the returned generator (or abandoning it) stops the producer and closes
    ``items`` in the producer's thread, so its cleanup (closing a download) runs.
    """
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_Raised(exc))
        finally:
            close = getattr(source, "close", None)
            if close:
                close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if item is _END:
                break
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        # Bounded: a producer stuck in a network read must not hold up an abort. The
        # thread is a daemon, so it cannot keep the process alive either.
        thread.join(timeout=_JOIN_SECONDS)
