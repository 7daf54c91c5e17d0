"""Whatever the query string, /rates answers with a JSON body and never a 5xx."""

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.world import insert_prices

NAMES = ["date_from", "date_to", "origin", "destination", "orig_code", "dest_code"]
PLAUSIBLE = ["2024-03-01", "2024-03-31", "2023-02-29", "9999-12-31", "0001-01-01", "0000-00-00",
             "CNSHA", "NLRTM", "china", "world", "europe", "XXXXX", "", "-1", "1e309", "' OR 1=1 --"]

value = st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=80), st.binary(max_size=40).map(
    lambda b: b.decode("latin-1")))
pairs = st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), st.text(max_size=12)), value), max_size=8)
raw = st.binary(max_size=200)


def query_string(items) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=pairs)
def test_structured_query_strings_never_5xx(world_client, items):
    response = world_client.get("/rates?" + query_string(items))
    assert response.status_code < 500, (items, response.data)
    assert response.is_json


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=raw)
def test_raw_bytes_in_the_query_string_never_5xx(world_client, data):
    # WSGI carries the query string as latin-1 text; this puts any byte sequence there.
    response = world_client.get("/rates", environ_overrides={"QUERY_STRING": data.decode("latin-1")})
    assert response.status_code < 500, (data, response.data)
    assert response.is_json


def test_well_formed_queries_answer_200(world_client):
    response = world_client.get("/rates?date_from=2024-03-01&date_to=2024-03-02&origin=china&destination=europe")
    assert response.status_code == 200


@pytest.fixture
def world_client(world, client):
    insert_prices(world, [("CNSHA", "NLRTM", "2024-03-01", p) for p in (1, 2, 3)])
    return client
