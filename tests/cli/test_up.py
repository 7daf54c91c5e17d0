"""`make up` serves the API until Ctrl-C, and then stops it, whoever reads its output."""

import os
import signal
import subprocess
import sys

from click.testing import CliRunner

from ratesctl import commands
from ratesctl.cli import cli
from tests.support.net import free_port
from tests.support.poll import wait_for


def test_ctrl_c_stops_the_api_even_when_the_output_pipe_has_gone(dsn, tmp_path):
    """`make up | tee up.log`, then Ctrl-C: tee ends at once, so what `up` says next goes
    into a closed pipe. The API must stop all the same (it was left running, answering
    500 to everything, as its own log had nowhere to go)."""
    port = free_port()
    serve = ("import datetime\nfrom ratesctl.commands import _serve_until_interrupted\n"
             f"_serve_until_interrupted({dsn!r}, {port}, datetime.date(2024, 1, 1), owner_dsn={dsn!r})\n")
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


def test_a_start_whose_example_week_ends_past_the_last_date_is_a_usage_error(monkeypatch):
    """The banner's example requests ask for the week from --start: past 9999-12-31 it was a
    traceback, once the local server had started and the demo data loaded."""
    def start(pgdata):
        raise ServerStarted(pgdata)

    monkeypatch.setattr(commands.localdb, "start", start)  # nothing here starts a server
    # Nor sends this process's log lines to the runner's output, closed once it returns.
    monkeypatch.setattr(commands.logs, "configure", lambda *args, **kwargs: None)
    port = str(free_port())
    refused = CliRunner().invoke(cli, ["up", "--port", port, "--days", "3", "--start", "9999-12-26"])
    assert refused.exit_code == 2, refused.output
    assert "the last start allowed is 9999-12-25" in refused.output
    longer = CliRunner().invoke(cli, ["up", "--port", port, "--days", "10", "--start", "9999-12-25"])
    assert longer.exit_code == 2 and "the last start allowed is 9999-12-22" in longer.output, longer.output
    # The last start allowed goes on to start the server.
    allowed = CliRunner().invoke(cli, ["up", "--port", port, "--days", "3", "--start", "9999-12-25"])
    assert isinstance(allowed.exception, ServerStarted), allowed.output
