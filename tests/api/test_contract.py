"""The API's answers conform to its own OpenAPI document (GET /openapi.json): every
status, header, content type and body that schemathesis' default checks look at."""

import re
from datetime import date, timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from rates_api import create_app
from rates_api.settings import Settings
from tests.support.world import PORTS, REGIONS, insert_prices

# Loaded at collection from an app without a database: the document needs none, and
# schemathesis.pytest.from_fixture, which would load it from each test's own app, sets
# pytest's Node._nodeid, which pytest 9.2 no longer has. Requests go to the `api` fixture.
schema = schemathesis.openapi.from_wsgi(
    "/openapi.json", create_app(Settings.from_env({"DATABASE_URL": "postgresql:///unused"})))

PLACES = [code for code, _, _ in PORTS] + [slug for slug, _, _ in REGIONS]
UNKNOWN = ["XXXXX", "atlantis"]
FIRST_DAY = date(2024, 1, 1)  # the document's example date_from, so its example query finds prices
SETTINGS = settings(max_examples=40, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_the_document_is_valid_openapi():
    schema.validate()


def test_the_rates_description_gives_the_names_lengths_as_the_schema_does():
    # It said "a 5-character port code", and the schema (and the README) take 1 to 128
    # characters: a client validating by the words refused codes the API serves.
    from rates_api.openapi import document

    rates = document("test")["paths"]["/rates"]["get"]
    lengths = {(p["schema"]["minLength"], p["schema"]["maxLength"]) for p in rates["parameters"]
               if p["name"] in ("origin", "destination", "orig_code", "dest_code")}
    [(shortest, longest)] = lengths
    words = " ".join([rates["summary"], rates["description"], *(p["description"] for p in rates["parameters"])])
    # Any length the words give is one of the schema's bounds.
    assert set(map(int, re.findall(r"(\d+)[- ]characters?", words))) <= {shortest, longest}, words
    assert "-character" not in words, words  # a fixed length, whichever
    assert f"{shortest} to {longest} characters" in rates["description"], rates["description"]


@pytest.fixture
def api(world, client):
    """The app on this test's database: ports, regions and a week of prices, 0 to 3 a day
    per pair, so that days with and without an average both occur."""
    pairs = [(o, d) for o, *_ in PORTS for d, *_ in PORTS if o != d]
    insert_prices(world, [(o, d, (FIRST_DAY + timedelta(day)).isoformat(), 100 * i + n)
                          for i, (o, d) in enumerate(pairs) for day in range(7)
                          for n in range((i + day) % 4)])
    return client.application


@schema.parametrize()
@SETTINGS
def test_every_operation_conforms(case, api):
    # /rates has rules between parameters that OpenAPI 3.0 cannot state (date_from after
    # date_to, a range over MAX_RANGE_DAYS, neither origin nor orig_code): requests valid
    # parameter by parameter get the declared 400. test_well_formed_rates_queries_get_200_or_404
    # checks that well-formed queries are accepted.
    excluded = [positive_data_acceptance] if case.operation.path == "/rates" else []
    case.call_and_validate(app=api, excluded_checks=excluded)


@st.composite
def rates_queries(draw):
    """Well-formed /rates queries, under either name, on the `api` fixture's places and days
    or on places it does not have."""
    date_from = FIRST_DAY + timedelta(draw(st.integers(-3, 9)))
    date_to = date_from + timedelta(draw(st.integers(0, 9)))
    places = st.sampled_from(PLACES + UNKNOWN)
    return {"date_from": date_from.isoformat(), "date_to": date_to.isoformat(),
            draw(st.sampled_from(["origin", "orig_code"])): draw(places),
            draw(st.sampled_from(["destination", "dest_code"])): draw(places)}


@SETTINGS
@given(query=rates_queries())
@example(query={"date_from": "2024-01-01", "date_to": "2024-01-02", "origin": "CNSHA", "destination": "atlantis"})
def test_well_formed_rates_queries_get_200_or_404(api, query):
    response = schema["/rates"]["GET"].Case(query=query).call_and_validate(app=api)
    assert response.status_code == (404 if set(UNKNOWN) & set(query.values()) else 200)


@pytest.mark.parametrize("path", ["/rates", "/readyz"])
def test_an_unmigrated_database_gets_the_declared_503(empty_dsn, make_client, path):
    app = make_client(Settings.from_env({"DATABASE_URL": empty_dsn})).application
    operation = schema[path]["GET"]
    example = {p["name"]: p["example"] for p in operation.definition.raw.get("parameters", []) if "example" in p}
    # The 503 is what this database must get; not_a_server_error would refuse any 5xx.
    response = operation.Case(query=example).call_and_validate(
        app=app, excluded_checks=[not_a_server_error])
    assert response.status_code == 503
