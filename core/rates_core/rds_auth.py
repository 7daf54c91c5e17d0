"""RDS IAM database authentication: a fresh token as the password of each new connection.

With DATABASE_IAM_AUTH=true, DATABASE_URL names a database user (granted ``rds_iam``)
but no password; every connection opened gets a token that boto3 signs with the pod's
own AWS credentials (IRSA). A token is valid for opening connections for 15 minutes,
and an open connection outlives it, so nothing has to be refreshed, restarted or
rotated: no database password exists for the application at all.
"""

import os
import threading
from typing import Callable, Mapping

from .db import parse_url
from .env import ConfigError, env_bool
from .errors import PermanentError, TemporaryError

ENV_NAME = "DATABASE_IAM_AUTH"
# RDS refuses a token over a plain connection; these modes never fall back to one.
_TLS_MODES = {"require", "verify-ca", "verify-full"}


def iam_auth_enabled(dsn: str, environ: Mapping[str, str] | None = None) -> bool:
    """DATABASE_IAM_AUTH, with DATABASE_URL checked against it so that a bad pairing
    fails at startup rather than at the first connection."""
    enabled = env_bool(ENV_NAME, False, environ=environ)
    if enabled:
        check_url(dsn)
        if not _region(os.environ if environ is None else environ):
            raise ConfigError(f"{ENV_NAME}=true needs an AWS region (AWS_REGION)")
    return enabled


def _region(environ: Mapping[str, str]) -> str | None:
    """The token is signed for this region, the database's. botocore itself reads only
    AWS_DEFAULT_REGION; AWS_REGION is what the other SDKs and EKS's webhook set."""
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    import botocore.session  # only where IAM authentication is used; reads ~/.aws/config too

    return botocore.session.get_session().get_config_variable("region")


def check_url(dsn: str) -> tuple[str, int, str]:
    """The host, port and user a token is for; a ConfigError if the URL cannot take one."""
    params = _parse(dsn)
    problems = []
    if not params.get("host") or params["host"].startswith("/"):
        problems.append("a host name (the RDS endpoint)")
    if not params.get("user"):
        problems.append("a user")
    if params.get("password"):
        problems.append("no password (the token is the password)")
    if params.get("sslmode") not in _TLS_MODES:
        problems.append("sslmode=require or stricter")
    port = params.get("port", "5432")
    if not port.isdigit():
        problems.append("a numeric port")
    if problems:
        raise ConfigError(f"{ENV_NAME}=true needs a database URL with " + ", ".join(problems))
    return params["host"], int(port), params["user"]


def holds_password(dsn: str) -> bool:
    return bool(_parse(dsn).get("password"))


def _parse(dsn: str) -> dict:
    try:
        return parse_url(dsn)
    except PermanentError as exc:
        raise ConfigError(f"not a valid libpq URL: {exc}") from None


def password_source(dsn: str, iam_auth: bool) -> Callable[[], str] | None:
    """What rates_core.db takes as ``password``: tokens with IAM authentication, else None."""
    return token_source(dsn) if iam_auth else None


def token_source(dsn: str) -> Callable[[], str]:
    """A callable returning a new token for the DSN's host, port and user.

    The client is made on first use, in the process that connects (gunicorn forks
    workers after the app is configured).
    """
    host, port, user = check_url(dsn)
    lock = threading.Lock()
    clients: list = []

    def client():
        with lock:
            if not clients:
                from . import aws  # botocore, only where IAM authentication is used

                clients.append(aws.session().create_client("rds", region_name=_region(os.environ)))
            return clients[0]

    def token() -> str:
        import botocore.exceptions

        try:
            return client().generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as exc:
            # STS unavailable, no role (no credentials), or IRSA's token file missing or
            # unreadable: not the database's fault, and a retry may find it fixed.
            raise TemporaryError(f"no RDS IAM token for {user}@{host}: {exc}") from exc

    return token
