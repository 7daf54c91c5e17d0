"""The demo dataset: deterministic, realistic in shape, exactly the size asked for."""

import psycopg2

from ratesctl import demodata

SPEC = demodata.Spec(prices=20_000, days=10, ports=120, seed=5)


def depth(regions):
    parent = {slug: p for slug, _n, p in regions}

    def level(slug):
        return 1 if parent[slug] is None else 1 + level(parent[slug])

    return max(level(slug) for slug in parent)


def test_region_tree_is_several_levels_deep_and_ports_are_unique():
    regions = demodata.regions()
    assert depth(regions) >= 4
    ports = demodata.ports(SPEC)
    assert len(ports) == SPEC.ports == len({code for code, _n, _p in ports})
    slugs = {slug for slug, _n, _p in regions}
    assert all(len(code) == 5 and home in slugs for code, _n, home in ports)


def test_same_spec_gives_the_same_rows_and_another_seed_does_not():
    def rows(spec):
        return list(demodata.price_rows(spec, demodata.lanes(spec, demodata.ports(spec))))

    first = rows(SPEC)
    assert len(first) == SPEC.prices
    assert first == rows(SPEC)
    assert first != rows(demodata.Spec(**{**SPEC.__dict__, "seed": 6}))
    days = {day for _o, _d, day, _p in first}
    assert len(days) == SPEC.days and all(p > 0 for *_x, p in first)


def test_load_copies_every_price_and_the_totals_follow(dsn):
    conn = psycopg2.connect(dsn)
    seen = []
    assert demodata.load(conn, SPEC, progress=seen.append, batch_rows=7_000) == SPEC.prices
    assert sum(seen) == SPEC.prices
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(price) FROM prices")
        count, total = cur.fetchone()
        cur.execute("SELECT sum(price_count), sum(price_sum) FROM region_totals")
        assert (count, total) == cur.fetchone() and count == SPEC.prices
    conn.close()


def test_demo_data_command_refuses_a_non_empty_database_unless_forced(dsn):
    from click.testing import CliRunner

    from ratesctl.cli import cli

    args = ["demo-data", "--prices", "3000", "--days", "3", "--ports", "30"]
    runner = CliRunner()
    assert runner.invoke(cli, args, env={"DATABASE_URL": dsn}).exit_code == 0
    refused = runner.invoke(cli, args, env={"DATABASE_URL": dsn})
    assert refused.exit_code == 2 and "--force" in refused.output  # a retry cannot help
    assert runner.invoke(cli, args + ["--force"], env={"DATABASE_URL": dsn}).exit_code == 0
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM prices), (SELECT count(*) FROM ports)")
        assert cur.fetchone() == (6000, 30)
    conn.close()


def test_every_day_of_the_readme_port_example_has_an_average():
    """README: `curl '…/rates?date_from=2024-01-01&date_to=2024-01-07&origin=CNSHA&destination=NLRTM'`."""
    from rates_api.queries import MIN_PRICES

    spec = demodata.Spec()
    counts = {}
    for orig, dest, day, _price in demodata.price_rows(spec, demodata.lanes(spec, demodata.ports(spec))):
        if day.isoformat() > "2024-01-07":
            break  # rows come in day order
        if (orig, dest) == ("CNSHA", "NLRTM"):
            counts[day.isoformat()] = counts.get(day.isoformat(), 0) + 1
    assert sorted(counts) == [f"2024-01-0{d}" for d in range(1, 8)]
    assert min(counts.values()) >= MIN_PRICES, counts


def test_days_past_the_last_date_are_a_usage_error_naming_the_last_start(dsn):
    """It failed midway through the COPY, exit 1 and 'this may pass on retry'."""
    from click.testing import CliRunner

    from ratesctl.cli import cli

    args = ["demo-data", "--prices", "30", "--ports", "30", "--days", "3"]
    runner = CliRunner()
    refused = runner.invoke(cli, args + ["--start", "9999-12-30"], env={"DATABASE_URL": dsn})
    assert refused.exit_code == 2, refused.output
    assert "the last start allowed is 9999-12-29" in refused.output and "retry" not in refused.output
    too_many = runner.invoke(cli, ["demo-data", "--days", "3652060"], env={"DATABASE_URL": dsn})
    assert too_many.exit_code == 2 and "more days than the calendar has" in too_many.output, too_many.output
    # The last start allowed loads, up to the last date.
    done = runner.invoke(cli, args + ["--start", "9999-12-29"], env={"DATABASE_URL": dsn})
    assert done.exit_code == 0, done.output
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT min(day)::text, max(day)::text, count(*) FROM prices")
        assert cur.fetchone() == ("9999-12-29", "9999-12-31", 30)
    conn.close()


def test_more_ports_than_it_can_name_is_a_usage_error():
    """Past 650,312 the loop that draws the codes never ended."""
    from click.testing import CliRunner

    from ratesctl.cli import cli

    refused = CliRunner().invoke(cli, ["demo-data", "--ports", str(demodata.MAX_PORTS + 1)], env={"DATABASE_URL": ""})
    assert refused.exit_code == 2, refused.output
    assert "--ports" in refused.output and f"2<=x<={demodata.MAX_PORTS}" in refused.output, refused.output
