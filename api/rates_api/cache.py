"""A per-process LRU of rendered /rates responses, tagged with the data version.

An entry is served only while ``data_version`` in the database still equals the
version read before the answer was computed: every committed write to prices,
ports or regions bumps it, so a cached answer is never older than the latest commit.
Versions carry the database's epoch too (see queries.database_epoch), so a recreated
or restored database that counts up to the same number is not mistaken for this one.
"""

import threading
from collections import OrderedDict
from typing import Hashable


class VersionedCache:
    """At most ``max_entries`` answers of at most ``max_bytes`` in all: an answer's size
    grows with its date range (about 42 bytes a day), so a count alone would let a wide
    MAX_RANGE_DAYS take hundreds of MB per worker."""

    def __init__(self, max_entries: int, max_bytes: int | None = None):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, version) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != version:
                if not _newer(entry[0], version):
                    self._drop(key)
                return None  # a request that read the version before a write: the newer entry stays
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, version, body: bytes) -> None:
        if self.max_entries <= 0 or (self.max_bytes is not None and len(body) > self.max_bytes):
            return
        with self._lock:
            current = self._entries.get(key)
            if current is not None and _newer(current[0], version):
                return  # a slower request computed this under an older version: keep the newer one
            if current is not None:
                self._drop(key)
            self._entries[key] = (version, body)
            self._bytes += len(body)
            while len(self._entries) > self.max_entries or (
                    self.max_bytes is not None and self._bytes > self.max_bytes):
                self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        self._bytes -= len(self._entries.pop(key)[1])

    def __contains__(self, key: Hashable) -> bool:
        """Whether ``key`` has an entry, of any version."""
        return key in self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


def _newer(version, than) -> bool:
    """Whether ``version`` is a later data_version of the same database than ``than``.

    Versions are (epoch, number) tuples in the app, plain numbers in tests; of two epochs,
    neither is newer: the entry is for another database."""
    if isinstance(version, tuple) and isinstance(than, tuple):
        return version[0] == than[0] and version[1] > than[1]
    return version > than
