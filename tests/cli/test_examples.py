"""The example requests of `up`'s banner come from the data the database holds."""

import pytest

from ratesctl import examples
from tests.support.world import insert_prices


def test_a_database_without_prices_has_no_examples(dsn, world):
    """Ports but no prices: `up` loads no demo data into it, and the banner says how a
    request reads instead."""
    assert examples.requests(dsn) == []


def test_the_lane_with_the_most_averages_over_its_days_within_a_week(dsn, world):
    insert_prices(world, [
        *[("XXXXX", "NLRTM", "2024-03-02", 100)] * 30,  # no such port: it would answer unknown_location
        *[("HKHKG", "DEHAM", "2024-03-01", 100)] * 10,  # the most prices, on one day
        *[("CNSHA", "NLRTM", "2024-03-01", 100)] * 2,  # too few for an average
        *[("CNSHA", "NLRTM", "2024-03-02", 100)] * 3,
        *[("CNSHA", "NLRTM", "2024-03-05", 100)] * 3,
        *[("CNSHA", "NLRTM", "2024-03-09", 100)] * 3,  # past the week from 03-02
    ])
    days = "date_from=2024-03-02&date_to=2024-03-05"
    assert examples.requests(dsn) == [f"{days}&origin=CNSHA&destination=NLRTM",
                                      f"{days}&origin=asia&destination=europe"]


@pytest.mark.parametrize("orig, dest, regions", [
    ("CNSHA", "NLRTM", ("asia", "europe")),  # not the world above both
    ("FRLEH", "DEHAM", ("europe", "north_europe")),  # nothing above Le Havre is not above Hamburg
    ("CNSHA", "CNNGB", ("china", "china")),
])
def test_the_regions_are_the_highest_above_one_port_not_above_the_other(dsn, world, orig, dest, regions):
    insert_prices(world, [(orig, dest, "2024-03-02", 100)] * 3)
    origin, destination = regions
    assert examples.requests(dsn)[1] == f"date_from=2024-03-02&date_to=2024-03-02&origin={origin}&destination={destination}"


def test_a_lane_with_no_average_anywhere_shows_its_first_day_with_prices(dsn, world):
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-04", 100), ("CNSHA", "NLRTM", "2024-03-06", 100)])
    assert examples.requests(dsn)[0] == "date_from=2024-03-04&date_to=2024-03-06&origin=CNSHA&destination=NLRTM"


def test_lanes_with_as_many_days_with_an_average_are_told_apart_by_their_prices(dsn, world):
    insert_prices(world, [*[("CNSHA", "NLRTM", "2024-03-02", 100)] * 3,
                          *[("HKHKG", "DEHAM", "2024-03-02", 100)] * 5])  # CNSHA first by name, HKHKG by prices
    assert examples.requests(dsn)[0].endswith("&origin=HKHKG&destination=DEHAM")


def test_a_lane_to_a_code_with_no_port_is_not_an_example(dsn, world):
    insert_prices(world, [*[("CNSHA", "XXXXX", "2024-03-02", 100)] * 30, *[("HKHKG", "DEHAM", "2024-03-02", 100)] * 3])
    assert examples.requests(dsn)[0].endswith("&origin=HKHKG&destination=DEHAM")
