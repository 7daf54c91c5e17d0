"""The ratesctl commands: migrate, demo-data, serve, up, reconcile and withdraw."""

import contextlib
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import click
import psycopg2.extensions
from tqdm import tqdm

from rates_core import db, logs, migrate as migrations
from rates_core.env import env_choice
from rates_core.errors import PermanentError

from . import demodata, examples, localdb, reconcile, withdraw
from .terminal import printable, shell_word, shown

REPO_ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = REPO_ROOT / "api" / "gunicorn.conf.py"
LOCAL_PGDATA = REPO_ROOT / ".local" / "pgdata"


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url:
        raise click.UsageError("DATABASE_URL is not set, e.g. DATABASE_URL=postgresql://user@host/db")
    return url


def _settings_of_migrating(log_level: str = "INFO") -> int:
    """LOG_LEVEL (``log_level`` if unset) and MIGRATION_LOCK_WAIT_SECONDS, as every command
    that migrates reads them: a mistyped one exits 2 before anything starts. The logs are
    configured; returns the lock wait for migrations.apply."""
    level = env_choice("LOG_LEVEL", log_level, logs.LEVELS)
    lock_wait = migrations.lock_wait_from_env()
    logs.configure(level, service="ratesctl")
    return lock_wait


@click.command("migrate")
def migrate_command() -> None:
    """Apply the schema migrations to $DATABASE_URL (safe to run again)."""
    lock_wait = _settings_of_migrating()
    applied = migrations.apply(_database_url(), lock_wait)
    click.echo(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none, already current'}")


def _spec_options(fn):
    for option in reversed([
        click.option("--prices", default=demodata.Spec.prices, show_default=True, type=click.IntRange(1),
                     help="Number of prices (10000000 for the benchmark size)."),
        click.option("--days", default=demodata.Spec.days, show_default=True, type=click.IntRange(1)),
        click.option("--ports", default=demodata.Spec.ports, show_default=True, type=click.IntRange(2, demodata.MAX_PORTS)),
        click.option("--start", default=str(demodata.Spec.start), show_default=True,
                     type=click.DateTime(["%Y-%m-%d"])),
        click.option("--seed", default=demodata.Spec.seed, show_default=True),
    ]):
        fn = option(fn)
    return fn


def _check_start(start: date, days: int) -> None:
    """A usage error (exit 2) if the days from ``start`` would run past the last date there
    is: the demo data then failed midway through its COPY, with "date value out of range"
    and "this may pass on retry"."""
    latest = date.max.toordinal() - (days - 1)
    if latest < 1:
        raise click.UsageError(f"--days {days} is more days than the calendar has ({date.max.toordinal()})")
    if start.toordinal() > latest:
        raise click.UsageError(f"--start {start}: its {days} day(s) of demo data would end after {date.max}, "
                               f"the last date there is; the last start allowed is {date.fromordinal(latest)}")


def load_demo_data(dsn: str, spec: demodata.Spec) -> None:
    conn = db.connect(dsn, application_name="ratesctl")
    try:
        with db.classified(), tqdm(total=spec.prices, unit=" prices", unit_scale=True, desc="demo data") as bar:
            demodata.load(conn, spec, progress=bar.update)
    finally:
        conn.close()


@click.command("demo-data")
@_spec_options
@click.option("--force", is_flag=True, help="Load even if the database already has ports.")
def demo_data_command(prices, days, ports, start, seed, force) -> None:
    """Generate the deterministic demo dataset into $DATABASE_URL (migrated first)."""
    lock_wait = _settings_of_migrating()
    _check_start(start.date(), days)
    dsn = _database_url()
    migrations.apply(dsn, lock_wait)
    if not force and not _is_empty(dsn):
        raise PermanentError("the database already holds ports; use --force to add anyway")  # exits 2
    spec = demodata.Spec(prices=prices, days=days, ports=ports, start=start.date(), seed=seed)
    load_demo_data(dsn, spec)


def _is_empty(dsn: str) -> bool:
    conn = db.connect(dsn, application_name="ratesctl")
    try:
        with db.classified(), conn.cursor() as cur:
            cur.execute("SELECT NOT EXISTS (SELECT 1 FROM ports) AND NOT EXISTS (SELECT 1 FROM prices)")
            return cur.fetchone()[0]
    finally:
        conn.close()


def gunicorn_argv() -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]


@click.command("serve")
def serve_command() -> None:
    """Serve the API with gunicorn on $HOST:$PORT against $DATABASE_URL (foreground)."""
    _database_url()
    _check_server_settings()
    os.execv(sys.executable, gunicorn_argv())


def _check_server_settings(given: dict[str, str] | None = None) -> None:
    """Read the API's and gunicorn's variables here, so a mistyped one is one line, not a
    traceback from the master and from every worker. ``given``: those the API will be
    started with over this environment (as `up` starts it)."""
    from rates_api.serve import check

    with _environ(given or {}):
        check(str(GUNICORN_CONF))


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """os.environ with ``values`` for the block (the check reads only os.environ)."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _api_env(dsn: str, port: int) -> dict[str, str]:
    """The variables `up` starts its API with, over the environment it was given."""
    return {"DATABASE_URL": dsn, "HOST": "127.0.0.1", "PORT": str(port)}


@click.command("up")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@_spec_options
def up_command(port, prices, days, ports, start, seed) -> None:
    """Local database in .local/, migrations, demo data if empty, and the API (Ctrl-C stops all).

    The demo data's options are used only for an empty database: for other demo data,
    stop up and remove .local/pgdata (the whole local database) first.
    """
    # What this command does is echoed as it goes; of the log lines, only warnings add to it
    # (unless LOG_LEVEL says otherwise).
    lock_wait = _settings_of_migrating("WARNING")
    # From here on: a signal before the API's start (during the demo data's load, say) killed
    # this process at once, and the server it had started went on running.
    with _stop_signals_interrupt():
        _check_start(start.date(), days)
        # The API's settings, before anything starts: a mistyped one (WEB_CONCURRENCY=abc)
        # was a traceback once PostgreSQL, the migrations and the demo data were done. Its
        # DATABASE_URL is `up`'s own, of the same form as this stand-in (the server says
        # where its socket is only once started).
        _check_server_settings(_api_env(psycopg2.extensions.make_dsn(
            host=str(LOCAL_PGDATA), dbname="rates", user=db.API_USER), port))
        _check_port_free(port)
        click.echo(f"starting PostgreSQL (data in {_shown_path(LOCAL_PGDATA)}) ...")
        server = localdb.start(LOCAL_PGDATA)
        try:
            dsn = localdb.ensure_database(server, "rates")
            click.echo(f"applied migrations: {', '.join(migrations.apply(dsn, lock_wait)) or 'none, already current'}")
            if _is_empty(dsn):
                load_demo_data(dsn, demodata.Spec(prices=prices, days=days, ports=ports,
                                                  start=start.date(), seed=seed))
            else:
                _say_demo_options_unused()
            # As deployed: the API reads as its own user, which the local server trusts.
            _serve_until_interrupted(psycopg2.extensions.make_dsn(dsn, user=db.API_USER), port,
                                     examples.requests(dsn), owner_dsn=dsn)
        finally:
            _ignore_stop_signals()  # a second Ctrl-C must not cut the stop short either
            _say("stopping PostgreSQL ...")
            server.cleanup()


DEMO_OPTIONS = ("prices", "days", "ports", "start", "seed")


def _say_demo_options_unused() -> None:
    """Say so when demo data options were given to an `up` whose database holds data
    already: they were ignored without a word, and the API served the data of before."""
    ctx = click.get_current_context()
    given = [f"--{name}" for name in DEMO_OPTIONS
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:
        click.echo(f"the database holds data already, so {', '.join(given)} changed nothing (they are used only "
                   f"for an empty database): to load other demo data, stop up, remove {_shown_path(LOCAL_PGDATA)} "
                   "(the whole local database) and run it again")


def _shown_path(path: Path) -> Path:
    """``path`` relative to the checkout, as is if it lies elsewhere (a test's server)."""
    try:
        return path.relative_to(REPO_ROOT)
    except ValueError:
        return path


# Ctrl-C, a kill's SIGTERM, and SIGHUP when the terminal closes or an SSH connection drops.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals_interrupt():
    """Inside, the stop signals raise KeyboardInterrupt, so that what was started is stopped
    (by default SIGTERM and SIGHUP end Python at once); as they were afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # (one set outside Python is not known, nor restored)
                signal.signal(signum, handler)


def _ignore_stop_signals() -> None:
    # Programs started from now on (pg_ctl stop) ignore them too.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _serve_until_interrupted(dsn: str, port: int, example_requests: list[str],
                             owner_dsn: str | None = None) -> None:
    # Stop on Ctrl-C, SIGTERM or SIGHUP even when started from a script that ignores SIGINT.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    env = {**os.environ, **_api_env(dsn, port)}
    env.setdefault("APP_VERSION", "local")
    # Its own session: Ctrl-C reaches only us, and we pass one SIGINT on to the master.
    # (When the terminal signals every gunicorn process at once, a gthread worker can
    # receive SIGINT and then SIGQUIT and deadlock inside its own quit handler.) The hang-up
    # of a closed terminal does not reach it either: we pass it on as that SIGINT.
    api = subprocess.Popen(gunicorn_argv(), env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        if not _answers(f"{url}/healthz", api):
            raise click.ClickException(f"the API did not start (exit status {api.poll()})")
        click.echo(f"\nRates API: {url}\n\n{_try(url, example_requests)}\n"
                   + (f"The database, for the other make targets (its socket is where the server put it):\n"
                      f"  export DATABASE_URL={shlex.quote(owner_dsn)}\n\n" if owner_dsn else "")
                   + "Ctrl-C stops the API and the database.\n")
        code = api.wait()
    except KeyboardInterrupt:
        code = None
    finally:
        # Whenever we stop (even on a Ctrl-C before the banner), gunicorn stops first.
        _stop_api(api)
    if code:
        raise click.ClickException(f"the API exited with status {code}")


def _try(url: str, example_requests: list[str]) -> str:
    if not example_requests:
        return ("The database holds no prices between known ports yet; a request reads:\n"
                f"  curl '{url}/rates?date_from=YYYY-MM-DD&date_to=YYYY-MM-DD"
                "&origin=PORT_OR_REGION&destination=PORT_OR_REGION'\n")
    return "Try:\n" + "".join(f"  curl '{url}/rates?{query}'\n" for query in example_requests)


def _say(text: str) -> None:
    """Echo ``text`` if anyone still reads it: stopping must go on either way."""
    try:
        click.echo(text)
    except OSError:  # BrokenPipeError: the reader (tee, a pager) has gone
        pass


def _check_port_free(port: int) -> None:
    # Otherwise gunicorn keeps retrying the bind while the banner's URL reaches whoever has the port.
    with socket.socket() as probe:
        # As gunicorn binds: the last run's connections in TIME_WAIT do not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.ClickException(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another "
                                       "port with --port (make up UP_ARGS=\"--port 8001\")") from None


def _answers(url: str, api: subprocess.Popen, timeout_s: float = 60) -> bool:
    """Wait until the API answers ``url``; False if its process exits (or is silent) first."""
    deadline = time.monotonic() + timeout_s
    while api.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except OSError:
            time.sleep(0.2)
    return False


def _stop_api(api: subprocess.Popen) -> None:
    if api.poll() is not None:
        return
    # Further Ctrl-Cs (or a hang-up after one) must not cut the wait short and leave gunicorn running.
    _ignore_stop_signals()
    # Signalled before anything is said: a Ctrl-C on `make up | tee log` ends tee too, and
    # the echo into the closed pipe would leave gunicorn running without its stdout.
    api.send_signal(signal.SIGINT)
    _say("stopping the API ...")
    try:
        api.wait(timeout=30)
    except subprocess.TimeoutExpired:
        api.kill()
        api.wait()


@click.command("reconcile")
@click.option("--bucket", required=True, help="The uploads bucket.")
@click.option("--prefix", required=True,
              help="The keys under this prefix: the controller's UPLOADS_PREFIX (`prices/` by the Terraform); "
                   "the controller sets aside an event for any other key. '' for the whole bucket.")
@click.option("--send", is_flag=True, help="Send an upload event for each file found to the uploads queue.")
@click.option("--queue-url", envvar="QUEUE_URL", help="The uploads queue, for --send (default: $QUEUE_URL).")
@click.option("--include-rejected", is_flag=True,
              help="Send also the files whose last run rejected them (after fixing, e.g., unknown ports).")
def reconcile_command(bucket, prefix, send, queue_url, include_rejected) -> None:
    """List the uploads whose latest version in S3 is not the file loaded for its key in
    $DATABASE_URL (after a restore, a rebuild, lost events), and their earlier versions newer
    than that file, in case the newer is rejected; --send loads them again."""
    from rates_ingest import s3source

    if send and not queue_url:
        raise click.UsageError("--send needs --queue-url or QUEUE_URL")
    sqs = None
    if send:  # before the listing, which takes minutes on a big bucket
        sqs = reconcile.sqs_client()
        reconcile.check_queue(sqs, queue_url)
    # Autocommit: listing a big bucket takes minutes, and a transaction left open meanwhile
    # would be ended by the database's idle_in_transaction_session_timeout.
    conn = db.connect(_database_url(), application_name="ratesctl", autocommit=True)
    try:
        found, examined = reconcile.missing(s3source.client(), conn, bucket, prefix)
    finally:
        conn.close()
    # A run's error may quote the key as the job saw it: raw, so it is escaped here too.
    listed = _echo_lines(f"s3://{bucket}/{shown(upload.key)}  {upload.info.identity}  {printable(_why(upload))}"
                         for upload in found)
    # A key the job refuses by its name never loads, whatever --include-rejected says.
    to_send = [u for u in found if not u.never_loads
               and (include_rejected or not u.last_run or u.last_run[0] != "rejected")]
    if send and to_send:
        reconcile.send(sqs, queue_url, bucket, to_send)
    by_name = sum(upload.never_loads for upload in found)
    held = len(found) - len(to_send) - by_name  # rejected for their content: none with --include-rejected
    older = sum(upload.older for upload in found)
    summary = (f"{len(found)} upload(s) of the {examined} under s3://{bucket}/{prefix} not loaded as S3 holds them"
               + (f" ({older} of them earlier versions)" if older else "")
               + (f"; {len(to_send)} sent to the uploads queue" if send else "")
               + (f"; {held} rejected, not sent (--include-rejected sends those rejected for their content)"
                  if held else "")
               + (f"; {by_name} never sent: no price file by the name (the job refuses it unread)"
                  if by_name else ""))
    click.echo(summary, err=not listed)
    if not examined:
        click.echo(f"S3 holds no object under s3://{bucket}/{prefix}: is the prefix right (it is case-sensitive)?",
                   err=True)


def _echo_lines(lines) -> bool:
    """Echo the lines; False, and stdout sent to /dev/null, once its reader has gone (`| head`):
    the rest of the command (the sends) must happen all the same."""
    try:
        for line in lines:
            click.echo(line)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # or Python's exit would fail to flush it
        return False
    return True


def _why(upload: reconcile.Upload) -> str:
    if upload.last_run and upload.last_run[0] == "rejected":
        older = " (an older version, newer than the key's file)" if upload.older else ""
        return f"rejected{older}: {upload.last_run[1]}"
    if upload.older:
        return "older version, newer than the key's file, sent in case the newer does not load" + (
            f"; last run {upload.last_run[0]}: {upload.last_run[1]}" if upload.last_run else "")
    state = "not loaded"
    if upload.loaded:
        state = (f"another file was loaded ({upload.loaded}) and withdrawn" if upload.withdrawn
                 else f"another file is loaded ({upload.loaded})")
    return state + (f"; last run {upload.last_run[0]}: {upload.last_run[1]}" if upload.last_run else "")


@click.command("withdraw")
@click.option("--bucket", required=True, help="The uploads bucket.")
@click.option("--key", required=True, help="The object's key, as S3 lists it.")
@click.option("--version", help="The loaded file's version, as this command prints it without --version.")
@click.option("--reason", help="Why, for the record: the withdrawal's run in ingest_runs keeps it.")
def withdraw_command(bucket, key, version, reason) -> None:
    """Take the prices of the file loaded for a key out of $DATABASE_URL (the schema
    owner's). Without --version and --reason, only show that file."""
    if (version is None) != (reason is None) or (reason is not None and not reason.strip()):
        raise click.UsageError("give both --version and a --reason to withdraw, or neither to look")
    conn = db.connect(_database_url(), application_name=withdraw.APPLICATION_NAME)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        if version is None:
            _show_loaded_file(withdraw.loaded_file(conn, bucket, key), bucket, key)
            return
        with _ctrl_c_cancels_statements() as committing:
            found, deleted = withdraw.withdraw(conn, bucket, key, version, reason.strip(), waiting=lambda: click.echo(
                f"a load of s3://{bucket}/{shown(key)} is in progress: waiting for it to commit (Ctrl-C stops here and "
                "withdraws nothing)", err=True), committing=committing)
        _say_withdrawn(bucket, key, found, deleted)
    finally:
        conn.close()
        signal.signal(signal.SIGINT, sigint)


def _say_withdrawn(bucket: str, key: str, found: withdraw.LoadedFile, deleted: int | None) -> None:
    if deleted is None:
        click.echo(f"s3://{bucket}/{shown(key)} version {found.version} was withdrawn before, at "
                   f"{db.in_utc(found.withdrawn_at)}")
        return
    click.echo(f"withdrew s3://{bucket}/{shown(key)} version {found.version}: {deleted} price(s) deleted; the "
               "key's next upload of a changed file loads as usual (these same bytes again do not, as a copy or a "
               "restore of this version). Delete the object too (or move it out of the prefix), or loading everything "
               "again from S3 (runbook/sql/reload_all.sql, then `ratesctl reconcile --send`) loads it again; a restore "
               "of the database to before now brings its prices back: withdraw it again then.")


@contextlib.contextmanager
def _ctrl_c_cancels_statements():
    """psycopg2 waits in Python meanwhile, so that a Ctrl-C cancels the statement running
    (a big file's DELETE takes minutes): blocked in libpq, it would be held back until the
    statement ended. For this process's connections, only while inside (psycopg2 refuses
    COPY on connections that wait this way).

    Yields what to call just before the commit: a COMMIT under way commits whatever a
    cancel says, so from then on a Ctrl-C is ignored (the caller restores SIGINT once it
    has said what it did), and would otherwise report a done withdrawal as aborted.
    """
    previous = psycopg2.extensions.get_wait_callback()

    def committing() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        psycopg2.extensions.set_wait_callback(previous)

    psycopg2.extensions.set_wait_callback(_wait_cancelling)
    try:
        yield committing
    finally:
        psycopg2.extensions.set_wait_callback(previous)


def _wait_cancelling(conn) -> None:
    # psycopg2.extras.wait_select cancels too, but swallows the Ctrl-C: one that lands on a
    # statement that ends anyway (a lock poll) would be lost, and the command go on.
    interrupted = False
    while True:
        try:
            # poll() inside too: a Ctrl-C handled just after it returns must cancel as well.
            state = conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                break
            if state == psycopg2.extensions.POLL_READ:
                select.select([conn.fileno()], [], [])
            else:
                select.select([], [conn.fileno()], [])
        except KeyboardInterrupt:
            conn.cancel()
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt


def _show_loaded_file(found: withdraw.LoadedFile | None, bucket: str, key: str) -> None:
    if found is None:
        raise PermanentError(f"no file is loaded for s3://{bucket}/{shown(key)}")
    if found.withdrawn_at:
        click.echo(f"s3://{bucket}/{shown(key)}: version {found.version}, loaded at {db.in_utc(found.loaded_at)} with "
                   f"{found.rows} price(s), withdrawn at {db.in_utc(found.withdrawn_at)}")
        return
    click.echo(f"s3://{bucket}/{shown(key)}: version {found.version}, {found.rows} price(s), loaded at "
               f"{db.in_utc(found.loaded_at)}")
    args = ["ratesctl", "withdraw", "--bucket", shell_word(bucket), "--key", shell_word(key),
            "--version", shell_word(found.version)]
    click.echo(f"to take its prices out: {' '.join(args)} --reason '...'")
