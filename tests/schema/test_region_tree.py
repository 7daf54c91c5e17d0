"""Migration 0013: the regions stay a tree, and every name given can be asked for."""

import threading

import psycopg2
import psycopg2.errors
import pytest

from rates_api.params import PLACE_MAX
from tests.support.db import lock_waiters
from tests.support.poll import wait_for
from tests.support.world import REGIONS


def parents(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute("SELECT slug, parent_slug FROM regions")
        return dict(cur.fetchall())


@pytest.mark.parametrize("slug, parent", [
    ("europe", "europe"),          # under itself
    ("europe", "scandinavia"),     # under its grandchild
    ("world", "china"),            # the root under a leaf
])
def test_a_region_cannot_be_put_under_itself_or_its_descendants(world, slug, parent):
    conn = world
    with pytest.raises(psycopg2.errors.CheckViolation, match=f"region {slug} cannot be put under {parent}"):
        with conn.cursor() as cur:
            cur.execute("UPDATE regions SET parent_slug = %s WHERE slug = %s", (parent, slug))
    assert parents(conn) == {slug: parent for slug, _name, parent in REGIONS}


def test_a_region_can_still_move_anywhere_else_and_be_added_under_any(world):
    conn = world
    with conn.cursor() as cur:
        cur.execute("UPDATE regions SET parent_slug = 'asia' WHERE slug = 'north_europe'")
        cur.execute("INSERT INTO regions VALUES ('east_china', 'East China', 'china')")
        cur.execute("UPDATE regions SET parent_slug = 'scandinavia' WHERE slug = 'east_china'")
    assert parents(conn)["north_europe"] == "asia" and parents(conn)["east_china"] == "scandinavia"
    with pytest.raises(psycopg2.errors.CheckViolation):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO regions VALUES ('loop', 'Loop', 'loop')")


def test_two_moves_that_each_close_half_a_cycle_do_not_both_commit(world, dsn):
    # Each alone is a move elsewhere; together they would make europe and asia each other's
    # parent, a cycle that neither transaction sees in what it reads.
    first, second = psycopg2.connect(dsn), psycopg2.connect(dsn, application_name="second-move")
    outcome = {}

    def move_asia_under_europe():
        try:
            with second.cursor() as cur:
                cur.execute("UPDATE regions SET parent_slug = 'europe' WHERE slug = 'asia'")
            second.commit()
            outcome["second"] = "committed"
        except psycopg2.Error as exc:
            second.rollback()
            outcome["second"] = exc

    try:
        with first.cursor() as cur:
            cur.execute("UPDATE regions SET parent_slug = 'asia' WHERE slug = 'europe'")
        mover = threading.Thread(target=move_asia_under_europe)
        mover.start()
        wait_for(lambda: lock_waiters(world, application_name="second-move") or not mover.is_alive(),
                 timeout=10, what="the second move to wait for the first, or to end")
        first.commit()
        mover.join(10)
    finally:
        first.close()
        second.close()

    assert isinstance(outcome["second"], psycopg2.errors.CheckViolation), outcome
    assert parents(world)["europe"] == "asia" and parents(world)["asia"] == "world"


@pytest.mark.parametrize("table, name", [
    ("regions", "r" * (PLACE_MAX + 1)),
    ("regions", "new\tregion"),
    ("regions", "new\x85region"),  # a C1 control: NEL
    ("regions", ""),
    ("ports", "P" * (PLACE_MAX + 1)),
    ("ports", "AB\nCD"),
])
def test_a_name_the_api_would_refuse_cannot_be_given(world, table, name):
    conn = world
    with pytest.raises(psycopg2.errors.CheckViolation):
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (%s, 'Name', 'europe')", (name,))


def test_the_longest_name_the_api_takes_can_be_given(world):
    with world.cursor() as cur:
        cur.execute("INSERT INTO regions VALUES (%s, 'Long', 'europe')", ("r" * PLACE_MAX,))
        cur.execute("INSERT INTO ports VALUES (%s, 'Long', 'europe')", ("é" * PLACE_MAX,))
