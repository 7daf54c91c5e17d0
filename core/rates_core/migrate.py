"""Schema migrations (yoyo, plain SQL files in ``migrations/``)."""

import urllib.parse
from pathlib import Path

from yoyo import get_backend, read_migrations
from yoyo.exceptions import LockTimeout

from . import db
from .errors import PermanentError, TemporaryError
from .logs import get_logger

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
CONNECT_TIMEOUT_S = 10
log = get_logger(__name__)


def _yoyo_uri(dsn: str) -> str:
    # yoyo picks its driver from the scheme; plain postgres:// means psycopg2 to us.
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn[len("postgres://"):]
    if not dsn.startswith("postgresql://"):
        raise PermanentError("migrations need DATABASE_URL as a URL, postgresql://user@host:port/db, "
                             "not libpq keywords")
    try:
        given = db.parse_url(dsn)  # libpq's reading
        if "," in given.get("host", ""):
            raise PermanentError("yoyo, which applies the migrations, takes one host")
        parts = urllib.parse.urlsplit(dsn)
        parts.port  # yoyo's, which is stricter about the port
    except PermanentError as exc:
        raise PermanentError(f"DATABASE_URL is not a valid URL: {exc}") from None
    except ValueError as exc:
        raise PermanentError(f"DATABASE_URL is not a valid URL: {db.url_error(exc)}") from None
    # yoyo hands the query's parameters to psycopg2.connect: the timeouts and keepalives of
    # every other connection (rates_core.db), so that an unreachable database fails the
    # migration in seconds (exit 1) and a vanished one is noticed during a long statement.
    added = db.tcp_settings(given)
    if "connect_timeout" not in given:
        added = {"connect_timeout": CONNECT_TIMEOUT_S, **added}
    query = "&".join(filter(None, [parts.query, urllib.parse.urlencode(added)]))
    return urllib.parse.urlunsplit(parts._replace(query=query))


def pending(dsn: str) -> list[str]:
    with db.classified():
        backend = get_backend(_yoyo_uri(dsn))
        try:
            return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
        finally:
            backend.connection.close()


def apply(dsn: str) -> list[str]:
    """Apply every migration not yet applied; return the ids applied now.

    yoyo takes a lock table first, so two replicas migrating at once are safe. Errors
    are TemporaryError (unreachable, locked: retry) or PermanentError (a failing migration).
    """
    migrations = read_migrations(str(MIGRATIONS_DIR))
    with db.classified():
        backend = get_backend(_yoyo_uri(dsn))
        try:
            with backend.lock():
                todo = backend.to_apply(migrations)
                backend.apply_migrations(todo)
        except LockTimeout as exc:
            raise TemporaryError(f"another migration holds yoyo's lock ({exc}); if none is running, a killed "
                                 "one left it: clear it with `yoyo break-lock --database $DATABASE_URL`") from exc
        finally:
            backend.connection.close()
    applied = [m.id for m in todo]
    log.info("migrations applied", applied=applied)
    return applied


def main() -> int:
    """``python -m rates_core.migrate``: apply the migrations to $DATABASE_URL, as the
    API chart's pre-upgrade hook does (the API image has no ratesctl). Exit codes: 0 done,
    1 may pass on retry, 2 cannot (a failing migration, bad config: the hook fails the
    release instead of retrying)."""
    from . import logs
    from .env import ConfigError, env_choice, env_str

    try:
        logs.configure(env_choice("LOG_LEVEL", "INFO", logs.LEVELS), service="rates-migrate")
        apply(env_str("DATABASE_URL"))
    except ConfigError as exc:
        logs.configure()
        log.error("configuration error", error=str(exc))
        return 2
    except TemporaryError as exc:
        log.error("migrations failed; this may pass on retry", error=str(exc))
        return 1
    except PermanentError as exc:
        log.error("migrations failed", error=str(exc))
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
