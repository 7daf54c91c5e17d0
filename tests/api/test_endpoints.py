import re
from dataclasses import replace

from rates_api.settings import Settings
from tests.support.db import API_USER


def test_index_reports_service_and_version(client):
    assert client.get("/").get_json() == {"service": "rates-api", "version": "test-1", "message": "Hello world!"}


def test_health_and_readiness(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").get_json() == {"status": "ok"}


def test_readiness_fails_once_draining(client):
    client.application.extensions["rates_api"].draining.set()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["status"] == "draining"
    assert client.get("/healthz").status_code == 200


def test_metrics_count_requests_by_route_and_status(world, client):
    client.get("/rates", query_string=dict(date_from="2024-01-01", date_to="2024-01-02",
                                           origin="CNSHA", destination="NLRTM"))
    client.get("/rates", query_string=dict(date_from="bad"))
    client.get("/missing")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rates_api_requests_total{method="GET",route="/rates",status="200"} 1.0' in text
    assert 'rates_api_requests_total{method="GET",route="/rates",status="400"} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "rates_api_request_duration_seconds_bucket" in text
    assert "rates_api_db_pool_size 4.0" in text
    assert "rates_api_db_pool_in_use 0.0" in text
    assert "rates_api_request_threads 4.0" in text  # GUNICORN_THREADS' default
    assert "rates_api_requests_in_progress 1.0" in text  # the scrape itself, on a thread of the API's
    assert 'rates_api_build_info{version="test-1"} 1.0' in text


def test_metrics_count_the_connections_lent_out_while_they_are(settings, make_client):
    # The pool-saturation alert reads rates_api_db_pool_in_use: a gauge stuck at 0 would never fire.
    client = make_client(replace(settings, db_pool_size=2))
    rt = client.application.extensions["rates_api"]
    with client.application.app_context(), rt.connection():
        held = client.get("/metrics").get_data(as_text=True)
    assert "rates_api_db_pool_in_use 1.0" in held
    # And given back, it is counted out again.
    assert "rates_api_db_pool_in_use 0.0" in client.get("/metrics").get_data(as_text=True)


def test_unknown_methods_share_one_metrics_label(client):
    for method in ("BREW", "AAAA", "ZZZZZZZZZ"):
        client.open("/rates", method=method)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rates_api_requests_total{method="other",route="<unmatched>",status="405"} 3.0' in text
    assert "BREW" not in text and "ZZZZZZZZZ" not in text


def test_request_id_is_echoed(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc123"}).headers["X-Request-ID"] == "abc123"
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32
    # Only a bounded token is taken; anything else is replaced, not echoed and logged.
    assert client.get("/healthz", headers={"X-Request-ID": "x" * 128}).headers["X-Request-ID"] == "x" * 128
    for given in ("x" * 129, "two words", "caf\u00e9"):
        answer = client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", answer), (given, answer)


def test_no_answer_may_be_sniffed_as_another_type(client):
    # A 404 quotes the path it was asked for; a browser sniffing it could run it as HTML.
    answers = [client.get("/<script>alert(1)</script>"), client.get("/rates?origin=%3Cb%3E"), client.get("/healthz"),
               client.open("/rates", method="BREW")]
    assert [a.headers.get("X-Content-Type-Options") for a in answers] == ["nosniff"] * 4
    assert all(a.mimetype == "application/json" for a in answers[:2])


def test_openapi_describes_every_route(client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes = {rule.rule for rule in client.application.url_map.iter_rules() if rule.endpoint != "static"}
    assert routes == set(document["paths"])
    # The probes' and Prometheus's are marked as such; what clients call is not.
    internal = {path for path, item in document["paths"].items() if "internal" in item["get"].get("tags", ())}
    assert internal == {"/healthz", "/readyz", "/metrics"}
    names = {p["name"] for p in document["paths"]["/rates"]["get"]["parameters"]}
    assert {"date_from", "date_to", "origin", "destination", "orig_code", "dest_code"} <= names


def test_readiness_holds_while_the_pool_is_merely_busy(settings, make_client):
    # With DB_POOL_SIZE below GUNICORN_THREADS the pool can be all lent out under load;
    # failing readiness then would take busy pods out of rotation and load the rest more.
    client = make_client(replace(settings, db_pool_size=1))
    rt = client.application.extensions["rates_api"]
    with client.application.app_context(), rt.connection():
        response = client.get("/readyz")
    assert response.status_code == 200 and response.get_json()["database"] == "busy"


def test_an_unmigrated_database_is_not_ready_and_rates_answers_503(empty_dsn, make_client):
    # Pods may start before the migration Job has run: not ready, and no 500s meanwhile.
    client = make_client(Settings.from_env({"DATABASE_URL": empty_dsn}))

    ready = client.get("/readyz")
    rates = client.get("/rates?date_from=2016-01-01&date_to=2016-01-02&origin=CNSHA&destination=NLRTM")

    assert ready.status_code == 503 and ready.get_json()["status"] == "database not migrated"
    assert rates.status_code == 503 and rates.headers["Retry-After"] == "5"
    assert rates.get_json()["error"]["code"] == "unavailable"


def test_a_missing_column_is_not_migrated_either(world, settings, make_client):
    # A deploy whose code is ahead of the schema by a column, not a table.
    with world.cursor() as cur:
        cur.execute("ALTER TABLE data_version RENAME COLUMN version TO v")
    client = make_client(settings)
    ready = client.get("/readyz")
    rates = client.get("/rates?date_from=2016-01-01&date_to=2016-01-02&origin=CNSHA&destination=NLRTM")
    assert ready.status_code == 503 and ready.get_json()["status"] == "database not migrated"
    assert rates.status_code == 503 and rates.headers["Retry-After"] == "5"


def test_an_option_libpq_refuses_is_not_ready_and_rates_answers_503(dsn, make_client):
    # The check at start reads the URL, but libpq checks an option's value only when it
    # connects: a mistyped sslmode is the server's fault, never a 500.
    settings = Settings.from_env({"DATABASE_URL": dsn + ("&" if "?" in dsn else "?") + "sslmode=bogus"})
    # A client each: after one failed opening, the pool answers the next second's requests
    # "unreachable" without trying.
    ready = make_client(settings).get("/readyz")
    rates = make_client(settings).get("/rates?date_from=2016-01-01&date_to=2016-01-02&origin=CNSHA&destination=NLRTM")
    assert ready.status_code == 503 and ready.get_json()["status"] == "database settings refused"
    assert "sslmode" in ready.get_json()["error"]
    assert rates.status_code == 503 and rates.headers["Retry-After"] == "5"
    assert rates.get_json()["error"] == {"code": "unavailable",
                                         "message": "the rates database is unavailable; retry later"}


def test_a_right_the_api_user_lacks_is_not_ready_and_rates_answers_503(world, settings, make_client):
    # A database restored without its users' rights, until the next migration gives them back.
    with world.cursor() as cur:
        cur.execute(f"REVOKE SELECT ON data_version, lane_totals, region_totals FROM {API_USER}")
    client = make_client(settings)
    ready = client.get("/readyz")
    rates = client.get("/rates?date_from=2016-01-01&date_to=2016-01-02&origin=CNSHA&destination=NLRTM")
    assert ready.status_code == 503 and ready.get_json()["status"] == "database refuses access"
    assert "permission denied" in ready.get_json()["error"]
    assert rates.status_code == 503 and rates.headers["Retry-After"] == "5"
    assert rates.get_json()["error"] == {"code": "unavailable",
                                         "message": "the rates database refuses this service's queries; retry later"}
