"""gunicorn settings for the rates API. Every value comes from the environment.

Shutdown (SIGTERM, as Kubernetes sends it): each worker first marks itself draining,
so /readyz answers 503 and the load balancer takes the pod out of rotation, while it
keeps serving for SHUTDOWN_DRAIN_SECONDS; then it stops accepting and lets in-flight
requests finish (up to GUNICORN_GRACEFUL_TIMEOUT). SIGINT/SIGQUIT still stop at once.
"""

import ipaddress
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

# The same reading rules as the app's settings: empty means the default, and a bad
# value stops the master with the variable's name.
from rates_core.env import ConfigError, env_choice, env_float, env_int, env_str
from rates_core.logs import LEVELS

wsgi_app = "rates_api:create_app()"
_host = env_str("HOST", "127.0.0.1")
# An IPv6 address (HOST=:: for a dual-stack pod) needs brackets before the port.
_port = env_int("PORT", 8000, minimum=1, maximum=65535)
bind = f"{f'[{_host}]' if ':' in _host else _host}:{_port}"
# The readiness and liveness paths again, on a port of their own that no request queues
# on (rates_api.probes); 0: none.
probe_port = env_int("PROBE_PORT", 0, minimum=0, maximum=65535)
if probe_port == _port:
    # Each worker binds it on the same host once gunicorn listens on PORT: every worker
    # failed to boot with "Address already in use" and the master stopped (exit 3).
    raise ConfigError(f"environment variable PROBE_PORT must differ from PORT ({_port}): the probes need a "
                      f"port of their own (0: none)")
workers = env_int("WEB_CONCURRENCY", 2, minimum=1)
# gthread, with a deadline for a request's line and headers: a client that sent part of
# them and then nothing held a thread for good (rates_api.worker). By name: the master
# must not import the app before PROMETHEUS_MULTIPROC_DIR is set (when_ready).
worker_class = "rates_api.worker.HeaderDeadlineWorker"
threads = env_int("GUNICORN_THREADS", 4, minimum=1)
# Longer than the AWS load balancer's 60 s idle timeout, so the balancer always closes
# idle connections first and never sends a request into one that gunicorn is closing.
keepalive = env_int("GUNICORN_KEEPALIVE", 75, minimum=0)
timeout = env_int("GUNICORN_TIMEOUT", 30, minimum=1)
drain_seconds = env_float("SHUTDOWN_DRAIN_SECONDS", 5.0, minimum=0)
graceful_timeout = math.ceil(drain_seconds) + env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=0)
# Heartbeat files go to memory: the container's root filesystem is read-only.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The app writes one JSON line per request itself.
accesslog = None
errorlog = "-"
loglevel = env_choice("LOG_LEVEL", "INFO", LEVELS).lower()  # checked as the app checks it
# gunicorn's own lines (booting and stopping workers, a worker timeout, a port in use)
# as JSON on stdout too, like every other line the pod writes.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "rates_core.logs.json_formatter", "service": "rates-api"}},
    "handlers": {"json": {"class": "rates_core.logs.StdoutHandler", "formatter": "json"}},
    "loggers": {"gunicorn.error": {"handlers": ["json"], "level": loglevel.upper(), "propagate": False}},
    # (gunicorn merges this over its defaults one key deep: the root logger must be given too)
    "root": {"handlers": ["json"], "level": loglevel.upper()},
}
# The runtime control socket would be written under $HOME, which is read-only in the
# container, and several servers on one machine would fight over its path.
control_socket_disable = True


def _proxies(name: str, default: str) -> str:
    # Checked as gunicorn checks it (strictly: 10.0.1.0/16 has host bits set), but naming
    # the variable, which gunicorn's own error does not.
    value = env_str(name, default)
    for item in [part.strip() for part in value.split(",") if part]:
        if item != "*":
            try:
                ipaddress.ip_network(item)
            except ValueError as exc:
                raise ConfigError(f"environment variable {name}: {exc}") from None
    return value


forwarded_allow_ips = _proxies("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn would also take SCRIPT_NAME and PATH_INFO headers from those proxies, and the
# ALB passes on whatever a client sends: a client's SCRIPT_NAME header could then answer
# 500 (a path outside it) or an HTML redirect. The API is served at the root, so none.
forwarder_headers = ""

# Workers share Prometheus metrics through files in PROMETHEUS_MULTIPROC_DIR, which must
# exist before any worker imports prometheus_client. Without one given, the master makes
# its own once it listens (so a failed bind leaves none behind) and removes it on exit.
# A reload (SIGHUP) reads this file again with the variable set, so the master also notes
# which directory is its own.
_OWN = "RATES_API_OWN_METRICS_DIR"
_own_metrics_dir = (not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                    or os.environ.get(_OWN) == os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server):
    if _own_metrics_dir:
        return
    # Files left by an earlier run would be summed into this run's metrics.
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def when_ready(server):
    # Runs after binding and before the first worker is forked.
    if _own_metrics_dir and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = tempfile.mkdtemp(prefix="rates-api-metrics-", dir=worker_tmp_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWN] = directory


# A worker's metric files take a few tens of KiB as it serves (prometheus_client mmaps them).
METRICS_MIN_FREE_BYTES = 1 << 20


def pre_fork(server, worker):
    # In the master, before the fork: a worker's first write to a mapped page of a full
    # tmpfs is a SIGBUS, not an error, so every new worker would die as it booted, and be
    # replaced, without end or a word. The master stops instead, and the restarted
    # container starts with the directory emptied (on_starting). Not a boot error from the
    # worker: two workers replaced at once both failed, and gunicorn's halt, reaping the
    # second, died of its own error (exit 1 and a traceback).
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    if free < METRICS_MIN_FREE_BYTES:
        server.log.error("the metrics directory %s has %d bytes free, too few for a worker's metrics (files "
                         "of killed workers fill it; the chart's shmSizeLimit sizes it): stopping", directory, free)
        worker.tmp.close()
        raise HaltServer("the metrics directory is full", Arbiter.WORKER_BOOT_ERROR)


def post_worker_init(worker):
    # Requests gunicorn refuses itself get a JSON error too, not its HTML page. (Imported
    # here, in the worker: see rates_api.gunicorn_errors.)
    from rates_api import gunicorn_errors

    from rates_core.db import give_up_on_silence

    runtime = worker.wsgi.extensions["rates_api"]
    gunicorn_errors.install(runtime.metrics.answered_by_gunicorn)
    worker.on_header_timeout = runtime.metrics.header_timeouts.inc
    # A stalled database must not hold every thread (and /healthz with them) for as long
    # as it stalls. Here, not in the app factory: the process-wide wait would refuse the
    # COPY of anything else that runs the app in-process (the tests' ingest jobs).
    give_up_on_silence(runtime.settings.db_connect_timeout_s, runtime.settings.db_statement_timeout_ms)

    def drain_then_exit(signum, frame):
        if runtime.draining.is_set():
            return
        runtime.draining.set()
        worker.log.info("SIGTERM: draining for %.1fs before stopping", drain_seconds)
        timer = threading.Timer(drain_seconds, worker.handle_exit, args=(signum, frame))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, drain_then_exit)
    # A terminal's Ctrl-C signals every process of the group, the workers too, and the
    # master then sends them SIGQUIT: a gthread worker met by both could deadlock in its
    # quit handler and hold the stop for the whole graceful timeout. The master's SIGQUIT
    # alone stops a worker at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Last, and not in a worker that a SIGTERM met while it booted (gunicorn's own handler
    # then ran, and it stops as soon as it starts): a worker that stops without draining
    # closes its share of the port at once, and the kernel resets the probes queued on it.
    if probe_port and worker.alive:
        from rates_api import probes

        probes.serve(worker.wsgi, _host, probe_port)
    threading.Thread(target=_replace_when_hung, args=(worker, runtime), name="hung-requests", daemon=True).start()


def _replace_when_hung(worker, runtime):
    # A request past any budget is a thread that will not come back. The worker stops taking
    # requests (and its /readyz fails), finishes its other requests, within a request's
    # budget, and ends; gunicorn starts another at once. Not liveness alone: the probe
    # port's kernel spreads the probes over the workers, so a pod with one hung worker passed
    # about half of them, and was restarted after some twenty minutes on average, if at all.
    # Nor a plain stop: gunicorn's graceful wait for the hung request and Python's exit,
    # which waits for its thread, kept the worker, serving nothing, for some 65 s.
    every = min(5.0, runtime.hung_after_s / 4)
    while worker.alive:
        time.sleep(every)
        age = runtime.in_flight.oldest_age()
        # Not while a SIGTERM drains the worker: gunicorn's graceful stop bounds it already,
        # and no other worker would be started meanwhile.
        if age > runtime.hung_after_s and worker.alive and not runtime.draining.is_set():
            worker.log.error("a request has run for %.0f s, past any budget (%.0f s): this worker stops taking "
                             "requests, finishes its others and exits, and gunicorn replaces it",
                             age, runtime.hung_after_s)
            runtime.draining.set()
            _stop_but_the_hung(worker, runtime)
            os._exit(1)  # not 3 or 4: gunicorn stops altogether for a worker that exits so


def _stop_but_the_hung(worker, runtime):
    # gunicorn's own graceful stop, woken at once as its SIGTERM handler wakes it: it stops
    # accepting, answers a request on a kept-alive connection with "Connection: close" and
    # closes those, and writes every answer in progress. Its connections count down to the
    # hung requests' own (a request is counted until its answer is written), or a request's
    # budget runs out.
    worker.alive = False
    worker.method_queue.defer(lambda: None)
    finish_by = time.monotonic() + runtime.request_budget_s
    while time.monotonic() < finish_by:
        hung = runtime.in_flight.older_than(runtime.hung_after_s)
        if worker.nr_conns <= hung:
            return
        time.sleep(0.1)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
