"""The derived totals stay exactly equal to a recomputation from prices after any mix
of writes: INSERT, COPY, UPDATE, DELETE, TRUNCATE and ports moving between regions."""

import io

import psycopg2.errors

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.world import PORTS, REGIONS

CODES = [code for code, _n, _p in PORTS]
SLUGS = [slug for slug, _n, _p in REGIONS]
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]

price_row = st.tuples(st.sampled_from(CODES), st.sampled_from(CODES), st.sampled_from(DAYS),
                      st.integers(1, 5000))
write = st.one_of(
    st.tuples(st.just("insert"), st.lists(price_row, min_size=1, max_size=8)),
    st.tuples(st.just("copy"), st.lists(price_row, min_size=1, max_size=8)),
    st.tuples(st.just("update"), st.sampled_from(CODES), st.integers(-50, 50)),
    st.tuples(st.just("delete"), st.sampled_from(CODES), st.sampled_from(DAYS)),
    st.tuples(st.just("move"), st.sampled_from(CODES), st.sampled_from(SLUGS)),
    st.tuples(st.just("truncate")),
    st.tuples(st.just("rollback"), st.lists(price_row, min_size=1, max_size=8)),
)


def apply(conn, op):
    kind = op[0]
    with conn.cursor() as cur:
        if kind == "insert":
            cur.executemany("INSERT INTO prices (orig_code, dest_code, day, price) VALUES (%s, %s, %s, %s)", op[1])
        elif kind == "copy":
            data = "".join(f"{o}\t{d}\t{day}\t{p}\n" for o, d, day, p in op[1])
            cur.copy_expert("COPY prices (orig_code, dest_code, day, price) FROM STDIN", io.StringIO(data))
        elif kind == "update":
            cur.execute("UPDATE prices SET price = greatest(1, price + %s) WHERE orig_code = %s", (op[2], op[1]))
        elif kind == "delete":
            cur.execute("DELETE FROM prices WHERE dest_code = %s AND day = %s", (op[1], op[2]))
        elif kind == "move":
            cur.execute("UPDATE ports SET parent_slug = %s WHERE code = %s", (op[2], op[1]))
        elif kind == "truncate":
            cur.execute("TRUNCATE prices")


def recomputed_equal_stored(cur) -> bool:
    cur.execute("""
        SELECT
          (SELECT count(*) FROM (
              (SELECT orig_code, dest_code, day, sum(price)::bigint, count(*)::int FROM prices GROUP BY 1, 2, 3
               EXCEPT ALL SELECT orig_code, dest_code, day, price_sum, price_count FROM lane_totals)
              UNION ALL
              (SELECT orig_code, dest_code, day, price_sum, price_count FROM lane_totals
               EXCEPT ALL SELECT orig_code, dest_code, day, sum(price)::bigint, count(*)::int FROM prices GROUP BY 1, 2, 3)
          ) lane_diff),
          (SELECT count(*) FROM (
              (SELECT po.parent_slug, pd.parent_slug, p.day, sum(p.price)::bigint, count(*)::int
               FROM prices p JOIN ports po ON po.code = p.orig_code JOIN ports pd ON pd.code = p.dest_code
               GROUP BY 1, 2, 3
               EXCEPT ALL SELECT orig_region, dest_region, day, price_sum, price_count FROM region_totals)
              UNION ALL
              (SELECT orig_region, dest_region, day, price_sum, price_count FROM region_totals
               EXCEPT ALL SELECT po.parent_slug, pd.parent_slug, p.day, sum(p.price)::bigint, count(*)::int
               FROM prices p JOIN ports po ON po.code = p.orig_code JOIN ports pd ON pd.code = p.dest_code
               GROUP BY 1, 2, 3)
          ) region_diff)
    """)
    return cur.fetchone() == (0, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(write, min_size=1, max_size=6))
# Ports that appear only as a destination, or only as an origin, moving region.
@example(writes=[("insert", [("CNSHA", "NLRTM", DAYS[0], 100)]), ("move", "NLRTM", "asia")])
@example(writes=[("insert", [("CNSHA", "NLRTM", DAYS[0], 100)]), ("move", "CNSHA", "scandinavia")])
def test_totals_equal_a_recomputation_after_any_writes(world, writes):
    world.autocommit = False
    try:
        with world.cursor() as cur:
            cur.execute("TRUNCATE prices")
            cur.execute("UPDATE ports p SET parent_slug = w.parent FROM (VALUES %s) AS w(code, parent) "
                        "WHERE p.code = w.code" % ",".join(f"('{c}', '{r}')" for c, _n, r in PORTS))
        world.commit()
        for op in writes:
            apply(world, op if op[0] != "rollback" else ("insert", op[1]))
            if op[0] == "rollback":
                world.rollback()
            else:
                world.commit()
        with world.cursor() as cur:
            assert recomputed_equal_stored(cur)
            cur.execute("SELECT count(*) FROM lane_totals WHERE price_count <= 0")
            assert cur.fetchone()[0] == 0
    finally:
        world.rollback()
        world.autocommit = True


def test_every_write_bumps_the_data_version(world):
    def version():
        with world.cursor() as cur:
            cur.execute("SELECT version FROM data_version")
            return cur.fetchone()[0]

    seen = [version()]
    for op in [("insert", [("CNSHA", "NLRTM", DAYS[0], 10)]), ("update", "CNSHA", 1),
               ("delete", "NLRTM", DAYS[0]), ("move", "DEHAM", "asia"), ("truncate",)]:
        apply(world, op)
        seen.append(version())
    with world.cursor() as cur:
        cur.execute("UPDATE regions SET name = 'Asia Pacific' WHERE slug = 'asia'")
    seen.append(version())
    assert seen == sorted(set(seen)), seen


def test_concurrent_writers_in_opposite_orders_do_not_deadlock(world, dsn):
    """Two transactions touch the same lanes in opposite orders; both must commit."""
    import threading

    import psycopg2

    from tests.support.db import lock_waiters
    from tests.support.poll import wait_for

    first, second = psycopg2.connect(dsn), psycopg2.connect(dsn)
    insert = "INSERT INTO prices (orig_code, dest_code, day, price) VALUES (%s, %s, '2024-01-01', %s)"
    errors = []

    def second_writer():
        try:
            with second.cursor() as cur:
                cur.execute(insert, ("CNSHA", "DEHAM", 20))
                cur.execute(insert, ("NOOSL", "NLRTM", 20))
            second.commit()
        except psycopg2.Error as exc:  # a deadlock would land here or in the main thread
            errors.append(exc)

    try:
        with first.cursor() as cur:
            cur.execute(insert, ("NOOSL", "NLRTM", 10))
            thread = threading.Thread(target=second_writer)
            thread.start()
            # Only with the second writer blocked behind the first do the orders conflict.
            wait_for(lambda: lock_waiters(world, pid=second.get_backend_pid()), timeout=30,
                     interval=0.02, what="the second writer to wait for a lock")
            cur.execute(insert, ("CNSHA", "DEHAM", 10))
        first.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        first.close()
        second.close()
    assert errors == []
    with world.cursor() as cur:
        cur.execute("SELECT orig_code, dest_code, price_sum, price_count FROM lane_totals ORDER BY 1")
        assert cur.fetchall() == [("CNSHA", "DEHAM", 30, 2), ("NOOSL", "NLRTM", 30, 2)]


def test_truncate_and_reload_in_one_transaction_does_not_block_readers(world, dsn):
    """Readers keep the committed totals while an administrator reloads prices."""
    import psycopg2

    from tests.support.world import insert_prices

    insert_prices(world, [("CNSHA", "NLRTM", DAYS[0], 10)] * 3)
    admin = psycopg2.connect(dsn)
    reader = psycopg2.connect(dsn, options="-c statement_timeout=3000")
    reader.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("TRUNCATE prices")
            cur.execute("INSERT INTO prices (orig_code, dest_code, day, price) VALUES ('CNSHA', 'NLRTM', %s, 40)",
                        (DAYS[0],))
        with reader.cursor() as cur:  # would time out behind an ACCESS EXCLUSIVE lock
            cur.execute("SELECT price_sum, price_count FROM lane_totals")
            assert cur.fetchall() == [(30, 3)]
            cur.execute("SELECT sum(price_sum) FROM region_totals")
            assert cur.fetchone() == (30,)
        admin.commit()
        with reader.cursor() as cur:
            cur.execute("SELECT price_sum, price_count FROM lane_totals")
            assert cur.fetchall() == [(40, 1)]
    finally:
        admin.close()
        reader.close()


def test_a_region_query_can_be_answered_from_the_index_alone(world):
    """region_totals' key carries the sums, so a region query needs no heap page (0009)."""
    from rates_api import queries
    from tests.support.world import insert_prices

    insert_prices(world, [("CNSHA", "NLRTM", day, 100) for day in DAYS] * 3)
    with world.cursor() as cur:
        cur.execute("VACUUM region_totals")  # marks the pages all-visible, as autovacuum would
        cur.execute("SET enable_seqscan = off")
        cur.execute("SET enable_bitmapscan = off")
        cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + queries.DAILY_BY_REGION,
                    dict(date_from=DAYS[0], date_to=DAYS[-1], min_prices=3, origins=["asia", "china"],
                         destinations=["europe", "north_europe"]))
        plan = "\n".join(line for (line,) in cur.fetchall())
    assert "Index Only Scan using region_totals_pkey" in plan and "Heap Fetches: 0" in plan, plan


def test_adding_a_port_probes_lane_totals_by_index_not_by_scanning_it(world):
    """A port without prices (the runbook's usual edit) is checked for lanes through the
    primary key: at years of history a scan took seconds under the totals' lock (0018)."""
    with world.cursor() as cur:
        # Lanes of codes that ports does not know: enough rows that a scan would cost.
        cur.execute("""INSERT INTO lane_totals (orig_code, dest_code, day, price_sum, price_count)
                       SELECT 'X' || (i % 400), 'Y' || (i / 400), DATE '2024-01-01', 100, 1
                       FROM generate_series(1, 200000) i""")
        cur.execute("ANALYZE lane_totals")
        cur.execute("SELECT count(*) FROM region_totals")
        regions_before = cur.fetchone()
        scans = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'lane_totals'"
        cur.execute("BEGIN")  # the counts are the transaction's
        cur.execute(scans)
        before = cur.fetchone()
        cur.execute("INSERT INTO ports VALUES ('ZZNEW', 'New', %s)", (SLUGS[-1],))
        cur.execute(scans)
        after = cur.fetchone()
        cur.execute("COMMIT")
        assert after[0] == before[0] and after[1] > before[1]  # probed by the key, never scanned
        cur.execute("SELECT count(*) FROM region_totals")
        assert cur.fetchone() == regions_before
        # A port that is only ever a lane's destination: found by the second probe.
        cur.execute("INSERT INTO ports VALUES ('X3', 'Three', %s)", (SLUGS[0],))
        cur.execute("INSERT INTO ports VALUES ('Y7', 'Seven', %s)", (SLUGS[-1],))
        cur.execute("SELECT price_sum, price_count FROM region_totals WHERE (orig_region, dest_region) = (%s, %s)",
                    (SLUGS[0], SLUGS[-1]))
        assert cur.fetchall() == [(100, 1)]  # the lane X3 -> Y7
        assert recomputed_equal_stored(cur) is False  # lane_totals was written directly, without prices


REGION_WRITES = """SELECT n_tup_ins, n_tup_upd, n_tup_del,
                          (SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'lane_totals')
                   FROM pg_stat_xact_user_tables WHERE relname = 'region_totals'"""


def region_rows(cur) -> dict:
    """(orig_region, dest_region, day): ((price_sum, price_count), xmin) of every region total."""
    cur.execute("SELECT orig_region, dest_region, day, price_sum, price_count, xmin::text FROM region_totals")
    return {(o, d, day): ((s, n), xmin) for o, d, day, s, n, xmin in cur.fetchall()}


def test_a_port_move_writes_only_the_region_totals_that_change(world):
    """Only totals of the regions a port leaves and joins are computed again, and of those
    only the ones whose value changed are written (0018); a rebuild wrote every row."""
    from tests.support.world import insert_prices

    codes = [code for code, _n, _p in PORTS]
    insert_prices(world, [(o, d, DAYS[0], 10 * i + j) for i, o in enumerate(codes) for j, d in enumerate(codes)])
    # A day without DEHAM: the totals of its regions stay as they are.
    insert_prices(world, [(o, d, DAYS[1], 7) for o in codes for d in codes if "DEHAM" not in (o, d)])
    # A day where DEHAM is north_europe's only port: those totals go, and asia's come.
    insert_prices(world, [("DEHAM", "CNSHA", DAYS[2], 5), ("FRLEH", "DEHAM", DAYS[2], 6)])
    with world.cursor() as cur:
        before = region_rows(cur)
        cur.execute("BEGIN")  # the counts are the transaction's
        cur.execute(REGION_WRITES)
        writes_before = cur.fetchone()
        cur.execute("UPDATE ports SET parent_slug = 'asia' WHERE code = 'DEHAM'")
        cur.execute(REGION_WRITES)
        writes = tuple(a - b for a, b in zip(cur.fetchone(), writes_before))
        after = region_rows(cur)
        assert recomputed_equal_stored(cur)
        cur.execute("COMMIT")
    inserted = after.keys() - before.keys()
    deleted = before.keys() - after.keys()
    updated = {k for k in before.keys() & after.keys() if before[k][0] != after[k][0]}
    assert (len(inserted), len(deleted)) == (2, 2)
    assert writes == (len(inserted), len(updated), len(deleted), 0)  # and lane_totals read by its key only
    # Every other row is the row it was, not a copy with the same values.
    kept = {k for k in before.keys() & after.keys() if k not in updated}
    assert kept and all(before[k][1] == after[k][1] for k in kept)
    assert any(set(k[:2]) & {"north_europe", "asia"} for k in kept)  # of the two regions, too



@pytest.mark.parametrize("statement", [
    # The prices trigger runs first: it deletes the lane CNSHA -> DEHAM, and takes its
    # price out of (china, asia), where DEHAM is now, leaving a row of count -1 there.
    "WITH m AS (UPDATE ports SET parent_slug = 'asia' WHERE code = 'DEHAM' RETURNING 1) "
    "DELETE FROM prices WHERE orig_code = 'CNSHA'",
    # The ports trigger runs first.
    "WITH d AS (DELETE FROM prices WHERE orig_code = 'CNSHA' RETURNING 1) "
    "UPDATE ports SET parent_slug = 'asia' WHERE code = 'DEHAM'",
])
def test_a_move_in_one_statement_with_a_delete_of_its_prices_leaves_no_stale_total(world, statement):
    """The row (china, north_europe) of the deleted lane has no lane left to be found by:
    the move finds the rows to delete in region_totals itself (0018)."""
    from tests.support.world import insert_prices

    insert_prices(world, [("CNSHA", "DEHAM", DAYS[0], 10), ("NOOSL", "DEHAM", DAYS[1], 20)])
    with world.cursor() as cur:
        cur.execute(statement)
        assert recomputed_equal_stored(cur)
        cur.execute("SELECT orig_region, dest_region, price_sum, price_count FROM region_totals")
        assert cur.fetchall() == [("scandinavia", "asia", 20, 1)]


def test_a_port_with_prices_keeps_its_code_and_the_hint_says_how_to_move_them(world):
    # prices name their ports by code: recoded, the port's history would count nowhere (0020).
    with world.cursor() as cur:
        cur.execute("INSERT INTO prices (orig_code, dest_code, day, price) VALUES ('CNSHA', 'NOOSL', '2016-01-01', 10),"
                    " ('CNNGB', 'NOOSL', '2016-01-01', 20), ('HKHKG', 'NOOSL', '2016-01-01', 30)")
        with pytest.raises(psycopg2.errors.RestrictViolation, match="port NOOSL has prices") as refused:
            cur.execute("UPDATE ports SET code = 'NOOS2' WHERE code = 'NOOSL'")
        assert "move its prices" in refused.value.diag.message_hint
        cur.execute("UPDATE ports SET code = 'FRLE2' WHERE code = 'FRLEH'")  # no prices: as before
        # The hint's way, each step a statement of its own: nothing is lost on the way.
        cur.execute("INSERT INTO ports (code, name, parent_slug) VALUES ('NOOS2', 'Oslo', 'scandinavia')")
        cur.execute("UPDATE prices SET dest_code = 'NOOS2' WHERE dest_code = 'NOOSL'")
        cur.execute("DELETE FROM ports WHERE code = 'NOOSL'")
        cur.execute("SELECT sum(price_sum), sum(price_count) FROM lane_totals WHERE dest_code = 'NOOS2'")
        assert cur.fetchall() == [(60, 3)]
        assert recomputed_equal_stored(cur)
