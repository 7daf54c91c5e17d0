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
    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] != version:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, version, body: bytes) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current[0] > version:
                return  # a slower request computed this under an older version: keep the newer one
            self._entries[key] = (version, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
