"""Command line entry point. The commands are in commands.py (their work in demodata.py
and localdb.py) and the k8s-tools group in k8s_tools.py."""

import click

from rates_core.db import API_USER, INGEST_USER, RightsMissing, SchemaMissing
from rates_core.env import ConfigError
from rates_core.errors import EXIT_PERMANENT, EXIT_TEMPORARY, PermanentError, TemporaryError

from .terminal import printable


class Failed(click.ClickException):
    """A command failed; exit 1 if a retry may help, 2 if it cannot (as the ingest job does)."""

    def __init__(self, message: str, exit_code: int):
        # libpq's messages run over lines (a hint on the next): one line for a log. Any
        # other control or format character is escaped (a \u202e would reverse the line);
        # an uploader's key was shown() where the message was made.
        super().__init__(printable(" ".join(message.split())))
        self.exit_code = exit_code


class Group(click.Group):
    """Turns the platform's classified errors into one line and an exit code, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TemporaryError as exc:
            raise Failed(f"{exc} (this may pass on retry)", EXIT_TEMPORARY) from exc
        except SchemaMissing as exc:
            raise Failed(f"{exc} (the database's schema is older than this ratesctl: apply the migrations, "
                         "`ratesctl migrate`, or use the ratesctl of the release it runs)", EXIT_PERMANENT) from exc
        except RightsMissing as exc:  # "permission denied for table prices" named no user to use
            raise Failed(f"{exc} ({rights_needed(ctx.invoked_subcommand)})", EXIT_PERMANENT) from exc
        except PermanentError as exc:
            raise Failed(str(exc), EXIT_PERMANENT) from exc
        except ConfigError as exc:  # a mistyped variable: one line, as for a bad invocation
            raise Failed(str(exc), EXIT_PERMANENT) from None


# The user the schema's owner is: the migrations and the edits of data only it may make.
SCHEMA_OWNER = ("the schema's owner (on RDS the master user, rates_admin; under `make up` postgres), "
                f"not {API_USER} or {INGEST_USER}")


def rights_needed(command: str | None) -> str:
    """Which database user ``command`` needs, for a refusal of the database (README,
    "Database users")."""
    if command == "reconcile":  # it reads ingest_files and ingest_runs, and writes nothing
        return (f"reconcile needs a user that may read ingest_files and ingest_runs: DATABASE_URL as the schema's "
                f"owner or {INGEST_USER}, whose rights `ratesctl migrate` gives back after a restore from a dump")
    return f"this command needs the schema owner's rights: DATABASE_URL as {SCHEMA_OWNER}"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Commands for the rates platform: local development (up, serve, demo-data,
    k8s-tools) and operations on $DATABASE_URL (migrate, reconcile, withdraw).

    Exit status: 0 done, 1 failed and a retry may help (the database unreachable, a lock
    held), 2 a retry cannot help (a mistyped option or setting, a refusal, a failing migration).
    """


from . import commands  # noqa: E402

cli.add_command(commands.migrate_command)
cli.add_command(commands.demo_data_command)
cli.add_command(commands.serve_command)
cli.add_command(commands.up_command)
cli.add_command(commands.reconcile_command)
cli.add_command(commands.withdraw_command)

from .k8s_tools import k8s_tools  # noqa: E402
cli.add_command(k8s_tools)

# Commands that apply migrations: a Ctrl-C between a migration's commit and its record
# would leave it applied but not recorded, and the next run failing on it.
_MIGRATING_COMMANDS = ("migrate", "demo-data")


def main() -> None:
    """The ``ratesctl`` program. Signals are handled for the process as a whole, so here
    and not in the commands, which tests also run inside their own process."""
    import sys

    from rates_core import migrate

    if [arg for arg in sys.argv[1:] if not arg.startswith("-")][:1] in ([c] for c in _MIGRATING_COMMANDS):
        migrate.stop_on_termination()  # as the migration hook's command does
    cli()


if __name__ == "__main__":
    main()
