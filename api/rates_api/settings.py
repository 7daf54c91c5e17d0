"""Configuration of the API, read from environment variables (documented in the README)."""

from dataclasses import dataclass
from typing import Mapping

from rates_core.db import PG_INT_MAX
from rates_core.env import env_choice, env_int, env_str
from rates_core.logs import LEVELS
from rates_core.rds_auth import iam_auth_enabled


MAX_RANGE_DAYS_LIMIT = 3660  # ten years


@dataclass(frozen=True)
class Settings:
    database_url: str
    database_iam_auth: bool = False
    db_pool_size: int = 4
    gunicorn_threads: int = 4  # gunicorn's (GUNICORN_THREADS); exported as rates_api_request_threads
    db_statement_timeout_ms: int = 5000
    db_connect_timeout_s: int = 5
    max_range_days: int = 366
    response_cache_size: int = 2048
    response_cache_mib: int = 64
    app_version: str = "dev"
    log_level: str = "INFO"
    hung_request_s: int = 0  # 0: three times what a request may give the database, 30 at least

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        def get_int(name, default, minimum=0, maximum=None):
            return env_int(name, default, minimum=minimum, maximum=maximum, environ=environ)

        database_url = env_str("DATABASE_URL", environ=environ)
        threads = get_int("GUNICORN_THREADS", 4, 1)
        return cls(
            database_url=database_url,
            database_iam_auth=iam_auth_enabled(database_url, environ),
            # One connection per gunicorn thread means a request never waits for one.
            db_pool_size=get_int("DB_POOL_SIZE", threads, 1),
            gunicorn_threads=threads,
            # PostgreSQL and libpq take 32-bit integers; beyond, every connection would fail.
            db_statement_timeout_ms=get_int("DB_STATEMENT_TIMEOUT_MS", 5000, 1, PG_INT_MAX),
            db_connect_timeout_s=get_int("DB_CONNECT_TIMEOUT_S", 5, 1, PG_INT_MAX),
            # An answer is built in memory, about 42 bytes a day: ten years is 150 KB, while
            # a mistyped 4,000,000 let any client make a worker build 150 MB.
            max_range_days=get_int("MAX_RANGE_DAYS", 366, 1, MAX_RANGE_DAYS_LIMIT),
            response_cache_size=get_int("RESPONSE_CACHE_SIZE", 2048, 0),
            response_cache_mib=get_int("RESPONSE_CACHE_MIB", 64, 1, 1 << 20),
            app_version=env_str("APP_VERSION", "dev", environ),
            log_level=env_choice("LOG_LEVEL", "INFO", LEVELS, environ),
            hung_request_s=get_int("HUNG_REQUEST_S", 0, 0),
        )
