"""The job's settings from the environment."""

import pytest

from rates_core.env import ConfigError
from rates_ingest.settings import Settings


@pytest.mark.parametrize("value", ["64MB", "512kB", "1GB", "64kB", "2047GB"])
def test_work_mem_accepts_postgres_sizes(value):
    settings = Settings.from_env({"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k",
                                  "INGEST_WORK_MEM": value})
    assert settings.work_mem == value


@pytest.mark.parametrize("value", ["64", "64mb", "0MB", "64MB; DROP TABLE prices", "-1GB", "1kB", "63kB",
                                   "2048GB", "4000GB", "99999999999999999999MB"])
def test_work_mem_rejects_anything_else_at_startup(value):
    with pytest.raises(ConfigError, match="INGEST_WORK_MEM"):
        Settings.from_env({"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k",
                           "INGEST_WORK_MEM": value})


@pytest.mark.parametrize("value, level", [("", "INFO"), ("debug", "DEBUG"), ("Warning", "WARNING")])
def test_log_level_is_one_of_the_documented_levels_in_any_case(value, level):
    settings = Settings.from_env({"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k",
                                  "LOG_LEVEL": value})
    assert settings.log_level == level


@pytest.mark.parametrize("value", ["verbose", "TRACE", "10", "CRITICAL"])
def test_any_other_log_level_is_refused_at_startup(value):
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Settings.from_env({"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k",
                           "LOG_LEVEL": value})


@pytest.mark.parametrize("env, mode, attempts", [
    ({}, "standard", 5),
    ({"AWS_RETRY_MODE": "", "AWS_MAX_ATTEMPTS": ""}, "standard", 5),
    ({"AWS_RETRY_MODE": "Adaptive", "AWS_MAX_ATTEMPTS": "2"}, "adaptive", 2),
])
def test_s3_retries_come_from_the_standard_variables(env, mode, attempts):
    settings = Settings.from_env({"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k", **env})
    assert (settings.s3_retry_mode, settings.s3_max_attempts) == (mode, attempts)


@pytest.mark.parametrize("env", [{"AWS_RETRY_MODE": "fast"}, {"AWS_MAX_ATTEMPTS": "0"},
                                 {"AWS_MAX_ATTEMPTS": "five"}])
def test_bad_s3_retry_settings_are_refused_at_startup(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env({"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k", **env})


def test_the_file_size_limit_is_read_in_mib_and_refused_when_bad():
    base = {"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k"}
    assert Settings.from_env(base).max_file_bytes == 2 << 30
    assert Settings.from_env({**base, "INGEST_MAX_FILE_MIB": "300"}).max_file_bytes == 300 << 20
    for bad in ("0", "2GB", "-1"):
        with pytest.raises(ConfigError, match="INGEST_MAX_FILE_MIB"):
            Settings.from_env({**base, "INGEST_MAX_FILE_MIB": bad})


def test_who_uploaded_the_file_is_read_as_the_objects_address_is():
    base = {"DATABASE_URL": "postgresql:///x", "S3_BUCKET": "b", "S3_OBJECT_KEY": "k"}
    assert Settings.from_env(base).uploaded_by is None
    assert Settings.from_env({**base, "S3_UPLOADED_BY": ""}).uploaded_by is None
    assert Settings.from_env({**base, "S3_UPLOADED_BY": "AWS:AIDAEXAMPLE"}).uploaded_by == "AWS:AIDAEXAMPLE"
    # The option wins, as --bucket and --key do.
    assert Settings.from_env({**base, "S3_UPLOADED_BY": "AWS:AIDAEXAMPLE"},
                             uploaded_by="AWS:AROAEXAMPLE:jane").uploaded_by == "AWS:AROAEXAMPLE:jane"
    with pytest.raises(ConfigError, match="S3_UPLOADED_BY is not valid UTF-8"):
        Settings.from_env({**base, "S3_UPLOADED_BY": "AWS:\udcff"})
