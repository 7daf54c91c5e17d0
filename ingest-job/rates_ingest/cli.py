"""``python -m rates_ingest [--bucket B --key K [--version-id V] [--uploaded-by P]]``."""

import sys

import click

from rates_core import logs
from rates_core.env import ConfigError

from . import job
from .settings import Settings
from .termination import termination

# Every line carries it, as the API's carry "rates-api".
SERVICE = "rates-ingest"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bucket", help="Bucket of the object [env S3_BUCKET].")
@click.option("--key", help="Key of the object, decoded (not URL-encoded) [env S3_OBJECT_KEY].")
@click.option("--version-id", help="Version to load [env S3_VERSION_ID]; default: the latest.")
@click.option("--uploaded-by", help="Who uploaded it, as S3's event names them (its principalId), for the run's "
                                    "record [env S3_UPLOADED_BY].")
def command(bucket: str | None, key: str | None, version_id: str | None, uploaded_by: str | None) -> int:
    """Load one uploaded price file from S3 into PostgreSQL.

    Exit status: 0 loaded or nothing to do, 2 the file is invalid or gone, 1 try again.
    """
    try:
        settings = Settings.from_env(bucket=bucket, key=key, version_id=version_id, uploaded_by=uploaded_by)
    except ConfigError as exc:
        logs.configure(service=SERVICE)
        logs.get_logger("rates_ingest").error("configuration error", error=str(exc))
        return job.EXIT_RETRY
    logs.configure(settings.log_level, service=SERVICE)
    termination.install()
    return job.run(settings)


def main(argv: list[str] | None = None) -> int:
    try:
        return command.main(args=argv, prog_name="rates_ingest", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:
        # click would exit 2, but 2 means "the file is invalid": a bad invocation is not that.
        exc.show()
        return job.EXIT_RETRY
    except click.Abort:
        return job.EXIT_RETRY
    except Exception as exc:  # noqa: BLE001 - a bug; SystemExit and KeyboardInterrupt go on as before
        # Its error is the reason the controller quotes if the file is set aside.
        logs.crashed(exc, SERVICE, "rates_ingest")
        return job.EXIT_RETRY


if __name__ == "__main__":
    sys.exit(main())
