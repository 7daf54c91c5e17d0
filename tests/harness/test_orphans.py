"""A session killed outright (SIGKILL) runs no teardown: what it started must not pile up."""

import os
import subprocess

from tests.support.db import OWNER, PREFIX, _identity, sweep_orphans


def test_a_killed_sessions_server_is_stopped_and_its_data_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    postmaster = subprocess.Popen(["sleep", "60"])  # stands in for the orphaned server
    try:
        orphan = tmp_path / f"{PREFIX}orphan"
        (orphan / "data").mkdir(parents=True)
        (orphan / OWNER).write_text(f"{dead.pid} 1")
        (orphan / "data" / "postmaster.pid").write_text(f"{postmaster.pid}\n/x/data\n")
        running = tmp_path / f"{PREFIX}running"  # this session's own
        running.mkdir()
        (running / OWNER).write_text(_identity(os.getpid()))
        reused = tmp_path / f"{PREFIX}reused"  # its pid now belongs to another process
        reused.mkdir()
        (reused / OWNER).write_text(f"{os.getpid()} 1")
        starting = tmp_path / f"{PREFIX}starting"  # no owner written yet
        starting.mkdir()

        assert sorted(sweep_orphans(tmp_path)) == [orphan, reused]
        assert postmaster.wait(timeout=10) == -3  # SIGQUIT: PostgreSQL's immediate shutdown
        assert not orphan.exists() and not reused.exists()
        assert running.exists() and starting.exists()
    finally:
        postmaster.kill()
        postmaster.wait()
