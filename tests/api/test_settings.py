"""rates_api.settings: the defaults the README documents."""

import pytest

from rates_api.settings import Settings
from rates_core.env import ConfigError

URL = {"DATABASE_URL": "postgresql://rates_api@db/rates"}


def test_the_pool_has_a_connection_per_gunicorn_thread_unless_told():
    # Fewer would answer the extra threads' requests with an instant 503.
    assert Settings.from_env({**URL, "GUNICORN_THREADS": "8"}).db_pool_size == 8
    assert Settings.from_env({**URL, "GUNICORN_THREADS": "8"}).gunicorn_threads == 8
    assert Settings.from_env({**URL, "GUNICORN_THREADS": "8", "DB_POOL_SIZE": "3"}).db_pool_size == 3
    assert Settings.from_env(URL).db_pool_size == 4


def test_a_response_cache_of_zero_turns_it_off():
    assert Settings.from_env({**URL, "RESPONSE_CACHE_SIZE": "0"}).response_cache_size == 0
    with pytest.raises(ConfigError, match="RESPONSE_CACHE_SIZE"):
        Settings.from_env({**URL, "RESPONSE_CACHE_SIZE": "-1"})


def test_the_response_cache_has_a_byte_budget():
    assert Settings.from_env(URL).response_cache_mib == 64
    assert Settings.from_env({**URL, "RESPONSE_CACHE_MIB": "8"}).response_cache_mib == 8
    with pytest.raises(ConfigError, match="RESPONSE_CACHE_MIB"):
        Settings.from_env({**URL, "RESPONSE_CACHE_MIB": "0"})


def test_the_longest_range_is_bounded_at_ten_years():
    # Each answer is built in memory: a mistyped value would let any client cost a worker MBs.
    assert Settings.from_env({**URL, "MAX_RANGE_DAYS": "3660"}).max_range_days == 3660
    with pytest.raises(ConfigError, match="MAX_RANGE_DAYS"):
        Settings.from_env({**URL, "MAX_RANGE_DAYS": "3661"})
