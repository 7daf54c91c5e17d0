"""API benchmark: our /rates against the naive baseline, side by side, in one run.

    make bench-api                                  # 10M prices (generated once, cached in .local/bench)
    make bench-api BENCH_ARGS="--prices 1000000"    # smaller

It starts four servers from the same dataset: ours (derived totals + versioned cache),
ours with the cache off, the naive baseline (bench/naive_app.py), and ours with gunicorn's
plain gthread worker. wrk runs each mix against the first three, and /healthz, the HTTP
stack's ceiling, against ours and the plain gthread one (the cost of rates_api.worker's
header deadline). It checks that ours and naive give the same answers, and prints ratios.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg2
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ratesctl import commands, demodata, localdb  # noqa: E402
from rates_core import migrate  # noqa: E402
from tests.support.net import free_port, wait_for_http  # noqa: E402
from tests.support.proc import stop_process  # noqa: E402

LUA = Path(__file__).with_name("wrk_report.lua")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prices", type=int, default=10_000_000)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--duration", type=int, default=10, help="seconds of load per mix for our servers")
    p.add_argument("--naive-duration", type=int, default=20, help="seconds per mix for the naive baseline")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--queries", type=int, default=2000, help="distinct queries per mix")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of every server")
    p.add_argument("--fresh", action="store_true", help="regenerate the cached dataset")
    return p.parse_args()


def dataset(args):
    """A server whose 'rates' database holds the demo dataset of this size (cached)."""
    pgdata = REPO / ".local" / "bench" / f"pg-{args.prices}-{args.days}"
    if args.fresh and pgdata.exists():
        shutil.rmtree(pgdata)
    server = localdb.start(pgdata, settings={"max_parallel_workers_per_gather": "2"})
    dsn = localdb.ensure_database(server, "rates")
    migrate.apply(dsn)
    if commands._is_empty(dsn):
        commands.load_demo_data(dsn, demodata.Spec(prices=args.prices, days=args.days))
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        conn.cursor().execute("VACUUM ANALYZE")
        conn.close()
    return server, dsn


def query_pools(dsn, args):
    """Distinct request paths per mix, drawn reproducibly from the data."""
    rng = random.Random(1)
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT orig_code, dest_code FROM lane_totals ORDER BY 1, 2")
        lanes = cur.fetchall()
        cur.execute("SELECT slug FROM regions ORDER BY 1")
        regions = [r for (r,) in cur.fetchall()]
        cur.execute("SELECT code FROM ports ORDER BY 1")
        ports = [p for (p,) in cur.fetchall()]
        cur.execute("SELECT min(day), max(day) FROM lane_totals")
        first, last = cur.fetchone()
    conn.close()

    def path(origin, destination, days):
        start = first + timedelta(days=rng.randint(0, max(0, (last - first).days - days + 1)))
        end = start + timedelta(days=days - 1)
        return f"/rates?date_from={start}&date_to={end}&origin={origin}&destination={destination}"

    n = args.queries
    pools = {
        "port->port 31d": [path(*rng.choice(lanes), 31) for _ in range(n)],
        "region->region 31d": [path(rng.choice(regions), rng.choice(regions), 31) for _ in range(n)],
        "region->region 365d": [path(rng.choice(regions), rng.choice(regions), min(365, args.days))
                                for _ in range(n)],
        "port->region 31d": [path(rng.choice(ports), rng.choice(regions), 31) for _ in range(n)],
    }
    weights = {"port->port 31d": 5, "region->region 31d": 3, "region->region 365d": 1, "port->region 31d": 1}
    mixed = [rng.choice(pools[name]) for name in rng.choices(list(weights), list(weights.values()), k=n)]
    del pools["port->region 31d"]
    pools["mixed"] = mixed
    return pools


def start_server(app, dsn, args, extra_env, log_dir, processes):
    """Start one server; it is added to ``processes`` at once, so it is stopped even if it never answers."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "HOST": "127.0.0.1", "PORT": str(port),
           "WEB_CONCURRENCY": str(args.workers), "LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
           "GUNICORN_TIMEOUT": "300", **extra_env}
    if app:  # the baseline gets the same worker model, without our lifecycle hooks
        argv = [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", "4", "-w", str(args.workers),
                "-b", f"127.0.0.1:{port}", "--timeout", "300", app]
    else:
        argv = commands.gunicorn_argv()
    with open(Path(log_dir) / f"server-{port}.log", "w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=REPO)
    processes.append(process)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + ("/rates" if app else "/healthz"), status=400 if app else 200, process=process)
    return process, base


def run_wrk(base, paths, duration, connections, tmp):
    paths_file = Path(tmp) / "paths.txt"
    paths_file.write_text("\n".join(paths) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "120s",
                          "-s", str(LUA), base], env={**os.environ, "WRK_PATHS_FILE": str(paths_file)},
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def same_answers(ours, naive, paths, samples=5):
    for path in random.Random(2).sample(paths, min(samples, len(paths))):
        a = requests.get(ours + path, timeout=300)
        b = requests.get(naive + path, timeout=300)
        if a.status_code != b.status_code or a.json() != b.json():
            raise AssertionError(f"ours and naive differ for {path}: {a.text[:200]} vs {b.text[:200]}")


def fmt(r):
    errors = r["socket_errors"] + r["bad_status"]
    return (f"{r['rps']:10.1f} {r['p50_us'] / 1000:9.1f} {r['p99_us'] / 1000:9.1f}"
            f"{'' if not errors else f'   errors={errors}'}")


def main():
    args = parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk (Debian's package)")
    print(f"dataset: {args.prices:,} prices over {args.days} days (cached under .local/bench)")
    server, dsn = dataset(args)
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            pools = query_pools(dsn, args)
            bases = []
            # The last: ours with gunicorn's own gthread worker instead of rates_api.worker,
            # whose deadline for a request's headers costs a little on every request.
            for app, env in ((None, {}), (None, {"RESPONSE_CACHE_SIZE": "0"}), ("bench.naive_app:create_app()", {}),
                             (None, {"GUNICORN_CMD_ARGS": "-k gthread"})):
                env["PROMETHEUS_MULTIPROC_DIR"] = f"{tmp}/m{len(bases)}"
                process, base = start_server(app, dsn, args, env, tmp, processes)
                bases.append(base)
            report(args, pools, *bases, tmp, dsn)
        finally:
            for process in processes:
                stop_process(process, 60)
            server.cleanup()


def wait_until_idle(dsn, timeout_s=300):
    """Wait for queries still running after wrk stopped: a naive request that wrk gave up on
    goes on in PostgreSQL for seconds, and would slow down whichever run comes next."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for _ in range(int(timeout_s / 0.2)):
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
                if cur.fetchone()[0] == 0:
                    return
                time.sleep(0.2)
    finally:
        conn.close()


def report(args, pools, ours, nocache, naive, plain, tmp, dsn):
    ceiling = run_wrk(ours, ["/healthz"], args.duration, args.connections, tmp)
    plain_ceiling = run_wrk(plain, ["/healthz"], args.duration, args.connections, tmp)
    print(f"\n{'mix':22} {'server':14} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    print(f"{'/healthz (ceiling)':22} {'ours':14} {fmt(ceiling)}")
    print(f"{'/healthz (ceiling)':22} {'plain gthread':14} {fmt(plain_ceiling)}")
    print(f"ours/plain gthread on /healthz: {ceiling['rps'] / plain_ceiling['rps']:.2f}")
    ratios = []
    for mix, paths in pools.items():
        same_answers(ours, naive, paths)
        rows = {
            "ours": run_wrk(ours, paths, args.duration, args.connections, tmp),
            "ours, no cache": run_wrk(nocache, paths, args.duration, args.connections, tmp),
            "naive": run_wrk(naive, paths, args.naive_duration, args.connections, tmp),
        }
        wait_until_idle(dsn)
        for name, result in rows.items():
            print(f"{mix:22} {name:14} {fmt(result)}")
        ratios.append((mix, rows["ours"]["rps"] / rows["naive"]["rps"],
                       rows["ours, no cache"]["rps"] / rows["naive"]["rps"],
                       rows["ours"]["rps"] / ceiling["rps"]))
    print(f"\n{'mix':22} {'ours/naive':>11} {'no-cache/naive':>15} {'ours/ceiling':>13}")
    for mix, vs_naive, nocache_vs_naive, vs_ceiling in ratios:
        print(f"{mix:22} {vs_naive:11.1f} {nocache_vs_naive:15.1f} {vs_ceiling:13.2f}")


if __name__ == "__main__":
    main()
