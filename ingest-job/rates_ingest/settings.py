"""Configuration from the environment; command-line options override the object's address.

DATABASE_URL    PostgreSQL DSN (required).
DATABASE_IAM_AUTH  true: connect with an RDS IAM token as DATABASE_URL's user (no
                password in the URL; sslmode=require); default false.
S3_BUCKET       bucket of the object to load, when --bucket is not given.
S3_OBJECT_KEY   key of the object (decoded, not URL-encoded), when --key is not given.
S3_VERSION_ID   version to load (optional); without it, the latest version.
S3_UPLOADED_BY  who uploaded it, as S3's event names them (optional), when --uploaded-by
                is not given: recorded in the run's row (ingest_runs.uploaded_by).
LOG_LEVEL       DEBUG, INFO (default), WARNING or ERROR.
INGEST_WORK_MEM PostgreSQL work_mem for the load transaction (default 64MB): the
                statement trigger keeps the file's rows in a tuplestore of this size
                before it spills to disk.
INGEST_MAX_FILE_MIB  the largest file, uncompressed, in MiB (default 2048): a larger one
                is rejected (exit 2), and so is a gzip that inflates more than 200 times.
AWS_RETRY_MODE  botocore's retry mode for S3: legacy, standard (default) or adaptive.
AWS_MAX_ATTEMPTS  S3 attempts per request, the first one included (default 5).
Other AWS settings come from boto3's standard chain (AWS_DEFAULT_REGION, which this boto3 reads
instead of AWS_REGION; AWS_ACCESS_KEY_ID, web identity, instance roles, ...);
AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3 point it at a local S3 such as moto_server.
A bad setting exits 1 (see the README: it is not the file's fault).
"""

import os
import re
from dataclasses import dataclass
from typing import Mapping

from rates_core.db import BULK_LOAD_WORK_MEM, PG_INT_MAX
from rates_core.env import ConfigError, env_choice, env_int, env_str
from rates_core.logs import LEVELS
from rates_core.rds_auth import iam_auth_enabled

from .formats import DEFAULT_MAX_FILE_BYTES

_MEMORY = re.compile(r"([1-9][0-9]{0,9})(kB|MB|GB)")
_KB_PER_UNIT = {"kB": 1, "MB": 1 << 10, "GB": 1 << 20}
# PostgreSQL's bounds for work_mem: 64kB up to INT_MAX kilobytes.
_WORK_MEM_KB = (64, PG_INT_MAX)
_RETRY_MODES = ("LEGACY", "STANDARD", "ADAPTIVE")


@dataclass(frozen=True)
class Settings:
    database_url: str
    bucket: str
    key: str
    version_id: str | None = None
    uploaded_by: str | None = None
    database_iam_auth: bool = False
    log_level: str = "INFO"
    work_mem: str = BULK_LOAD_WORK_MEM
    s3_retry_mode: str = "standard"
    s3_max_attempts: int = 5
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, bucket: str | None = None,
                 key: str | None = None, version_id: str | None = None,
                 uploaded_by: str | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        database_url = env_str("DATABASE_URL", environ=environ)
        return cls(
            database_url=database_url,
            database_iam_auth=iam_auth_enabled(database_url, environ),
            bucket=_text("S3_BUCKET", bucket or env_str("S3_BUCKET", environ=environ)),
            key=_text("S3_OBJECT_KEY", key or env_str("S3_OBJECT_KEY", environ=environ)),
            version_id=_text("S3_VERSION_ID", version_id or environ.get("S3_VERSION_ID") or None),
            uploaded_by=_text("S3_UPLOADED_BY", uploaded_by or environ.get("S3_UPLOADED_BY") or None),
            log_level=env_choice("LOG_LEVEL", "INFO", LEVELS, environ),
            work_mem=_memory("INGEST_WORK_MEM", BULK_LOAD_WORK_MEM, environ),
            # Read here, not left to botocore, so that a bad value fails at startup and
            # an empty one means the default, as for every other setting.
            s3_retry_mode=env_choice("AWS_RETRY_MODE", "STANDARD", _RETRY_MODES, environ).lower(),
            s3_max_attempts=env_int("AWS_MAX_ATTEMPTS", 5, minimum=1, maximum=20, environ=environ),
            max_file_bytes=env_int("INGEST_MAX_FILE_MIB", DEFAULT_MAX_FILE_BYTES >> 20, minimum=1,
                                   maximum=1 << 20, environ=environ) << 20,
        )


def _text(name: str, value: str | None) -> str | None:
    # Bytes that are no UTF-8 (in argv or the environment) arrive as lone surrogates, which
    # no S3 request or database row can carry: say so here rather than fail mid-run.
    if value is not None:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ConfigError(f"{name} is not valid UTF-8: {value!r}") from None
    return value


def _memory(name: str, default: str, environ: Mapping[str, str]) -> str:
    # Checked here: PostgreSQL would refuse a bad value only inside the load, as a data error.
    value = env_str(name, default, environ=environ)
    match = _MEMORY.fullmatch(value)
    low, high = _WORK_MEM_KB
    if not match or not low <= int(match[1]) * _KB_PER_UNIT[match[2]] <= high:
        raise ConfigError(f"environment variable {name} must be a size from 64kB to 2047GB, such as 64MB "
                          f"(units kB, MB or GB), got {value!r}")
    return value
