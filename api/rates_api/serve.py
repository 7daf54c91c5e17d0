"""The image's command: read every setting once, then become gunicorn.

Left to gunicorn, a bad setting is "Failed to read config file" and a traceback (one that
gunicorn's config file reads), or a traceback from every worker and "Worker failed to boot"
(one that the app reads). Read here first, it is one JSON line that names the variable,
and exit status 2, as the ingest job, the controller and the migrations say theirs.
"""

import argparse
import os
import runpy
import sys

from rates_core import db, logs
from rates_core.env import ConfigError
from rates_core.errors import PermanentError

log = logs.get_logger(__name__)
EXIT_CONFIG = 2


def check(gunicorn_conf: str) -> None:
    """Raise ConfigError for the first bad setting of the app or of gunicorn's config file."""
    from .settings import Settings

    _check_database_url(Settings.from_env().database_url)
    runpy.run_path(gunicorn_conf)  # it only reads the environment


def _check_database_url(url: str) -> None:
    """libpq's reading of DATABASE_URL: one it cannot read was a traceback from every
    worker, whose pool reads it, and exit 3. The reason never quotes the URL's password."""
    try:
        db.parse_url(url)
    except PermanentError as exc:
        raise ConfigError(f"environment variable DATABASE_URL is not a valid libpq URL: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rates_api.serve",
                                     description="Check the API's settings, then run gunicorn with this config file.")
    parser.add_argument("config", help="gunicorn's config file (api/gunicorn.conf.py)")
    conf = parser.parse_args(argv).config
    try:
        check(conf)
    except ConfigError as exc:
        logs.configure(service="rates-api")
        log.error("configuration error", error=str(exc))
        return EXIT_CONFIG
    # The same process becomes gunicorn: it stays PID 1, which Kubernetes signals.
    os.execv(sys.executable, [sys.executable, "-m", "gunicorn", "-c", conf])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
