"""Configuration from the environment.

QUEUE_URL                  SQS queue that receives the bucket's ObjectCreated events (required).
DEAD_LETTER_QUEUE_URL      SQS queue where files that will not load are set aside, each
                           message with the reason (required).
UPLOADS_BUCKET             the bucket whose uploads are loaded; an event for another bucket
UPLOADS_PREFIX             or, with a prefix, for a key outside it is set aside as a poison
                           message (default "": any bucket, any key).
JOB_NAMESPACE              namespace of the ingest Jobs (default: POD_NAMESPACE, then the
                           service account's namespace when in a cluster).
JOB_IMAGE                  the ingest job's image (required).
JOB_SERVICE_ACCOUNT        service account of the Jobs' pods; its IAM role reads the bucket
                           (default rates-ingest).
DATABASE_SECRET            Secret with the database URL for the Jobs (default rates-database),
DATABASE_SECRET_KEY        and its key (default url).
JOB_DATABASE_URL           the Jobs' database URL written into each Job instead, when it holds
                           no password (with JOB_DATABASE_IAM_AUTH); default: from the Secret.
JOB_DATABASE_IAM_AUTH      true: the Jobs connect with RDS IAM tokens as JOB_DATABASE_URL's
                           user (their DATABASE_IAM_AUTH); default false.
JOB_ENV                    extra environment for the Jobs, a JSON object of strings, e.g.
                           {"AWS_DEFAULT_REGION": "eu-west-1"} (default {}); not names that
                           carry secrets (SECRET_NAMES, or PASSWORD, SECRET or TOKEN in
                           them), which every Job would show.
JOB_ENV_ALLOW_SECRETS      true: JOB_ENV may set them all the same, for the fake credentials
                           of a local S3 such as moto (k8s/local, the tests); default false.
JOB_SCHEDULING             where the Jobs' pods may run: a JSON object with any of nodeSelector,
                           tolerations, affinity, priorityClassName and
                           topologySpreadConstraints, as in a pod spec (default {}).
JOB_CPU_REQUEST, JOB_MEMORY_REQUEST, JOB_MEMORY_LIMIT
                           the Jobs' resources (default 100m, 192Mi, 384Mi).
MAX_ACTIVE_JOBS            Jobs running at once; no message is taken while this many run (default 4).
JOB_BACKOFF_LIMIT          pod retries within one Job for a failure that may pass (default 3).
JOB_DEADLINE_SECONDS       a Job's activeDeadlineSeconds (default 3600).
JOB_TTL_SECONDS            how long ended Jobs stay for inspection once the controller has acted
                           on them (default 86400).
MAX_ATTEMPTS               Jobs per file before it is set aside, 1-100 (default 6: with the
                           other defaults about 40 minutes of retries, through a database
                           or S3 outage of that long).
RETRY_DELAY_SECONDS        wait before the next Job of a file, doubled each attempt, at most a
                           day (default 60).
MAX_RECEIVES               deliveries of a message whose Job cannot be created before it is
                           set aside (default 10).
POLL_WAIT_SECONDS          SQS long-poll wait, 1-20 (default 20).
VISIBILITY_TIMEOUT         seconds a received message stays hidden from other consumers (default 60, 10 to 43200).
METRICS_PORT               port of /metrics and /healthz (default 9090; 0 turns them off).
LOG_LEVEL                  DEBUG, INFO (default), WARNING or ERROR.

Kubernetes access comes from the pod's service account in a cluster, else from KUBECONFIG.
AWS settings come from boto3's standard chain; AWS_ENDPOINT_URL points it at a local SQS.
"""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from rates_core import rds_auth
from rates_core.env import ConfigError, env_bool, env_choice, env_int, env_str
from rates_core.logs import LEVELS

# The pod spec fields JOB_SCHEDULING may set: where a pod runs, nothing about what it runs.
SCHEDULING_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "topologySpreadConstraints")
# Names whose values are secrets, besides any with PASSWORD, SECRET or TOKEN in them. A
# Job's spec is in plain text to anyone who may read Jobs, as JOB_DATABASE_URL's password is.
SECRET_NAMES = frozenset({"PGPASSWORD", "PGPASSFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                          "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"})
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN")
# Named like secrets, holding none: the path of IRSA's token file, which EKS sets itself.
NOT_SECRETS = frozenset({"AWS_WEB_IDENTITY_TOKEN_FILE"})
# What Kubernetes accepts as an environment variable's name.
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class JobSettings:
    """What every ingest Job gets."""

    namespace: str
    image: str
    service_account: str = "rates-ingest"
    database_secret: str = "rates-database"
    database_secret_key: str = "url"
    # Written into every Job as is, so never with a password; "" means from the Secret.
    database_url: str = ""
    database_iam_auth: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    scheduling: Mapping[str, object] = field(default_factory=dict)
    cpu_request: str = "100m"
    memory_request: str = "192Mi"
    memory_limit: str = "384Mi"
    backoff_limit: int = 3
    deadline_seconds: int = 3600
    ttl_seconds: int = 86400


@dataclass(frozen=True)
class Settings:
    queue_url: str
    dead_letter_queue_url: str
    job: JobSettings
    uploads_bucket: str = ""
    uploads_prefix: str = ""
    max_active_jobs: int = 4
    max_attempts: int = 6
    retry_delay_seconds: int = 60
    max_receives: int = 10
    poll_wait_seconds: int = 20
    visibility_timeout: int = 60
    metrics_port: int = 9090
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        return cls(
            queue_url=env_str("QUEUE_URL", environ=environ),
            dead_letter_queue_url=env_str("DEAD_LETTER_QUEUE_URL", environ=environ),
            job=_job_settings(environ),
            uploads_bucket=env_str("UPLOADS_BUCKET", "", environ),
            uploads_prefix=env_str("UPLOADS_PREFIX", "", environ),
            max_active_jobs=env_int("MAX_ACTIVE_JOBS", 4, minimum=1, environ=environ),
            max_attempts=env_int("MAX_ATTEMPTS", 6, minimum=1, maximum=100, environ=environ),
            retry_delay_seconds=env_int("RETRY_DELAY_SECONDS", 60, minimum=0, environ=environ),
            max_receives=env_int("MAX_RECEIVES", 10, minimum=1, environ=environ),
            # At least 1 s: a zero wait would turn an empty queue into a busy loop.
            poll_wait_seconds=env_int("POLL_WAIT_SECONDS", 20, minimum=1, maximum=20, environ=environ),
            visibility_timeout=env_int("VISIBILITY_TIMEOUT", 60, minimum=10, maximum=43200, environ=environ),
            metrics_port=env_int("METRICS_PORT", 9090, minimum=0, maximum=65535, environ=environ),
            log_level=env_choice("LOG_LEVEL", "INFO", LEVELS, environ),
        )


def _job_settings(environ: Mapping[str, str]) -> JobSettings:
    return JobSettings(
        namespace=env_str("JOB_NAMESPACE", environ.get("POD_NAMESPACE") or _own_namespace(), environ),
        image=env_str("JOB_IMAGE", environ=environ),
        service_account=env_str("JOB_SERVICE_ACCOUNT", "rates-ingest", environ),
        database_secret=env_str("DATABASE_SECRET", "rates-database", environ),
        database_secret_key=env_str("DATABASE_SECRET_KEY", "url", environ),
        **_job_database(environ),
        env=_job_env(environ),
        scheduling=_job_scheduling(environ),
        cpu_request=env_str("JOB_CPU_REQUEST", "100m", environ),
        memory_request=env_str("JOB_MEMORY_REQUEST", "192Mi", environ),
        memory_limit=env_str("JOB_MEMORY_LIMIT", "384Mi", environ),
        backoff_limit=env_int("JOB_BACKOFF_LIMIT", 3, minimum=0, environ=environ),
        deadline_seconds=env_int("JOB_DEADLINE_SECONDS", 3600, minimum=1, environ=environ),
        ttl_seconds=env_int("JOB_TTL_SECONDS", 86400, minimum=0, environ=environ),
    )


def _own_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


def _job_database(environ: Mapping[str, str]) -> dict:
    url = env_str("JOB_DATABASE_URL", "", environ)
    iam_auth = env_bool("JOB_DATABASE_IAM_AUTH", False, environ)
    if iam_auth and not url:
        raise ConfigError("JOB_DATABASE_IAM_AUTH=true needs JOB_DATABASE_URL (the user the Jobs connect as)")
    try:
        if iam_auth:
            rds_auth.check_url(url)
        has_password = bool(url) and rds_auth.holds_password(url)
    except ConfigError as exc:
        raise ConfigError(f"JOB_DATABASE_URL: {exc}") from None
    if has_password:
        raise ConfigError("JOB_DATABASE_URL may not hold a password (every Job would show it); "
                          "use DATABASE_SECRET, or IAM authentication")
    return {"database_url": url, "database_iam_auth": iam_auth}


def _job_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = _string_map("JOB_ENV", environ)
    # The Job sets these from the event and the Secret; a second value would be ambiguous.
    reserved = sorted(set(env) & {"S3_BUCKET", "S3_OBJECT_KEY", "S3_VERSION_ID", "S3_UPLOADED_BY", "DATABASE_URL",
                                  rds_auth.ENV_NAME})
    if reserved:
        raise ConfigError(f"environment variable JOB_ENV may not set {', '.join(reserved)}: the Job sets them")
    invalid = sorted(name for name in env if not _ENV_NAME.fullmatch(name))
    if invalid:
        raise ConfigError(f"environment variable JOB_ENV has names Kubernetes refuses: {', '.join(invalid)}")
    secrets = _secret_names(env)
    if secrets and not env_bool("JOB_ENV_ALLOW_SECRETS", False, environ):
        raise ConfigError(f"environment variable JOB_ENV may not set {', '.join(secrets)}: every Job would "
                          "show their values to anyone who may read Jobs; give the Jobs' service account an IAM role "
                          "(IRSA), or the database URL by DATABASE_SECRET (JOB_ENV_ALLOW_SECRETS=true only "
                          "for the fake credentials of a local S3)")
    return env


def _secret_names(env: Mapping[str, str]) -> list[str]:
    # Case-insensitively: aws_secret_access_key is read too (by the AWS CLI's own config, say).
    return sorted(name for name in env if name.upper() not in NOT_SECRETS and (
        name.upper() in SECRET_NAMES or any(word in name.upper() for word in SECRET_WORDS)))


def _job_scheduling(environ: Mapping[str, str]) -> dict[str, object]:
    # Only the shape is checked here; the values are the API server's to judge, and the
    # controller's startup dry run asks it (cli.py).
    value = _json_object("JOB_SCHEDULING", environ, "a JSON object", '{"nodeSelector": {"workload": "batch"}}')
    unknown = sorted(set(value) - set(SCHEDULING_FIELDS))
    if unknown:
        raise ConfigError(f"environment variable JOB_SCHEDULING may only set {', '.join(SCHEDULING_FIELDS)}; "
                          f"not {', '.join(unknown)}")
    return value


def _string_map(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    return _json_object(name, environ, "a JSON object of strings", '{"AWS_DEFAULT_REGION": "eu-west-1"}',
                        values_are=str)


def _json_object(name: str, environ: Mapping[str, str], what: str, example: str,
                 values_are: type = object) -> dict:
    """The variable as a JSON object (default {}), or a ConfigError saying ``what`` it must be."""
    raw = env_str(name, "{}", environ)
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, values_are) for v in value.values()):
        raise ConfigError(f"environment variable {name} must be {what}, such as {example}, got {raw!r}")
    return value
