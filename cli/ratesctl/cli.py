"""Command line entry point. Each command lives in the module named after what it does."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Developer commands for the rates platform."""


from . import commands  # noqa: E402

cli.add_command(commands.migrate_command)
cli.add_command(commands.demo_data_command)
cli.add_command(commands.serve_command)
cli.add_command(commands.up_command)

from .k8s_tools import k8s_tools  # noqa: E402
cli.add_command(k8s_tools)

if __name__ == "__main__":
    cli()
