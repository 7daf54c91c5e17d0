"""Schema migrations (yoyo, plain SQL files in ``migrations/``)."""

from pathlib import Path

from yoyo import get_backend, read_migrations

from .logs import get_logger

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
log = get_logger(__name__)


def _yoyo_uri(dsn: str) -> str:
    # yoyo picks its driver from the scheme; plain postgres:// means psycopg2 to us.
    if dsn.startswith("postgres://"):
        return "postgresql://" + dsn[len("postgres://"):]
    return dsn


def pending(dsn: str) -> list[str]:
    backend = get_backend(_yoyo_uri(dsn))
    try:
        return [m.id for m in backend.to_apply(read_migrations(str(MIGRATIONS_DIR)))]
    finally:
        backend.connection.close()


def apply(dsn: str) -> list[str]:
    """Apply every migration not yet applied; return the ids applied now.

    yoyo takes a lock table first, so two replicas migrating at once are safe.
    """
    backend = get_backend(_yoyo_uri(dsn))
    migrations = read_migrations(str(MIGRATIONS_DIR))
    try:
        with backend.lock():
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
    finally:
        backend.connection.close()
    applied = [m.id for m in todo]
    log.info("migrations applied", applied=applied)
    return applied
