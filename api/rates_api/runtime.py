"""Per-app state that is not configuration, kept in ``app.extensions``."""

import threading
import weakref
from contextlib import contextmanager

from flask import current_app

from rates_core.db import Pool, PoolExhausted
from rates_core.errors import TemporaryError
from rates_core.logs import get_logger
from rates_core.rds_auth import password_source

from . import queries
from .cache import VersionedCache
from .inflight import InFlight
from .metrics import Metrics
from .settings import Settings


log = get_logger(__name__)
# Liveness fails on a request older than this at least (see Runtime.hung_after_s).
HUNG_AFTER_MIN_S = 30.0


class Runtime:
    """Per-app state that is not configuration: the pool, caches, metrics, drain flag."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # One token source for both pools: each is a botocore session and RDS client (with
        # IAM auth), about 15 MiB a worker.
        password = password_source(settings.database_url, settings.database_iam_auth)
        self.pool = Pool(settings.database_url, size=settings.db_pool_size,
                         application_name="rates-api",
                         statement_timeout_ms=settings.db_statement_timeout_ms,
                         connect_timeout_s=settings.db_connect_timeout_s, password=password)
        # /readyz on the probe port (rates_api.probes) runs beside the gunicorn threads: on
        # their pool it could take the connection a request was about to need, which then
        # answered 503. One connection of its own, opened on the first probe; probes take
        # turns on it, so that "busy" never stands for "another probe is checking".
        self.probe_pool = Pool(settings.database_url, size=1, application_name="rates-api-probe",
                               statement_timeout_ms=settings.db_statement_timeout_ms,
                               connect_timeout_s=settings.db_connect_timeout_s, password=password)
        self._probe_turn = threading.Lock()
        # A check holds its turn at most this long: connecting, then its statement and the
        # silence after which a statement gives up (rates_core.db.give_up_on_silence).
        self.request_budget_s = settings.db_connect_timeout_s + settings.db_statement_timeout_ms / 1000 + 2
        # A request gives the database no longer than that either; one that has run a few
        # times as long is a thread that will not come back: its worker is replaced
        # (api/gunicorn.conf.py), and /healthz reports it meanwhile.
        self.in_flight = InFlight()
        self.hung_after_s = float(settings.hung_request_s) or max(HUNG_AFTER_MIN_S, 3 * self.request_budget_s)
        if self.hung_after_s < 2 * self.request_budget_s:
            log.warning("HUNG_REQUEST_S is below twice what a request may take (DB_CONNECT_TIMEOUT_S + "
                        "DB_STATEMENT_TIMEOUT_MS + 2 s): a request waiting on a lock would replace its worker",
                        hung_request_s=self.hung_after_s, request_budget_s=self.request_budget_s)
        self.cache = VersionedCache(settings.response_cache_size, settings.response_cache_mib << 20)
        self.metrics = Metrics(settings.app_version)
        self.metrics.pool_size.set(settings.db_pool_size)
        self.metrics.threads.set(settings.gunicorn_threads)
        # Set when SIGTERM arrives (see api/gunicorn.conf.py): /readyz fails from then on.
        self.draining = threading.Event()
        # A connection belongs to one database for its whole life, so its epoch is read once.
        self._epochs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def data_state(self, conn, cur, files: bool) -> tuple[tuple, str | None]:
        """The cache's version (the database's epoch and its data_version), and with
        ``files`` those of the tables an answer reads (queries.data_state)."""
        epoch = self._epochs.get(conn)
        if epoch is None:
            epoch = self._epochs[conn] = queries.database_epoch(cur)
        version, found = queries.data_state(cur, files)
        return (epoch, version), found

    @contextmanager
    def connection(self):
        self.metrics.pool_in_use.inc()
        try:
            with self.pool.connection() as conn:
                yield conn
        finally:
            self.metrics.pool_in_use.dec()


    def check_database(self, probe_port: bool) -> None:
        """Readiness: raise what keeps this worker's requests from the database
        (TemporaryError, PoolExhausted, SchemaMissing, RightsMissing)."""
        if not probe_port:
            self._check(self.connection)
            return
        try:
            self._check(self._probe_connection)
        except TemporaryError as refused:
            # Near max_connections the probe's own connection may be refused while the
            # pool's serve: a pod that answers is not taken out of rotation for it. Every
            # one of them lent is PoolExhausted, busy, as on the API's port.
            if not self.pool.holds_connections():
                raise
            if self.pool.lends_all():
                raise PoolExhausted("every connection of the pool is serving a request") from None
            try:
                self._check(self.connection)
            except PoolExhausted:
                raise
            except TemporaryError:
                raise refused from None
            return
        if self.pool.opened_none():
            # The probe's connection came first, and the server then refused the pool's
            # (its max_connections): every request answers 503, fast, so the balancer kept
            # sending this pod its share. Tried here, as no request comes to an unready pod.
            self._check(self.connection)

    @staticmethod
    def _check(connection) -> None:
        with connection() as conn, conn.cursor() as cur:
            # Not just SELECT 1: pods may start before the migrations have run.
            queries.data_version(cur)

    @contextmanager
    def _probe_connection(self):
        """The probe port's own connection, in turn."""
        if not self._probe_turn.acquire(timeout=self.request_budget_s):
            raise TemporaryError("the readiness check before this one is still waiting for the database")
        try:
            with self.probe_pool.connection() as conn:
                yield conn
        finally:
            self._probe_turn.release()


def runtime() -> Runtime:
    return current_app.extensions["rates_api"]
