"""`make up` serves the API until Ctrl-C, and then stops it, whoever reads its output."""

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from ratesctl import commands
from ratesctl.cli import cli
from tests.support.net import free_port
from tests.support.poll import wait_for
from tests.support.proc import children, running, stop_process

# `ratesctl up` with its server's data elsewhere: never in the checkout's .local/pgdata.
UP = """
import sys
from pathlib import Path
from ratesctl import cli, commands
commands.LOCAL_PGDATA = Path(sys.argv.pop(1))
cli.main()
"""
TINY = ("--prices", "2000", "--ports", "12", "--days", "7")


def test_ctrl_c_stops_the_api_even_when_the_output_pipe_has_gone(dsn, tmp_path):
    """`make up | tee up.log`, then Ctrl-C: tee ends at once, so what `up` says next goes
    into a closed pipe. The API must stop all the same (it was left running, answering
    500 to everything, as its own log had nowhere to go)."""
    port = free_port()
    serve = ("from ratesctl.commands import _serve_until_interrupted\n"
             f"_serve_until_interrupted({dsn!r}, {port}, [], owner_dsn={dsn!r})\n")
    env = {**os.environ, "WEB_CONCURRENCY": "1", "SHUTDOWN_DRAIN_SECONDS": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    up = subprocess.Popen([sys.executable, "-c", serve], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    gunicorn = None
    banner = []
    try:
        for line in up.stdout:  # up to the banner: the API answers
            banner.append(line.decode())
            if b"Ctrl-C stops" in line:
                break
        # The socket may not be where the README's line expects it (a long checkout path).
        assert f"  export DATABASE_URL='{dsn}'\n" in banner, banner
        [gunicorn] = open(f"/proc/{up.pid}/task/{up.pid}/children").read().split()
        up.stdout.close()  # tee has gone

        up.send_signal(signal.SIGINT)

        up.wait(timeout=60)
        wait_for(lambda: not os.path.exists(f"/proc/{gunicorn}"), timeout=60, what="gunicorn to stop")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if gunicorn and os.path.exists(f"/proc/{gunicorn}"):
            os.kill(int(gunicorn), signal.SIGKILL)  # its workers follow their master


class ServerStarted(Exception):
    pass


def test_a_start_whose_days_end_past_the_last_date_is_a_usage_error(monkeypatch):
    """Demo data past 9999-12-31 failed midway through its load, once the local server had
    started. (The example requests of the banner are of days the database has, whatever
    --start says.)"""
    def start(pgdata):
        raise ServerStarted(pgdata)

    monkeypatch.setattr(commands.localdb, "start", start)  # nothing here starts a server
    # Nor sends this process's log lines to the runner's output, closed once it returns.
    monkeypatch.setattr(commands.logs, "configure", lambda *args, **kwargs: None)
    port = str(free_port())
    refused = CliRunner().invoke(cli, ["up", "--port", port, "--days", "3", "--start", "9999-12-30"])
    assert refused.exit_code == 2, refused.output
    assert "the last start allowed is 9999-12-29" in refused.output
    longer = CliRunner().invoke(cli, ["up", "--port", port, "--days", "10", "--start", "9999-12-25"])
    assert longer.exit_code == 2 and "the last start allowed is 9999-12-22" in longer.output, longer.output
    # The last start allowed goes on to start the server.
    allowed = CliRunner().invoke(cli, ["up", "--port", port, "--days", "3", "--start", "9999-12-29"])
    assert isinstance(allowed.exception, ServerStarted), allowed.output


@pytest.mark.parametrize("name, value", [("WEB_CONCURRENCY", "abc"), ("MAX_RANGE_DAYS", "abc")])
def test_a_mistyped_api_setting_is_one_line_before_anything_starts(own_pgdata, tmp_path, name, value):
    """It was a traceback from the API (or from each worker) once PostgreSQL had started and
    the migrations and the demo data were done. The DATABASE_URL given is not the API's:
    `up` gives it its own."""
    env = {**os.environ, name: value, "DATABASE_URL": "garbage"}
    result = subprocess.run([sys.executable, "-c", UP, str(own_pgdata), "up", "--port", str(free_port()), *TINY],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == f"Error: environment variable {name} must be an integer, got 'abc'\n", result.stderr
    assert "starting PostgreSQL" not in result.stdout and not own_pgdata.exists(), result.stdout


class Up:
    """A `ratesctl up` running in a process group of its own, as a shell runs a job."""

    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port
        self.gunicorn: int | None = None

    def banner(self) -> list[str]:
        """Its output up to the end of the banner: the API answers."""
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if "Ctrl-C stops" in line:
                [self.gunicorn] = children(self.proc.pid)
                return lines
        raise AssertionError(f"up ended before its banner (exit status {self.proc.wait()}): {lines}")


@contextmanager
def running_up(pgdata: Path, tmp_path: Path, *args: str, stderr=subprocess.DEVNULL):
    """`ratesctl up` with its server in ``pgdata``; its gunicorn is killed afterwards if it
    is still running (and the own_pgdata fixture stops a server left running)."""
    env = {**os.environ, "WEB_CONCURRENCY": "1", "SHUTDOWN_DRAIN_SECONDS": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", UP, str(pgdata), "up", "--port", str(port), *args],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            start_new_session=True)
    up = Up(proc, port)
    try:
        yield up
    finally:
        stop_process(proc, group=True)
        if up.gunicorn and running(up.gunicorn):
            os.killpg(up.gunicorn, signal.SIGKILL)  # its own session: the group is its master's


def postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


def test_a_hang_up_stops_the_api_and_the_database(own_pgdata, tmp_path):
    """The terminal of `make up` closes, or its SSH connection drops: the job's process group
    gets SIGHUP. It ended `up` at once, and gunicorn (in a session of its own, which the
    hang-up does not reach) and PostgreSQL went on running."""
    with running_up(own_pgdata, tmp_path, *TINY) as up:
        banner = up.banner()
        assert f"starting PostgreSQL (data in {own_pgdata}) ...\n" in banner
        # The names, not a Python list; and the README's line, without an empty password.
        assert any(line.startswith("applied migrations: 0001_base_tables, 0002_daily_totals, ")
                   for line in banner), banner
        assert f"  export DATABASE_URL='postgresql://postgres@/rates?host={own_pgdata}'\n" in banner, banner
        server = postmaster(own_pgdata)

        os.killpg(up.proc.pid, signal.SIGHUP)

        up.proc.wait(timeout=120)
        wait_for(lambda: not running(up.gunicorn), what="gunicorn to stop")
        wait_for(lambda: not running(server), what="PostgreSQL to stop")


def test_a_sigterm_while_the_demo_data_loads_stops_the_database(own_pgdata, tmp_path):
    """SIGTERM (a kill, a supervisor stopping it) before the API had started ended `up` at
    once, and left its PostgreSQL running."""
    progress = tmp_path / "stderr"
    with progress.open("w") as stderr, running_up(own_pgdata, tmp_path, "--prices", "10000000",
                                                  stderr=stderr) as up:
        wait_for(lambda: "demo data" in progress.read_text(), what="the demo data's load to start")
        server = postmaster(own_pgdata)

        up.proc.send_signal(signal.SIGTERM)

        up.proc.wait(timeout=120)
        wait_for(lambda: not running(server), what="PostgreSQL to stop")


def test_the_example_requests_answer_with_averages_whatever_data_was_loaded(own_pgdata, tmp_path):
    """The banner named CNSHA to NLRTM and asia to europe_north over the week from --start:
    with --ports 4 the first answered unknown_location for NLRTM and the second only nulls,
    and with --days 3 the week ran past the data."""
    with running_up(own_pgdata, tmp_path, "--ports", "4", "--days", "3", "--prices", "300") as up:
        banner = "".join(up.banner())
        urls = re.findall(r"^  curl '([^']*)'$", banner, re.MULTILINE)
        assert len(urls) == 2, banner
        for url in urls:
            assert url.startswith(f"http://127.0.0.1:{up.port}/rates?"), banner
            response = requests.get(url, timeout=30)
            assert response.status_code == 200, (url, response.text)
            days = response.json()
            assert any(day["average_price"] is not None for day in days), (url, days)
            assert all(day["day"] <= "2024-01-03" for day in days), (url, days)  # the data's last day


def test_demo_data_options_for_a_database_with_data_say_they_change_nothing(monkeypatch, world, dsn):
    """`up --prices ...` on the database of an earlier `up` served the earlier data, and
    nothing said that the options had been ignored."""
    class Server:
        def cleanup(self):
            pass

    monkeypatch.setattr(commands.localdb, "start", lambda pgdata: Server())
    monkeypatch.setattr(commands.localdb, "ensure_database", lambda server, name: dsn)  # holds ports
    monkeypatch.setattr(commands, "_serve_until_interrupted", lambda *args, **kwargs: None)
    monkeypatch.setattr(commands, "_ignore_stop_signals", lambda: None)  # not this process's Ctrl-C
    monkeypatch.setattr(commands.logs, "configure", lambda *args, **kwargs: None)
    port = str(free_port())

    given = CliRunner().invoke(cli, ["up", "--port", port, "--prices", "5000", "--seed", "7"])
    assert given.exit_code == 0, given.output
    assert "so --prices, --seed changed nothing (they are used only for an empty database)" in given.output
    assert "remove .local/pgdata" in given.output
    plain = CliRunner().invoke(cli, ["up", "--port", port])
    assert plain.exit_code == 0 and "changed nothing" not in plain.output, plain.output
    assert "used only for an empty database" in CliRunner().invoke(cli, ["up", "--help"]).output
