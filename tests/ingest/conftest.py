"""Helpers for the ingest job's tests: build files, run the job in-process or as a subprocess."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from rates_ingest import job
from rates_ingest.settings import Settings
from tests.support.db import INGEST_USER, as_user

ROWS = [
    ("CNSHA", "NLRTM", "2016-01-01", 1000),
    ("CNSHA", "NLRTM", "2016-01-01", 1200),
    ("CNNGB", "DEHAM", "2016-01-02", 900),
    ("HKHKG", "NOOSL", "2016-01-03", 1500),
]
# A later version of the file of ROWS.
V2_ROWS = [("CNSHA", "NLRTM", "2016-01-01", 2000), ("FRLEH", "SEGOT", "2016-01-05", 300)]


def as_csv(rows, header="orig_code,dest_code,day,price") -> bytes:
    lines = ([header] if header is not None else []) + [",".join(map(str, r)) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def as_objects(rows) -> list[dict]:
    return [dict(zip(("orig_code", "dest_code", "day", "price"), r)) for r in rows]


def as_json(rows) -> bytes:
    return json.dumps(as_objects(rows), indent=1).encode()


def as_ndjson(rows) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in as_objects(rows)).encode()


ENCODERS = {"csv": as_csv, "json": as_json, "ndjson": as_ndjson, "jsonl": as_ndjson}


def encode(extension: str, rows) -> bytes:
    """The file for ``rows`` in the format of ``extension`` (e.g. 'csv', 'json.gz')."""
    base, _, gz = extension.partition(".")
    body = ENCODERS[base](rows)
    return gzip.compress(body) if gz else body


# The job connects as its own database user, as deployed: a grant it lacks fails the tests.
def run_job(dsn, bucket, key, version_id=None, s3=None) -> int:
    settings = Settings(database_url=as_user(dsn, INGEST_USER), bucket=bucket, key=key, version_id=version_id)
    return job.run(settings, s3=s3)


def run_cli(dsn, *args, env=None, **kwargs) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DATABASE_URL": as_user(dsn, INGEST_USER) if dsn else "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "rates_ingest", *args], env=environ,
                          capture_output=True, text=True, timeout=120, **kwargs)


def prices(conn) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute("SELECT orig_code, dest_code, day::text, price FROM prices ORDER BY 1, 2, 3, 4")
        return cur.fetchall()


def runs(conn) -> list[dict]:
    with conn.cursor() as cur:
        cur.execute("""SELECT id, bucket, key, version_id, etag, status, rows, bytes, started_at, finished_at,
                              error, bad_rows, file_id FROM ingest_runs ORDER BY id""")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def last_run(conn) -> dict:
    return runs(conn)[-1]


def totals(conn) -> list[tuple]:
    """lane_totals as (orig, dest, day, average), to compare with what prices say."""
    with conn.cursor() as cur:
        cur.execute("""SELECT orig_code, dest_code, day::text, price_sum, price_count FROM lane_totals
                       ORDER BY 1, 2, 3""")
        return cur.fetchall()


def expected_totals(rows) -> list[tuple]:
    sums = {}
    for orig, dest, day, price in rows:
        s, n = sums.get((orig, dest, day), (0, 0))
        sums[(orig, dest, day)] = (s + price, n + 1)
    return sorted((*k, s, n) for k, (s, n) in sums.items())


def as_tuples(rows) -> list[tuple]:
    return sorted(tuple(r) for r in rows)


@pytest.fixture
def db(world, dsn):
    """(dsn, autocommit connection) of this test's database, with the world's ports."""
    return dsn, world
