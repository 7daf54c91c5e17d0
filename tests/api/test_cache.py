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


def test_the_bytes_held_stay_within_the_budget_and_the_oldest_go_first():
    cache = VersionedCache(100, max_bytes=10)
    cache.put("a", 1, b"aaaa")
    cache.put("b", 1, b"bbbb")
    cache.get("a", 1)
    cache.put("c", 1, b"cccc")  # 12 bytes: b, the least recently used, goes
    assert (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1)) == (b"aaaa", None, b"cccc")
    assert cache.bytes == 8
    cache.put("a", 2, b"a")  # a newer answer replaces the older one's bytes
    assert cache.bytes == 5
    cache.get("c", 2)  # a stale entry dropped on a miss gives its bytes back
    assert cache.bytes == 1 and len(cache) == 1


def test_an_answer_larger_than_the_budget_is_not_cached():
    cache = VersionedCache(100, max_bytes=10)
    cache.put("small", 1, b"x")
    cache.put("wide", 1, b"y" * 11)
    assert cache.get("wide", 1) is None and cache.get("small", 1) == b"x"


def test_the_app_gives_its_cache_the_configured_budget():
    from rates_api import create_app
    from rates_api.settings import Settings

    app = create_app(Settings(database_url="postgresql://rates_api@db.invalid/rates", response_cache_size=9,
                              response_cache_mib=3))
    cache = app.extensions["rates_api"].cache
    assert (cache.max_entries, cache.max_bytes) == (9, 3 << 20)


def test_a_request_that_read_an_older_version_leaves_the_newer_entry_in_place():
    cache = VersionedCache(10)
    cache.put("q", 7, b"seven")
    assert cache.get("q", 6) is None  # it read the version just before a write committed
    assert cache.get("q", 7) == b"seven"


def test_an_entry_of_another_database_epoch_is_never_newer():
    cache = VersionedCache(10)
    cache.put("q", (("restored", 2), 9), b"before the restore")
    assert cache.get("q", (("restored", 3), 5)) is None
    assert len(cache) == 0  # dropped: the database it came from is gone
    cache.put("q", (("restored", 3), 5), b"now")
    cache.put("q", (("restored", 2), 9), b"a slow request on the old database")
    assert cache.get("q", (("restored", 3), 5)) is None  # never served for the new one
