"""RDS IAM authentication: tokens signed by botocore, a new one for every connection."""

import http.server
import threading
from urllib.parse import parse_qs

import pytest
from psycopg2 import sql

from rates_core import db, rds_auth
from rates_core.env import ConfigError, env_bool
from rates_core.errors import TemporaryError
from tests.support.aws import silent_sts, web_identity, without_credentials
from tests.support.db import as_user, autocommit
from tests.support.net import answer

IAM_URL = "postgresql://rates_api@rates.abc123.eu-west-1.rds.amazonaws.com:5432/rates?sslmode=require"
PROBE = "rates_password_probe"


def test_a_token_is_a_presigned_connect_for_the_urls_host_port_and_user(aws_env):
    token = rds_auth.token_source(IAM_URL)()
    where, _, query = token.partition("/?")
    params = parse_qs(query)
    assert where == "rates.abc123.eu-west-1.rds.amazonaws.com:5432"
    assert params["Action"] == ["connect"] and params["DBUser"] == ["rates_api"]
    assert params["X-Amz-Credential"][0].startswith("testing/") and "/eu-west-1/rds-db/aws4_request" in \
        params["X-Amz-Credential"][0]
    assert params["X-Amz-Expires"] == ["900"] and params["X-Amz-Signature"][0]


def _web_identity(aws_env, token_file) -> None:
    web_identity(aws_env, token_file, "rates-prod-api")


def test_a_missing_irsa_token_file_is_no_token_and_a_retry_may_help(aws_env, tmp_path):
    _web_identity(aws_env, tmp_path / "no-such-token")
    with pytest.raises(TemporaryError, match="no RDS IAM token for rates_api@.*no-such-token"):
        rds_auth.token_source(IAM_URL)()


@pytest.mark.timeout(60)  # botocore's defaults would hang for 3 minutes
def test_a_silent_sts_gives_up_in_seconds(aws_env, tmp_path):
    # The token is asked for under the pool's lock: every other request waits meanwhile.
    with silent_sts(aws_env, tmp_path / "token", "rates-prod-api") as sts:
        with pytest.raises(TemporaryError, match="no RDS IAM token for rates_api@"):
            rds_auth.token_source(IAM_URL)()
        assert len(sts.accepted) == 2  # it did ask STS, and tried once more only


class _RefusingSts(http.server.BaseHTTPRequestHandler):
    """STS refusing the role: the role's trust policy does not name this ServiceAccount."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
                b"<Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity"
                b"</Message></Error><RequestId>1</RequestId></ErrorResponse>")
        answer(self, 403, "text/xml", body)

    def log_message(self, *_):
        pass


def test_sts_refusing_the_role_is_no_token_and_a_retry_may_help(aws_env, tmp_path):
    # A trust policy fixed by the platform team heals without a restart; meanwhile 503s.
    (tmp_path / "token").write_text("eyJ.a.b")
    _web_identity(aws_env, tmp_path / "token")
    sts = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingSts)
    threading.Thread(target=sts.serve_forever, daemon=True).start()
    try:
        aws_env.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{sts.server_address[1]}")
        with pytest.raises(TemporaryError, match="no RDS IAM token for rates_api@.*AccessDenied"):
            rds_auth.token_source(IAM_URL)()
    finally:
        sts.shutdown()
        sts.server_close()


def test_the_token_is_signed_for_aws_region_before_the_default_region(aws_env):
    # EKS's webhook sets AWS_REGION; a stale AWS_DEFAULT_REGION in an image must not win.
    aws_env.setenv("AWS_REGION", "eu-west-1")
    aws_env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    credential = parse_qs(rds_auth.token_source(IAM_URL)().partition("/?")[2])["X-Amz-Credential"][0]
    assert "/eu-west-1/rds-db/" in credential


def test_without_credentials_there_is_no_token_and_a_retry_may_help(aws_env):
    without_credentials(aws_env)
    with pytest.raises(TemporaryError, match="no RDS IAM token for rates_api@rates.abc123"):
        rds_auth.token_source(IAM_URL)()


@pytest.mark.parametrize("url, missing", [
    ("postgresql://rates_api@/rates?host=/run/postgresql&sslmode=require", "a host name"),
    ("postgresql://db.internal/rates?sslmode=require", "a user"),
    ("postgresql://rates_api:secret@db.internal/rates?sslmode=require", "no password"),
    ("postgresql://rates_api@db.internal/rates", "sslmode=require or stricter"),
    ("postgresql://rates_api@db.internal/rates?sslmode=prefer", "sslmode=require or stricter"),
])
def test_a_url_that_cannot_take_a_token_is_refused_at_startup(aws_env, url, missing):
    with pytest.raises(ConfigError, match=missing):
        rds_auth.iam_auth_enabled(url, {"DATABASE_IAM_AUTH": "true", "AWS_REGION": "eu-west-1"})


def test_iam_authentication_is_off_unless_asked_and_needs_a_region(aws_env):
    assert rds_auth.iam_auth_enabled("postgresql://u:p@/db?host=/tmp", {}) is False
    assert rds_auth.iam_auth_enabled(IAM_URL, {"DATABASE_IAM_AUTH": "TRUE", "AWS_REGION": "eu-west-1"}) is True
    aws_env.delenv("AWS_REGION")
    aws_env.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(ConfigError, match="needs an AWS region"):
        rds_auth.iam_auth_enabled(IAM_URL, {"DATABASE_IAM_AUTH": "true"})


@pytest.mark.parametrize("raw, expected", [("", False), ("true", True), ("1", True), ("No", False)])
def test_env_bool(raw, expected):
    assert env_bool("FLAG", False, environ={"FLAG": raw}) is expected


def test_env_bool_names_the_variable():
    with pytest.raises(ConfigError, match="FLAG must be true or false, got 'on please'"):
        env_bool("FLAG", False, environ={"FLAG": "on please"})


@pytest.fixture(scope="session")
def password_checked(admin_dsn):
    """A LOGIN role that the test server makes give a password (it trusts every other user)."""
    with autocommit(admin_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW hba_file")
            hba = cur.fetchone()[0]
            original = open(hba).read()
            with open(hba, "w") as out:
                out.write(f"local all {PROBE} scram-sha-256\nhost all {PROBE} all scram-sha-256\n{original}")
            cur.execute("SELECT pg_reload_conf()")
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'first'").format(sql.Identifier(PROBE)))
        try:
            yield conn
        finally:
            with open(hba, "w") as out:
                out.write(original)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_reload_conf()")
                cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(PROBE)))


def _set_password(admin, value: str) -> None:
    with admin.cursor() as cur:
        cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(PROBE), sql.Literal(value)))


def test_the_server_does_check_the_probes_password(password_checked, dsn):
    with pytest.raises(TemporaryError, match="password authentication failed"):
        db.connect(as_user(dsn, PROBE), application_name="rds-auth-test", password=lambda: "wrong")
    db.connect(as_user(dsn, PROBE), application_name="rds-auth-test", password=lambda: "first").close()


def test_the_pool_asks_for_a_new_password_for_every_connection_it_opens(password_checked, dsn, conn):
    # As with tokens: the one that opened the first connection has expired when the
    # pool replaces a connection the server closed, an hour later.
    current = {"password": "first"}
    asked = []

    def password():
        asked.append(current["password"])
        return current["password"]

    _set_password(password_checked, "first")
    pool = db.Pool(as_user(dsn, PROBE), size=1, application_name="rds-auth-test", statement_timeout_ms=0,
                   password=password, retry_after_s=0)
    try:
        with pool.connection() as lent, lent.cursor() as cur:
            cur.execute("SELECT current_user, pg_backend_pid()")
            user, pid = cur.fetchone()
        assert user == PROBE
        _set_password(password_checked, "second")
        current["password"] = "second"
        with conn.cursor() as cur:
            # With a timeout it returns once the backend is gone, not when it was signalled.
            cur.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        with pool.connection() as lent, lent.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            assert cur.fetchone()[0] != pid
        assert asked == ["first", "second"]
    finally:
        pool.close()
        _set_password(password_checked, "first")


def test_a_pool_that_gets_no_token_says_why_and_backs_off(dsn):
    calls = []

    def no_token():
        calls.append(1)
        raise TemporaryError("no RDS IAM token for rates_api@db: Unable to locate credentials")

    pool = db.Pool(dsn, size=1, application_name="rds-auth-test", statement_timeout_ms=0, password=no_token,
                   retry_after_s=60)
    for _ in range(3):
        with pytest.raises(TemporaryError, match="Unable to locate credentials"):
            with pool.connection():
                pass
    assert len(calls) == 1  # the next two answered from the remembered failure
