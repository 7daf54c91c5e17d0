"""Command line entry point. Each command lives in the module named after what it does."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Developer commands for the rates platform."""
