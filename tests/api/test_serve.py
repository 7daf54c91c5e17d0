"""`make api` runs `ratesctl serve`: gunicorn on $HOST:$PORT against $DATABASE_URL."""

import json
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from ratesctl.commands import GUNICORN_CONF
from tests.support.api import gunicorn_server
from tests.support.net import free_port, wait_for_http
from tests.support.poll import wait_for
from tests.support.proc import stop_process


def test_ratesctl_serve_binds_port_and_reports_version(dsn, tmp_path):
    port = free_port()
    # A metrics directory of the test's own: gunicorn would make one in /dev/shm and
    # leave it behind if the test has to kill it.
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "APP_VERSION": "9.9.9",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
           "WEB_CONCURRENCY": "1", "SHUTDOWN_DRAIN_SECONDS": "0"}
    env.pop("HOST", None)
    with open(tmp_path / "out.log", "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ratesctl.cli", "serve"], env=env, cwd=tmp_path,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", process=process)
        assert requests.get(f"http://127.0.0.1:{port}/", headers={"X-Request-ID": "serve-test-1"},
                            timeout=5).json()["version"] == "9.9.9"
        assert requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'rates_api_requests_total{method="GET",route="/",status="200"} 1.0' in metrics
        _assert_gunicorns_own_errors_are_json(port)
        # Counted, though the app never saw them (one worker: WEB_CONCURRENCY=1).
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'rates_api_requests_total{method="other",route="<gunicorn>",status="414"} 1.0' in metrics
        assert 'rates_api_requests_total{method="other",route="<gunicorn>",status="400"} 6.0' in metrics
        _assert_the_root_answers_json_however_addressed(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        stop_process(process)
    # Every line is JSON, gunicorn's own included.
    lines = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines()]
    gunicorn = [line["event"] for line in lines if line.get("logger") == "gunicorn.error"]
    assert any(event.startswith("Booting worker") for event in gunicorn), gunicorn
    # The app's request lines, one per request, each with its request id: the client's, or
    # one made up (and sent back in X-Request-ID) when it gave none.
    requested = {}
    for line in lines:  # each path's first request
        if line.get("event") == "request":
            requested.setdefault(line["path"], line)
    assert requested["/"].get("request_id") == "serve-test-1", requested["/"]
    assert re.fullmatch(r"[0-9a-f]{32}", requested["/openapi.json"].get("request_id", "")), requested
    # The probes' and Prometheus's answers, every few seconds, are below the INFO level.
    assert "/metrics" not in requested and "/readyz" not in requested, requested


def _raw(port: int, request: bytes) -> tuple[int, str, dict]:
    """Send bytes as they are (no client library would send these); (status, type, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers.get("Content-Type", ""), json.loads(body)


def _assert_gunicorns_own_errors_are_json(port: int) -> None:
    # Requests gunicorn refuses before the app sees them: what curl sends for an unencoded
    # non-ASCII name, a lowercase method, too many headers.
    names = ["G\u00f6teborg", "G\u00d6TEBORG", "Gda\u0144sk", "\u041c\u043e\u0441\u043a\u0432\u0430"]
    for request, status in [
        *((f"GET /rates?date_from=2024-01-01&origin={name}&destination=NLRTM HTTP/1.1\r\nHost: x\r\n\r\n"
           .encode(), 400) for name in names),
        (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n", 431),
        # gunicorn's own reason for this one is "Bad Request"; the code follows the status.
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: br\r\n\r\n", 501),
    ]:
        answer = _raw(port, request)
        assert answer[:2] == (status, "application/json"), (request[:40], answer)
        assert answer[2]["error"]["code"] and answer[2]["error"]["message"], answer
        if status == 501:
            assert answer[2]["error"]["code"] == "not_implemented", answer
        if b"/rates?" in request:  # the URL is quoted as it was sent, and the cure named (the README's)
            assert any(f"origin={name}&" in answer[2]["error"]["message"] for name in names), answer
            assert "percent-encode non-ASCII characters (UTF-8)" in answer[2]["error"]["message"], answer
        else:  # not for an ASCII request line
            assert "percent-encode" not in answer[2]["error"]["message"], answer
    # A byte that is not UTF-8 (Latin-1's ö) is non-ASCII too.
    latin1 = _raw(port, b"GET /rates?origin=G\xf6teborg HTTP/1.1\r\nHost: x\r\n\r\n")
    assert latin1[0] == 400 and "percent-encode" in latin1[2]["error"]["message"], latin1
    too_long = _raw(port, b"GET /" + b"x" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert too_long[0] == 414 and too_long[2]["error"]["code"] == "uri_too_long", too_long
    # OPTIONS is a method like any other the API does not serve.
    options = requests.options(f"http://127.0.0.1:{port}/rates", timeout=5)
    assert options.status_code == 405 and "GET" in options.headers["Allow"]
    assert options.json()["error"]["code"] == "method_not_allowed"


def _assert_the_root_answers_json_however_addressed(port: int) -> None:
    # This client is a trusted proxy (FORWARDED_ALLOW_IPS's default 127.0.0.1), as the ALB
    # is in a pod, and the ALB passes a client's SCRIPT_NAME header on. Obeyed, "/api"
    # answered 500 (the path is outside it) and "/" an HTML redirect. An absolute-form
    # target without a path got an HTML redirect too.
    for target, extra in [(b"/", b"SCRIPT_NAME: /api\r\n"), (b"/", b"SCRIPT_NAME: /\r\n"), (b"http://x", b"")]:
        answer = _raw(port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (target, extra))
        assert answer[:2] == (200, "application/json") and answer[2]["version"] == "9.9.9", (target, answer)


@pytest.mark.parametrize("name, value", [("PORT", "abc"), ("PORT", "65536"), ("DB_POOL_SIZE", "0"), ("LOG_LEVEL", "bogus"),
                                         ("WEB_CONCURRENCY", "two"), ("FORWARDED_ALLOW_IPS", "10.0.1.0/16"),
                                         # PostgreSQL's integer range: every connection would fail
                                         ("DB_STATEMENT_TIMEOUT_MS", "2147483648"),
                                         # every worker failed to boot, and exit 3 (a full /dev/shm's)
                                         ("PROBE_PORT", "$PORT"),
                                         # a traceback from every worker, and exit 3
                                         ("DATABASE_URL", "garbage")])
def test_ratesctl_serve_names_a_bad_setting_in_one_line(dsn, tmp_path, name, value):
    port = str(free_port())
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": port, "WEB_CONCURRENCY": "1", name: value.replace("$PORT", port)}
    result = subprocess.run([sys.executable, "-m", "ratesctl.cli", "serve"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert name in result.stderr and "Traceback" not in result.stderr + result.stdout, result.stderr


@pytest.mark.parametrize("name, value", [("PORT", "abc"), ("PORT", "99999"), ("DB_POOL_SIZE", "0"),
                                         ("LOG_LEVEL", "bogus"), ("WEB_CONCURRENCY", "0"),
                                         ("FORWARDED_ALLOW_IPS", "10.0.0.0/8,10.0.1.0/16"), ("PROBE_PORT", "$PORT"),
                                         ("DATABASE_URL", "garbage"),
                                         # without quoting the password, whose unencoded % it stumbled on
                                         ("DATABASE_URL", "postgresql://rates_api:Xy7%Gq2secret@db/rates")])
def test_the_images_command_names_a_bad_setting_in_one_json_line(dsn, tmp_path, name, value):
    # What the image runs (api/Dockerfile), where a pod's logs must say what is wrong.
    port = str(free_port())
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": port, "WEB_CONCURRENCY": "1", name: value.replace("$PORT", port)}
    result = subprocess.run([sys.executable, "-m", "rates_api.serve", str(GUNICORN_CONF)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert line["event"] == "configuration error" and name in line["error"], line
    assert "secret" not in result.stdout + result.stderr
    assert result.stderr == "", result.stderr


def test_the_images_command_becomes_gunicorn(dsn, tmp_path):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "WEB_CONCURRENCY": "1",
           "SHUTDOWN_DRAIN_SECONDS": "0", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    process = subprocess.Popen([sys.executable, "-m", "rates_api.serve", str(GUNICORN_CONF)], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", process=process)
        # The same process (PID 1 in a pod, which Kubernetes signals) is gunicorn's master.
        with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:
            assert b"gunicorn" in cmdline.read()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        stop_process(process)


def test_an_ipv6_host_is_bracketed_for_gunicorn(monkeypatch):
    from gunicorn.util import parse_address

    monkeypatch.setenv("HOST", "::")
    monkeypatch.setenv("PORT", "8000")
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert conf["bind"] == "[::]:8000" and parse_address(conf["bind"]) == ("::", 8000)


def test_gunicorn_reads_log_level_as_the_app_does(monkeypatch):
    from rates_core.env import ConfigError

    monkeypatch.setenv("LOG_LEVEL", "Warning")
    assert runpy.run_path(str(GUNICORN_CONF))["loglevel"] == "warning"
    monkeypatch.setenv("LOG_LEVEL", "verbose")  # gunicorn alone would quietly log at info
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        runpy.run_path(str(GUNICORN_CONF))


def test_a_probe_port_equal_to_port_is_refused(monkeypatch):
    from rates_core.env import ConfigError

    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("PROBE_PORT", "8124")
    assert runpy.run_path(str(GUNICORN_CONF))["probe_port"] == 8124
    # Both on the same host: every worker failed to bind it, as it booted.
    monkeypatch.setenv("PROBE_PORT", "8123")
    with pytest.raises(ConfigError, match="PROBE_PORT"):
        runpy.run_path(str(GUNICORN_CONF))
    monkeypatch.delenv("PORT")  # PORT's default, 8000, too
    monkeypatch.setenv("PROBE_PORT", "8000")
    with pytest.raises(ConfigError, match="PROBE_PORT"):
        runpy.run_path(str(GUNICORN_CONF))


def test_idle_connections_outlive_the_load_balancers_by_default(monkeypatch):
    # The ALB's idle timeout is 60 s unless set: gunicorn must close idle connections later,
    # or the ALB may send a request into one that gunicorn is closing (a 502).
    monkeypatch.delenv("GUNICORN_KEEPALIVE", raising=False)
    assert runpy.run_path(str(GUNICORN_CONF))["keepalive"] == 75


def test_gunicorn_takes_its_worker_timeout_from_gunicorn_timeout(monkeypatch):
    # A worker silent for longer is killed with its requests: raising GUNICORN_TIMEOUT must
    # reach gunicorn. Read as gunicorn itself reads the file, so a setting it would not
    # know by that name fails here too.
    from gunicorn.app.wsgiapp import WSGIApplication

    monkeypatch.setattr(sys, "argv", ["gunicorn", "-c", str(GUNICORN_CONF)])
    monkeypatch.delenv("GUNICORN_CMD_ARGS", raising=False)
    monkeypatch.setenv("GUNICORN_TIMEOUT", "90")
    assert WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg.timeout == 90
    monkeypatch.delenv("GUNICORN_TIMEOUT")
    assert WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg.timeout == 30  # the README's default


def test_a_failed_bind_leaves_no_metrics_directory(dsn, tmp_path):
    import shlex

    from tests.support.images import SANDBOX, can_run_images

    if reason := can_run_images():
        pytest.skip(reason)
    # The server's /dev/shm is a directory of the test's own, bound there in a mount
    # namespace of its own: what it leaves is seen here after it exits, and another
    # server on the machine, making and removing its own directories, is not.
    shm = tmp_path / "shm"
    shm.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "WEB_CONCURRENCY": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.pop("HOST", None)
        script = (f"mount --bind {shlex.quote(str(shm))} /dev/shm && exec "
                  + shlex.join([sys.executable, "-m", "ratesctl.cli", "serve"]))
        result = subprocess.run([sys.executable, str(SANDBOX), script], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    # It failed for the port, and said so in JSON.
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["logger"] == "gunicorn.error" and last["event"] == f"Can't connect to ('127.0.0.1', {port})"
    assert os.listdir(shm) == []  # none left behind


def _metrics_directories(pid: int) -> set[str]:
    """The directories of the metric files that process ``pid`` has mapped (prometheus_client
    mmaps every file it counts into, named <type>_<pid>.db): a worker's metrics directory, as
    the server itself tells it, whatever other servers on the machine have made."""
    with open(f"/proc/{pid}/maps") as maps:  # address, perms, offset, device, inode, path
        paths = [fields[5].strip() for fields in (line.split(maxsplit=5) for line in maps) if len(fields) == 6]
    return {os.path.dirname(path) for path in paths
            if re.fullmatch(r"(counter|histogram|summary|gauge_\w+)_\d+\.db", os.path.basename(path))}


def test_the_own_metrics_directory_is_removed_on_exit_even_after_a_reload(dsn, tmp_path):
    from tests.support.proc import children

    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "WEB_CONCURRENCY": "1",
           "SHUTDOWN_DRAIN_SECONDS": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("HOST", None)
    process = subprocess.Popen([sys.executable, "-m", "ratesctl.cli", "serve"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        # The workers count into the master's directory (prometheus_client, imported first
        # in a worker, sees PROMETHEUS_MULTIPROC_DIR), so /metrics shows their requests.
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        counted = 'rates_api_requests_total{method="GET",route="/",status="200"} 1.0'
        assert counted in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        [worker] = children(process.pid)  # the one that counted (gunicorn's master exec'd by serve)
        [own] = _metrics_directories(worker)
        assert os.path.dirname(own) == shm and os.path.basename(own).startswith("rates-api-metrics-"), own
        assert os.path.isdir(own)
        process.send_signal(signal.SIGHUP)  # gunicorn reloads its config and replaces its workers

        def replaced():
            now = children(process.pid)
            return now if now and worker not in now else None

        [replacement] = wait_for(replaced, timeout=30, what="the reload to replace the worker")
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        counted = 'rates_api_requests_total{method="GET",route="/",status="200"} 2.0'
        assert counted in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert _metrics_directories(replacement) == {own}  # the reload made no other
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        stop_process(process)
    assert not os.path.exists(own)


def test_metrics_files_an_earlier_run_left_in_the_directory_are_removed_at_start(dsn, tmp_path):
    # A restarted container finds its emptyDir as the last run left it: summed in, the old
    # run's counters would be counted again, a jump in every rate.
    counted = 'rates_api_requests_total{method="GET",route="/",status="200"}'
    metrics = tmp_path / "metrics"  # gunicorn_server's PROMETHEUS_MULTIPROC_DIR, the same for both runs
    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", SHUTDOWN_DRAIN_SECONDS="0") as (_, base):
        for _ in range(5):
            requests.get(base + "/", timeout=5)
        assert f"{counted} 5.0" in requests.get(base + "/metrics", timeout=5).text
    left = {path.name for path in metrics.iterdir()}
    assert any(name.startswith("counter_") for name in left), left

    with gunicorn_server(dsn, tmp_path, WEB_CONCURRENCY="1", SHUTDOWN_DRAIN_SECONDS="0") as (_, base):
        requests.get(base + "/", timeout=5)
        assert f"{counted} 1.0" in requests.get(base + "/metrics", timeout=5).text
        assert left.isdisjoint(path.name for path in metrics.iterdir())


def _ignored_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)


def test_ctrl_c_in_a_terminal_stops_make_api_at_once(dsn, tmp_path):
    """A terminal's Ctrl-C signals the whole process group, the workers as well as the
    master, which then sends them SIGQUIT. A gthread worker hit by both could deadlock and
    hold the stop for the graceful timeout (3 stops in 12, measured): the workers leave
    SIGINT to the master, which this checks where the kernel keeps it, since the hang
    came only now and then."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "WEB_CONCURRENCY": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    env.pop("HOST", None)
    process = subprocess.Popen([sys.executable, "-m", "ratesctl.cli", "serve"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process=process)
        # The master forks its workers one after another, so the first may answer /healthz
        # before the second exists (1 run in 8 beside other tests), let alone has started.
        children = f"/proc/{process.pid}/task/{process.pid}/children"
        wait_for(lambda: len(open(children).read().split()) == 2, timeout=60, what="the master to fork both workers")
        workers = [int(pid) for pid in open(children).read().split()]
        wait_for(lambda: all(_ignored_signals(pid) & (1 << (signal.SIGINT - 1)) for pid in workers),
                 timeout=60, what="both workers to leave SIGINT to the master")
        assert not _ignored_signals(process.pid) & (1 << (signal.SIGINT - 1))  # the master stops on it

        os.killpg(process.pid, signal.SIGINT)

        # At the latest after the graceful timeout (35 s), when the master kills what is left.
        assert process.wait(timeout=120) == 0
        assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    finally:
        stop_process(process, group=True)


def _gunicorn_on_a_small_tmpfs(dsn, tmp_path, filled_before: str = "") -> tuple[subprocess.Popen, int, Path]:
    """gunicorn (2 workers) in a sandbox whose PROMETHEUS_MULTIPROC_DIR is on a tmpfs of 4 MiB
    ($SHM), as the chart's shmSizeLimit makes one; ``filled_before``, a shell command run in
    the sandbox before gunicorn, may fill it. Its output in gunicorn.log. Skips where
    sandboxes cannot run."""
    import shlex

    from tests.support.images import SANDBOX, can_run_images

    if reason := can_run_images():
        pytest.skip(reason)
    shm, port = tmp_path / "shm", free_port()
    shm.mkdir()
    metrics = shm / "metrics"  # made by on_starting
    script = (f'mount -t tmpfs -o size=4m shm "$SHM" && {filled_before or "true"} && exec '
              + shlex.join([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]))
    env = {**os.environ, "DATABASE_URL": dsn, "PORT": str(port), "WEB_CONCURRENCY": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics), "SHM": str(shm)}
    with open(tmp_path / "gunicorn.log", "wb") as out:
        process = subprocess.Popen([sys.executable, str(SANDBOX), script], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    return process, port, metrics


def _exit_status_once_the_metrics_fill(dsn, tmp_path, left: int) -> int:
    """gunicorn's exit status when, serving, its metrics tmpfs fills (up to ``left`` bytes
    free, or to 64 KiB less) and both its workers are killed. The metrics filled as the files of
    many killed workers would, and the workers killed as the OOM killer would, both at once:
    the master replaces both. (Two boot errors together stopped gunicorn's halt with an error
    of its own: exit 1, not 3.)"""
    from tests.support.proc import children

    process, port, metrics = _gunicorn_on_a_small_tmpfs(dsn, tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", process=process)
        [gunicorn] = wait_for(lambda: children(process.pid), timeout=10, what="gunicorn")
        inside = f"/proc/{gunicorn}/root{metrics}"  # the tmpfs, through the server's own view
        stats = os.statvfs(inside)
        count = [f"count={(stats.f_bavail * stats.f_frsize - left) // (64 << 10)}"] if left else []  # else: full
        subprocess.run(["dd", "if=/dev/zero", f"of={inside}/filler", "bs=64k", *count], capture_output=True)
        workers = wait_for(lambda: children(gunicorn), timeout=10, what="the workers")
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        return process.wait(timeout=60)
    finally:
        stop_process(process)


def test_a_full_metrics_directory_stops_the_server_instead_of_killing_every_worker(dsn, tmp_path):
    """prometheus_client writes through mmap: on a full tmpfs a worker's first new page is a
    SIGBUS. A new worker then died as it booted, over and over; now the master stops (a
    container restart empties the directory)."""
    assert _exit_status_once_the_metrics_fill(dsn, tmp_path, left=0) == 3  # gunicorn's "worker failed to boot"
    assert "too few for a worker's metrics" in (tmp_path / "gunicorn.log").read_text()


def test_a_nearly_full_metrics_directory_stops_the_server_too(dsn, tmp_path):
    """A worker's files take a few tens of KiB as it serves: a quarter of
    METRICS_MIN_FREE_BYTES (1 MiB) left would let new workers boot, and die of a SIGBUS
    once their files grow."""
    assert _exit_status_once_the_metrics_fill(dsn, tmp_path, left=256 << 10) == 3
    assert "too few for a worker's metrics" in (tmp_path / "gunicorn.log").read_text()


def test_a_server_whose_metrics_filesystem_is_full_as_it_starts_forks_no_worker(dsn, tmp_path):
    """on_starting empties the metrics directory, not what else fills its filesystem: the
    first workers are checked as the replacements are, and none is forked to die of a SIGBUS."""
    process, _, _ = _gunicorn_on_a_small_tmpfs(
        dsn, tmp_path, filled_before='(dd if=/dev/zero of="$SHM/filler" bs=64k 2>/dev/null; true)')
    try:
        assert process.wait(timeout=60) == 3
    finally:
        stop_process(process)
    log = (tmp_path / "gunicorn.log").read_text()
    assert "too few for a worker's metrics" in log and "Booting worker" not in log, log
