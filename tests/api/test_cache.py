"""VersionedCache, the per-process response cache (pure logic)."""

from rates_api.cache import VersionedCache


def test_an_entry_is_served_only_for_its_version():
    cache = VersionedCache(10)
    cache.put("q", 5, b"five")
    assert cache.get("q", 5) == b"five"
    assert cache.get("q", 6) is None
    assert cache.get("q", 5) is None  # the stale entry went on the first miss


def test_a_late_answer_for_an_older_version_does_not_replace_a_newer_one():
    cache = VersionedCache(10)
    cache.put("q", 7, b"seven")
    cache.put("q", 6, b"six")  # a slow request that read version 6 before the write
    assert cache.get("q", 7) == b"seven"


def test_least_recently_used_entries_go_first():
    cache = VersionedCache(2)
    cache.put("a", 1, b"a")
    cache.put("b", 1, b"b")
    cache.get("a", 1)
    cache.put("c", 1, b"c")
    assert (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1)) == (b"a", None, b"c")


def test_size_zero_caches_nothing():
    cache = VersionedCache(0)
    cache.put("q", 1, b"x")
    assert cache.get("q", 1) is None and len(cache) == 0
