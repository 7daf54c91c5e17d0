"""The rates HTTP API. ``create_app`` is the application factory (gunicorn calls it)."""

from .app import create_app

__all__ = ["create_app"]
