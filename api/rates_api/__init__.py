"""The rates HTTP API. ``create_app`` is the application factory (gunicorn calls it).

Imported lazily: gunicorn's master imports rates_api.worker (its worker class) before it
has set PROMETHEUS_MULTIPROC_DIR, and the app imports prometheus_client, which must first
be imported after that (see rates_api.worker).
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
