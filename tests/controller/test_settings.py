import json

import pytest

from rates_controller.settings import Settings
from rates_core.env import ConfigError

REQUIRED = {"QUEUE_URL": "http://q/uploads", "DEAD_LETTER_QUEUE_URL": "http://q/dead", "JOB_IMAGE": "img",
            "JOB_NAMESPACE": "prod"}


def test_defaults():
    settings = Settings.from_env(REQUIRED)
    assert (settings.max_active_jobs, settings.max_attempts, settings.poll_wait_seconds) == (4, 6, 20)
    assert (settings.job.namespace, settings.job.service_account, settings.job.env) == ("prod", "rates-ingest", {})


def test_by_default_a_file_is_retried_through_a_half_hour_outage():
    # The README's "about 40 minutes": the waits between a file's Jobs (the controller's)
    # and between a Job's pod tries (the Job controller's 10 s, doubling), not counting
    # the tries themselves.
    settings = Settings.from_env(REQUIRED)
    between_jobs = sum(settings.retry_delay_seconds * 2 ** n for n in range(settings.max_attempts - 1))
    within_jobs = settings.max_attempts * sum(10 * 2 ** n for n in range(settings.job.backoff_limit))
    assert 30 * 60 <= between_jobs + within_jobs <= 45 * 60


def test_the_namespace_defaults_to_the_pods_own():
    env = {k: v for k, v in REQUIRED.items() if k != "JOB_NAMESPACE"}
    assert Settings.from_env({**env, "POD_NAMESPACE": "staging"}).job.namespace == "staging"


@pytest.mark.parametrize("name, value, message", [
    ("QUEUE_URL", "", "QUEUE_URL is required"),
    ("MAX_ACTIVE_JOBS", "0", "MAX_ACTIVE_JOBS must be >= 1"),
    ("POLL_WAIT_SECONDS", "21", "POLL_WAIT_SECONDS must be <= 20"),
    ("POLL_WAIT_SECONDS", "0", "POLL_WAIT_SECONDS must be >= 1"),
    ("VISIBILITY_TIMEOUT", "0", "VISIBILITY_TIMEOUT must be >= 10"),
    ("MAX_ATTEMPTS", "101", "MAX_ATTEMPTS must be <= 100"),
    ("JOB_ENV", '{"A=B": "x"}', "names Kubernetes refuses: A=B"),
    ("JOB_ENV", "[1]", "JOB_ENV must be a JSON object of strings"),
    ("JOB_ENV", '{"A": 1}', "JOB_ENV must be a JSON object of strings"),
    ("JOB_ENV", '{"DATABASE_URL": "x"}', "may not set DATABASE_URL"),
    ("JOB_ENV", '{"DATABASE_IAM_AUTH": "true"}', "may not set DATABASE_IAM_AUTH"),
    # The Job names its file with these, from the event: a second value would load another.
    ("JOB_ENV", '{"S3_BUCKET": "other"}', "may not set S3_BUCKET"),
    ("JOB_ENV", '{"S3_OBJECT_KEY": "other.csv"}', "may not set S3_OBJECT_KEY"),
    ("JOB_ENV", '{"S3_VERSION_ID": "v1"}', "may not set S3_VERSION_ID"),
    # The Job says who uploaded its file, from the event: JOB_ENV would name one for all.
    ("JOB_ENV", '{"S3_UPLOADED_BY": "AWS:AIDAEXAMPLE"}', "may not set S3_UPLOADED_BY"),
    ("JOB_DATABASE_URL", "postgresql://u:secret@db/rates", "JOB_DATABASE_URL may not hold a password"),
    ("JOB_DATABASE_URL", "postgresql://u@db/rates?sslmod=require", "JOB_DATABASE_URL: not a valid libpq URL"),
    ("JOB_DATABASE_IAM_AUTH", "true", "JOB_DATABASE_IAM_AUTH=true needs JOB_DATABASE_URL"),
    ("JOB_DATABASE_IAM_AUTH", "maybe", "JOB_DATABASE_IAM_AUTH must be true or false"),
    ("JOB_SCHEDULING", "[1]", "JOB_SCHEDULING must be a JSON object"),
    ("JOB_SCHEDULING", "{nodeSelector: 1}", "JOB_SCHEDULING must be a JSON object"),
    ("JOB_SCHEDULING", '{"containers": [], "nodeName": "n1"}', "may only set .*; not containers, nodeName"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL must be one of"),
])
def test_bad_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**REQUIRED, name: value})


def test_iam_authentication_for_the_jobs_needs_a_url_that_can_take_a_token():
    with pytest.raises(ConfigError, match="JOB_DATABASE_URL: .* sslmode=require"):
        Settings.from_env({**REQUIRED, "JOB_DATABASE_IAM_AUTH": "true",
                           "JOB_DATABASE_URL": "postgresql://rates_ingest@db.internal/rates"})
    url = "postgresql://rates_ingest@db.internal/rates?sslmode=require"
    job = Settings.from_env({**REQUIRED, "JOB_DATABASE_IAM_AUTH": "true", "JOB_DATABASE_URL": url}).job
    assert (job.database_url, job.database_iam_auth) == (url, True)


def test_job_env_is_read():
    settings = Settings.from_env({**REQUIRED, "JOB_ENV": '{"AWS_REGION": "eu-west-1"}'})
    assert settings.job.env == {"AWS_REGION": "eu-west-1"}


@pytest.mark.parametrize("name", [
    "PGPASSWORD", "PGPASSFILE", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
    "AWS_SECURITY_TOKEN", "SMTP_PASSWORD", "api_token", "Client_Secret",
])
def test_job_env_may_not_set_a_secret_that_every_job_would_show(name):
    # As JOB_DATABASE_URL's password: anyone who may read Jobs would read it.
    with pytest.raises(ConfigError, match=f"JOB_ENV may not set {name}: every Job would show"):
        Settings.from_env({**REQUIRED, "JOB_ENV": json.dumps({"AWS_DEFAULT_REGION": "eu-west-1", name: "x"})})


def test_job_env_names_every_secret_it_refuses():
    env = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_REGION": "eu-west-1"}
    with pytest.raises(ConfigError, match="may not set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: "):
        Settings.from_env({**REQUIRED, "JOB_ENV": json.dumps(env)})


def test_job_env_may_set_names_that_only_look_like_secrets_or_fake_credentials_when_allowed():
    irsa = {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}
    assert Settings.from_env({**REQUIRED, "JOB_ENV": json.dumps(irsa)}).job.env == irsa
    # moto's, in k8s/local and the tests.
    fake = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local"}
    allowed = Settings.from_env({**REQUIRED, "JOB_ENV": json.dumps(fake), "JOB_ENV_ALLOW_SECRETS": "true"})
    assert allowed.job.env == fake


def test_job_scheduling_is_read():
    scheduling = {"nodeSelector": {"workload": "batch"},
                  "tolerations": [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}],
                  "priorityClassName": "batch-low"}
    settings = Settings.from_env({**REQUIRED, "JOB_SCHEDULING": json.dumps(scheduling)})
    assert settings.job.scheduling == scheduling
