"""Bad input: a JSON error with a 4xx status, never a 500."""

import time
from dataclasses import replace

import psycopg2
import pytest
from structlog.testing import capture_logs

from rates_api.settings import Settings
from tests.support.aws import without_credentials
from tests.support.poll import wait_for

GOOD = dict(date_from="2024-03-01", date_to="2024-03-02", origin="CNSHA", destination="NLRTM")


def without(name):
    return {k: v for k, v in GOOD.items() if k != name}


@pytest.mark.parametrize("params, fragment", [
    (without("date_from"), "date_from"),
    (without("origin"), "origin"),
    (without("destination"), "destination"),
    ({**GOOD, "date_from": "2024-3-1"}, "YYYY-MM-DD"),
    ({**GOOD, "date_from": "20240301"}, "YYYY-MM-DD"),
    ({**GOOD, "date_from": "２０２４-０３-０１"}, "YYYY-MM-DD"),  # full-width digits: a form, not a calendar, error
    ({**GOOD, "date_to": "2024-02-30"}, "not a valid date"),
    ({**GOOD, "date_to": "2023-02-29"}, "not a valid date"),
    ({**GOOD, "date_from": "2024-03-05"}, "after"),
    ({**GOOD, "origin": "CN\tSHA"}, "port code or a region slug"),
    ({**GOOD, "origin": "CN\x85SHA"}, "port code or a region slug"),  # a C1 control: NEL
    ({**GOOD, "origin": ""}, "origin"),
    ({**GOOD, "destination": "x" * 129}, "port code or a region slug"),
    ({**GOOD, "orig_code": "CNNGB"}, "parameters 'origin' and 'orig_code' are both given, with different values"),
    # Named as the client sent them: an older client knows only the aliases.
    ({**without("origin"), "orig_code": ["CNSHA", "CNNGB"]}, "parameter 'orig_code' is given more than once"),
    (without("destination"), "missing parameter 'destination' (or 'dest_code')"),
])
def test_malformed_parameters_are_400(world, client, params, fragment):
    response = client.get("/rates", query_string=params)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]["message"]
    assert response.get_json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("encoded", ["%FF", "CN%ED%A0%80", "%C3"])  # no UTF-8; a surrogate; cut short
def test_percent_encoded_bytes_that_are_no_utf8_are_400(world, client, encoded):
    query = "&".join(f"{k}={v}" for k, v in {**GOOD, "origin": encoded}.items())
    response = client.get(f"/rates?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"] == {"code": "invalid_parameter",
                                            "message": "the query string is not valid UTF-8"}
    # While a percent-encoded UTF-8 name is read as that name.
    response = client.get("/rates?" + query.replace(encoded, "%C3%A9"))
    assert response.status_code == 404 and "'é'" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("repeated", [dict(origin=["CNSHA", "CNSHA"]), dict(orig_code="CNSHA")])
def test_a_parameter_repeated_with_the_same_value_is_not_a_conflict(world, client, repeated):
    response = client.get("/rates", query_string={**GOOD, **repeated})
    assert response.status_code == 200, response.get_json()


def test_range_longer_than_the_maximum_is_400(world, client):
    ok = client.get("/rates", query_string={**GOOD, "date_from": "2024-01-01", "date_to": "2024-12-31"})
    assert ok.status_code == 200 and len(ok.get_json()) == 366
    too_long = client.get("/rates", query_string={**GOOD, "date_from": "2024-01-01", "date_to": "2025-01-01"})
    assert too_long.status_code == 400
    assert too_long.get_json()["error"]["code"] == "range_too_long"


def test_unknown_origin_or_destination_is_404_naming_it(world, client):
    response = client.get("/rates", query_string={**GOOD, "origin": "XXXXX"})
    assert response.status_code == 404
    message = response.get_json()["error"]["message"]
    assert "origin 'XXXXX'" in message and "destination" not in message
    response = client.get("/rates", query_string={**GOOD, "destination": "atlantis"})
    assert response.status_code == 404
    assert "destination 'atlantis'" in response.get_json()["error"]["message"]


def test_unknown_route_and_method_are_json(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"
    response = client.post("/rates")
    assert response.status_code == 405 and "error" in response.get_json()
    assert "GET" in response.headers["Allow"]


def test_database_down_is_503_not_500(settings, make_client):
    client = make_client(replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none",
                                 db_connect_timeout_s=1))
    with capture_logs() as logged:
        response = client.get("/rates", query_string=GOOD)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "unavailable"
    assert [line["log_level"] for line in logged if line["event"] == "request"] == ["warning"]
    assert client.get("/readyz").status_code == 503
    with capture_logs() as logged:
        assert client.get("/healthz").status_code == 200  # every few seconds: DEBUG, below the level
        assert client.get("/rates").status_code == 400  # the client's mistake: not a warning of ours
        assert client.get("/readyz").status_code == 503  # the database down: a warning
    assert [(line["path"], line["log_level"]) for line in logged if line["event"] == "request"] == [
        ("/rates", "info"), ("/readyz", "warning")]
    # What the RatesApiNotReady alert reads, when no /rates request reaches a pod any more.
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'rates_api_requests_total{method="GET",route="/readyz",status="503"} 2.0' in metrics


def test_after_a_failed_connect_the_api_answers_503_at_once_for_a_second_then_tries_again(settings, make_client):
    # The README promises a second of 503s at once after a failed attempt, and the 503s say
    # Retry-After: 1; a longer window would go on refusing requests long after the database
    # is back. The window is the pool's default, which the API's runtime relies on.
    client = make_client(replace(settings, database_url="postgresql://nobody@127.0.0.1:1/none",
                                 db_connect_timeout_s=1))
    started = time.monotonic()
    tried = client.get("/readyz").get_json()["error"]
    assert "Connection refused" in tried and "unreachable" not in tried
    held = client.get("/readyz")  # at once: within the window, the pool does not try
    assert held.status_code == 503
    if time.monotonic() - started < 0.9:  # not when a stalled machine let the window pass
        assert "the database was unreachable" in held.get_json()["error"]
    wait_for(lambda: "unreachable" not in client.get("/readyz").get_json()["error"], timeout=5,
             interval=0.05, what="the pool to try the database again about a second after it failed")


def test_without_an_iam_role_the_api_is_unready_and_says_why(aws_env, make_client):
    # A pod whose ServiceAccount has no IAM role gets no token: 503s that name the cause.
    settings = Settings.from_env({"DATABASE_URL": "postgresql://rates_api@127.0.0.1:1/rates?sslmode=require",
                                  "DATABASE_IAM_AUTH": "true", "DB_CONNECT_TIMEOUT_S": "1"})
    without_credentials(aws_env)
    client = make_client(settings)
    response = client.get("/readyz")
    assert response.status_code == 503 and "no RDS IAM token for rates_api@127.0.0.1" in response.get_json()["error"]
    response = client.get("/rates", query_string=GOOD)
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "unavailable"


def test_a_statement_timeout_is_503(world, settings, dsn, make_client):
    """A query held up past DB_STATEMENT_TIMEOUT_MS fails fast with a retryable 503."""
    client = make_client(replace(settings, db_statement_timeout_ms=200))
    blocker = psycopg2.connect(dsn)
    try:
        blocker.cursor().execute("LOCK TABLE data_version IN ACCESS EXCLUSIVE MODE")
        response = client.get("/rates", query_string=GOOD)
    finally:
        blocker.close()
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "unavailable"
    assert client.get("/rates", query_string=GOOD).status_code == 200
