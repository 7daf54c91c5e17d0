"""Every error leaves the API as JSON: {"error": {"code": ..., "message": ...}}."""

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from rates_core.db import RightsMissing, SchemaMissing, SettingsRefused
from rates_core.errors import PermanentError, TemporaryError
from rates_core.logs import get_logger

log = get_logger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        if exc.code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(TemporaryError)
    def _temporary(exc: TemporaryError):
        # The database is down, overloaded or too slow: a retry may well succeed.
        log.warning("temporary database error", error=str(exc))
        return _unavailable("the rates database is unavailable; retry later", retry_after=1)

    @app.errorhandler(SchemaMissing)
    def _schema_missing(exc: SchemaMissing):
        # The migrations have not run yet; they will, so this is not the request's fault.
        log.error("database schema is missing or older than the code", error=str(exc))
        return _unavailable("the rates database is not migrated yet; retry later", retry_after=5)

    @app.errorhandler(RightsMissing)
    def _rights_missing(exc: RightsMissing):
        # Not the request's fault either: the API's user lacks a right (a restored database
        # before its next migration, or a wrong DATABASE_URL user).
        log.error("the database refuses the API's user", error=str(exc))
        return _unavailable("the rates database refuses this service's queries; retry later", retry_after=5)

    @app.errorhandler(SettingsRefused)
    def _settings_refused(exc: SettingsRefused):
        # The server's DATABASE_URL, not the request: the operators mend it and roll out.
        log.error("libpq refuses the API's database settings (DATABASE_URL)", error=str(exc))
        return _unavailable("the rates database is unavailable; retry later", retry_after=5)

    @app.errorhandler(PermanentError)
    def _permanent(exc: PermanentError):
        log.error("database error", error=str(exc))
        return error_response(500, "internal_error", "internal error")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")


def _unavailable(message: str, retry_after: int):
    response = error_response(503, "unavailable", message)
    response.headers["Retry-After"] = str(retry_after)
    return response
