"""Ingest benchmark: the job against raw COPY and a naive row-by-row INSERT, in one run.

    make bench-ingest                                   # 1M prices
    make bench-ingest BENCH_ARGS="--rows 10000000"      # up to 10M
    make bench-ingest BENCH_ARGS="--rows 1000000 --gzip"
    make bench-ingest BENCH_ARGS="--ports 143 --lanes 1000"   # the sample's density

It starts its own throwaway PostgreSQL (ratesctl.localdb) and moto_server, generates a
CSV of --rows prices over --ports generated ports, uploads it, and measures the following,
each in a fresh database cloned from one migrated template (so that no measurement meets
another's dead rows or autovacuum) and after a CHECKPOINT. With --rounds N they
alternate N times and each figure is the median:

  ours         `python -m rates_ingest` as a subprocess, wall clock from exec to exit:
               S3 download, gunzip, validation, COPY into prices with its triggers
               (derived totals) and index, commit. Peak RSS from wait4(). Also its
               own duration_s (from its settings to its last log line), which leaves
               out the interpreter's start and imports.
  ours, no totals  the same job into a database whose prices trigger is disabled: no
               derived totals at all (the API could not answer from it). What the job
               itself (download, validation, COPY) reaches on this machine.
  raw COPY     the physical limit: COPY of the same local file into an unindexed copy
               of prices with no triggers.
  prices COPY  COPY of the same local file straight into prices (triggers + index), no
               validation, with the job's work_mem, rolled back: what the schema
               itself costs per row.
  withdraw     `ratesctl withdraw` of the file that `ours` loaded: its prices deleted
               (the triggers take them out of the totals), in one transaction.
  port add, port move, rebuild  before that, in the same database: adding a port (probes
               of lane_totals' key), moving a port with prices to another region (the
               totals of its two regions computed again, 0018) and, for comparison, a
               rebuild of all the region totals (what such a move cost before 0018),
               each rolled back.
  naive        executemany() of single-row INSERTs into prices in one transaction, on
               the first --naive-rows rows (rolled back); its rate is extrapolated.
"""

import argparse
import csv
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import boto3
import psycopg2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rates_core import db as rates_db, migrate  # noqa: E402
from rates_ingest.settings import Settings  # noqa: E402
from ratesctl import localdb, withdraw  # noqa: E402
from tests.support.aws import FAKE_AWS_ENV, start_moto, stop_moto  # noqa: E402

COLUMNS = "orig_code, dest_code, day, price"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="prices in the file (up to 10M)")
    p.add_argument("--ports", type=int, default=500)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--lanes", type=int, default=0,
                   help="draw prices from this many random (origin, destination) pairs; 0: all pairs of --ports")
    p.add_argument("--naive-rows", type=int, default=20_000, help="rows for the naive baseline")
    p.add_argument("--gzip", action="store_true", help="upload the file gzip-compressed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="alternate the measurements this many times; report medians")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def generate(path: Path, args) -> int:
    """Write the CSV; returns its size. Ports are P0000.. in 10 regions."""
    rnd = random.Random(args.seed)
    codes = [f"P{i:04d}" for i in range(args.ports)]
    days = [(date(2024, 1, 1) + timedelta(d)).isoformat() for d in range(args.days)]
    lanes = rnd.sample([(o, d) for o in codes for d in codes], args.lanes) if args.lanes else None
    with open(path, "w", newline="") as out:
        out.write("orig_code,dest_code,day,price\n")
        left = args.rows
        while left:
            n = min(left, 100_000)
            if lanes:
                o, d = zip(*rnd.choices(lanes, k=n))
            else:
                o, d = rnd.choices(codes, k=n), rnd.choices(codes, k=n)
            day, price = rnd.choices(days, k=n), [rnd.randrange(100, 5000) for _ in range(n)]
            out.write("".join(f"{a},{b},{c},{p}\n" for a, b, c, p in zip(o, d, day, price)))
            left -= n
    return path.stat().st_size


def create_world(dsn: str, ports: int) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT INTO regions VALUES ('world', 'World', NULL)")
        cur.execute("INSERT INTO regions SELECT 'r' || i, 'Region ' || i, 'world' FROM generate_series(0, 9) i")
        cur.execute("""INSERT INTO ports SELECT 'P' || lpad(i::text, 4, '0'), 'Port ' || i, 'r' || (i %% 10)
                       FROM generate_series(0, %s - 1) i""", (ports,))
        cur.execute(f"CREATE TABLE prices_raw AS SELECT {COLUMNS} FROM prices WITH NO DATA")
    conn.close()


def run_ours(dsn: str, endpoint: str, bucket: str, key: str) -> tuple[float, int, dict]:
    """(seconds, peak RSS in bytes, the job's last log line) of one run of the job."""
    env = {**os.environ, **FAKE_AWS_ENV, "AWS_ENDPOINT_URL": endpoint, "DATABASE_URL": dsn}
    started = time.perf_counter()
    job = subprocess.Popen([sys.executable, "-m", "rates_ingest", "--bucket", bucket, "--key", key],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = job.stdout.read().decode()
    _pid, status, usage = os.wait4(job.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the job failed:\n{output}")
    return elapsed, usage.ru_maxrss * 1024, json.loads(output.strip().splitlines()[-1])


def copy_file(dsn: str, path: Path, table: str, *, commit: bool, work_mem: str = "4MB") -> float:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur, open(path, "rb") as data:
            cur.execute("SET LOCAL work_mem = %s", (work_mem,))
            started = time.perf_counter()
            cur.copy_expert(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT csv, HEADER)", data, size=1 << 20)
            conn.commit() if commit else conn.rollback()
            return time.perf_counter() - started
    finally:
        conn.close()


def run_naive(dsn: str, path: Path, rows: int) -> float:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        subset = [row for _, row in zip(range(rows), reader)]
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            started = time.perf_counter()
            cur.executemany(f"INSERT INTO prices ({COLUMNS}) VALUES (%s, %s, %s, %s)", subset)
            elapsed = time.perf_counter() - started
        conn.rollback()
    finally:
        conn.close()
    return len(subset) / elapsed


class Databases:
    """Fresh databases cloned from one migrated template, one per measurement."""

    TEMPLATE = "bench_template"

    def __init__(self, server, ports: int):
        self.server = server
        self.admin_dsn = server.get_uri("postgres")
        self.count = 0
        template = localdb.ensure_database(server, self.TEMPLATE)
        migrate.apply(template)
        create_world(template, ports)

    def fresh(self, totals: bool = True) -> tuple[str, str]:
        """A new database with the schema and ports, after a checkpoint: (name, DSN).
        Without ``totals``, loads into prices leave the derived totals alone."""
        self.count += 1
        name = f"bench_{self.count}"
        localdb.create_database(self.admin_dsn, name, template=self.TEMPLATE)
        if not totals:
            conn = psycopg2.connect(self.server.get_uri(name))
            with conn, conn.cursor() as cur:
                cur.execute("ALTER TABLE prices DISABLE TRIGGER prices_totals_insert")
            conn.close()
        # Otherwise the previous measurement's dirty pages would be written during this one.
        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        conn.close()
        return name, self.server.get_uri(name)

    def drop(self, name: str) -> None:
        localdb.drop_database(self.admin_dsn, name)


def run_withdraw(dsn: str, key: str) -> float:
    """Seconds that withdrawing the key's loaded file takes."""
    conn = rates_db.connect(dsn, application_name="bench")
    try:
        version = withdraw.loaded_file(conn, "bench", key).version
        started = time.perf_counter()
        withdraw.withdraw(conn, "bench", key, version, "bench")
        return time.perf_counter() - started
    finally:
        conn.close()


def run_port_edits(dsn: str) -> tuple[float, float, float]:
    """Seconds to add a port, to move a port with prices to another region, and to rebuild
    the region totals as a move did before 0018, each rolled back."""
    conn = psycopg2.connect(dsn)
    timings = []
    try:
        for statement in ("INSERT INTO ports VALUES ('PNEW', 'New port', 'r0')",
                          "UPDATE ports SET parent_slug = 'r1' WHERE code = 'P0000'",
                          "SELECT rates_rebuild_region_totals()"):
            with conn.cursor() as cur:
                started = time.perf_counter()
                cur.execute(statement)
                timings.append(time.perf_counter() - started)
            conn.rollback()
    finally:
        conn.close()
    return timings[0], timings[1], timings[2]


def check_loaded(dsn: str, rows: int, totals: bool = True) -> int:
    """Fail unless every row is loaded and totalled (or, without ``totals``, none is);
    the number of (lane, day) totals."""
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), (SELECT coalesce(sum(price_count), 0) FROM lane_totals), "
                    "(SELECT count(*) FROM lane_totals) FROM prices")
        count, totalled, lane_days = cur.fetchone()
    conn.close()
    if (count, totalled) != (rows, rows if totals else 0):
        sys.exit(f"expected {rows} rows loaded and totalled, found {count} and {totalled}")
    return lane_days


def upload(endpoint: str, path: Path, key: str, compress: bool) -> int:
    s3 = boto3.client("s3", endpoint_url=endpoint, **{"region_name": "us-east-1",
                      "aws_access_key_id": "testing", "aws_secret_access_key": "testing"})
    s3.create_bucket(Bucket="bench")
    source = path
    if compress:
        source = path.with_suffix(".csv.gz")
        with open(path, "rb") as raw, gzip.open(source, "wb", compresslevel=6) as out:
            shutil.copyfileobj(raw, out, 1 << 20)
    s3.upload_file(str(source), "bench", key)
    return source.stat().st_size


def report(args, size, uploaded, rounds: list[dict]) -> None:
    median = {name: statistics.median(r[name] for r in rounds)
              for name in ("ours", "inside", "bare", "bare_inside", "raw", "floor", "withdraw",
                           "port_add", "port_move", "rebuild")}
    ours, inside, raw, floor = median["ours"], median["inside"], median["raw"], median["floor"]
    rss, naive = max(r["rss"] for r in rounds), rounds[0]["naive"]
    last_line, lane_days = rounds[-1]["last_line"], rounds[0]["lane_days"]
    rate = args.rows / ours
    mb = 1 << 20
    shape = f"{args.lanes:,} lanes" if args.lanes else f"all {args.ports * args.ports:,} lanes"
    print()
    print(f"rows {args.rows:,}  file {size / mb:.1f} MiB" + (f" ({uploaded / mb:.1f} MiB gzip)" if args.gzip else "")
          + f"  {args.ports} ports, {shape}, {args.days} days")
    print(f"{lane_days:,} (lane, day) totals: {args.rows / lane_days:.1f} prices per lane and day")
    if len(rounds) > 1:
        spread = ", ".join(f"{r['raw'] / r['ours']:.2f}x" for r in rounds)
        print(f"medians of {len(rounds)} rounds (ours / raw COPY in each round: {spread})")
    print(f"{'':14}{'seconds':>10}{'rows/s':>14}")
    print(f"{'ours':14}{ours:10.2f}{rate:14,.0f}   peak RSS {rss / mb:.0f} MiB   (exec to exit)")
    print(f"{'ours in-job':14}{inside:10.2f}{args.rows / inside:14,.0f}   (its duration_s: no interpreter start)")
    print(f"{'ours no totals':14}{median['bare']:10.2f}{args.rows / median['bare']:14,.0f}   "
          f"(in-job {median['bare_inside']:.2f} s; the prices trigger disabled)")
    print(f"{'raw COPY':14}{raw:10.2f}{args.rows / raw:14,.0f}")
    print(f"{'prices COPY':14}{floor:10.2f}{args.rows / floor:14,.0f}   (triggers + index, no validation)")
    print(f"{'port add':14}{median['port_add']:10.4f}{'':14}   (a port with no prices: probes of lane_totals' key)")
    print(f"{'port move':14}{median['port_move']:10.2f}{'':14}   (a port with prices to another region: its two "
          "regions' totals)")
    print(f"{'rebuild':14}{median['rebuild']:10.2f}{'':14}   (all the region totals: a port move before 0018)")
    print(f"{'withdraw':14}{median['withdraw']:10.2f}{args.rows / median['withdraw']:14,.0f}   "
          "(the file ours loaded: its prices and totals out)")
    print(f"{'naive':14}{args.rows / naive:10.2f}{naive:14,.0f}   (extrapolated from {args.naive_rows:,} rows)")
    print()
    print(f"ours / raw COPY     {rate / (args.rows / raw):6.2f}x   (target >= 0.7; in-job {raw / inside:.2f}x)")
    print(f"ours / prices COPY  {rate / (args.rows / floor):6.2f}x")
    print(f"no totals / raw     {raw / median['bare']:6.2f}x   (the job alone, with no derived data; in-job "
          f"{raw / median['bare_inside']:.2f}x)")
    print(f"ours / naive        {rate / naive:6.1f}x   (target >= 20)")
    print(f"withdraw / ours     {median['withdraw'] / ours:6.2f}x   (time to take the file out, against its load)")
    print(f"port move / ours    {median['port_move'] / ours:6.2f}x   (the move, against the load)")
    print(f"rebuild / port move {median['rebuild'] / median['port_move']:6.2f}x   (a move before 0018, against now)")
    print(f"job's last log line: {json.dumps(last_line)}")


def measure_round(dbs: Databases, args, path: Path, endpoint: str, key: str, *, naive: bool) -> dict:
    """One of each measurement, each in its own fresh database."""
    figures = {}
    for name, step in (("raw", "raw COPY"), ("floor", "COPY into prices (rolled back)"), ("ours", "ours"),
                       ("bare", "ours, no totals")):
        print(f"{step} ...", flush=True)
        db, dsn = dbs.fresh(totals=name != "bare")
        if name == "ours":
            elapsed, figures["rss"], last_line = run_ours(dsn, endpoint, "bench", key)
            figures.update(ours=elapsed, inside=last_line["duration_s"], last_line=last_line,
                           lane_days=check_loaded(dsn, args.rows))
            print("port edits ...", flush=True)
            figures["port_add"], figures["port_move"], figures["rebuild"] = run_port_edits(dsn)
            print("withdraw ...", flush=True)
            figures["withdraw"] = run_withdraw(dsn, key)
            check_loaded(dsn, 0)
        elif name == "bare":
            elapsed, _rss, last_line = run_ours(dsn, endpoint, "bench", key)
            check_loaded(dsn, args.rows, totals=False)
            figures.update(bare=elapsed, bare_inside=last_line["duration_s"])
        else:
            figures[name] = copy_file(dsn, path, "prices_raw" if name == "raw" else "prices",
                                      commit=name == "raw", work_mem=Settings.work_mem)
        dbs.drop(db)
    if naive:
        print("naive ...", flush=True)
        db, dsn = dbs.fresh()
        figures["naive"] = run_naive(dsn, path, args.naive_rows)
        dbs.drop(db)
    return figures


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    server = moto = None
    try:
        server = localdb.start(work / "pg", throwaway=True)
        dbs = Databases(server, args.ports)
        moto, endpoint = start_moto()
        path = work / "prices.csv"
        print(f"generating {args.rows:,} rows ...", flush=True)
        size = generate(path, args)
        key = "bench/prices.csv.gz" if args.gzip else "bench/prices.csv"
        uploaded = upload(endpoint, path, key, args.gzip)
        rounds = []
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {number} of {args.rounds}", flush=True)
            # The naive baseline is 50-1000x slower than the rest; once is enough to rank it.
            rounds.append(measure_round(dbs, args, path, endpoint, key, naive=number == 1))
        report(args, size, uploaded, rounds)
    finally:
        if moto:
            stop_moto(moto)
        if server:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
