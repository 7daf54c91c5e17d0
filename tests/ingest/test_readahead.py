"""read_ahead: the producer thread between the download/validation and COPY."""

import itertools
import threading
import time

import pytest

from rates_ingest.readahead import read_ahead


def test_yields_every_item_in_order_from_another_thread():
    threads = set()

    def items():
        for i in range(100):
            threads.add(threading.current_thread().name)
            yield i

    assert list(read_ahead(items(), depth=3)) == list(range(100))
    assert threads == {"read-ahead"}


def test_a_producer_error_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise KeyError("broken file")

    seen = []
    with pytest.raises(KeyError, match="broken file"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_the_producer_stays_at_most_depth_items_ahead():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    ahead = []
    for item in read_ahead(items(), depth=2):
        time.sleep(0.002)  # a slow consumer, as COPY is
        # The queue holds 2, and the producer may hold one more, blocked on put().
        ahead.append(len(produced) - item - 1)
    assert 2 <= max(ahead) <= 3  # it does read ahead, and no further than the queue allows
    assert len(produced) == 50


def test_closing_early_stops_the_producer_and_closes_its_source():
    closed = threading.Event()

    def items():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    reader = read_ahead(items(), depth=2)
    assert next(reader) == 0
    reader.close()
    assert closed.wait(5)
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())


def test_a_closed_reader_takes_nothing_more_from_an_endless_source():
    # A download the consumer gave up on (a rejected file) may have gigabytes left: the
    # producer must stop at the abort, not read the rest of it into nowhere first.
    produced, closed, test_over = [0], threading.Event(), threading.Event()

    def items():
        try:
            for i in itertools.count():
                if test_over.is_set():  # only so that a producer which kept going ends with the test
                    return
                produced[0] += 1
                yield i
        finally:
            closed.set()

    reader = read_ahead(items(), depth=2)
    try:
        assert next(reader) == 0
        reader.close()
        assert closed.wait(5), "the source was not closed"
        # The item handed over, the queue's 2, and one more blocked on put() at most.
        assert produced[0] <= 2 + 2, produced[0]
    finally:
        test_over.set()
