"""GET /openapi.json: the OpenAPI 3 description of every endpoint.

The probes' and Prometheus's endpoints are tagged ``internal``: the chart's Ingress does
not forward them, so a client outside the cluster gets 404 there.
"""

from flask import Blueprint, jsonify
from .params import PLACE_MAX
from .runtime import runtime

bp = Blueprint("openapi", __name__)

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, description: str, schema: dict, required: bool = True, example=None) -> dict:
    param = {"name": name, "in": "query", "required": required, "description": description,
             "schema": schema}
    return param if example is None else {**param, "example": example}


_PLACE = {"type": "string", "minLength": 1, "maxLength": PLACE_MAX, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"}
_DATE = {"type": "string", "format": "date"}

_RATES = {
    "summary": "Average price per day between two ports or regions",
    "description": (f"Each of origin and destination is a port code or a region slug (1 to {PLACE_MAX} "
                    "characters, matched exactly); a region covers every port below it at any depth. "
                    "A name that is both a port code and a region slug means the port. average_price is the mean "
                    "of all prices that day over every (origin port, destination port) pair, "
                    "rounded half away from zero, or null when fewer than 3 prices exist."),
    "parameters": [
        # The examples are the README's query, which `make up`'s demo data answers. OpenAPI 3.0
        # cannot say "origin or orig_code is required", so neither is marked required.
        _param("date_from", "First day, inclusive (YYYY-MM-DD)", _DATE, example="2024-01-01"),
        _param("date_to", "Last day, inclusive (YYYY-MM-DD)", _DATE, example="2024-01-07"),
        _param("origin", "Port code or region slug; required, as origin or as orig_code", _PLACE,
               required=False, example="CNSHA"),
        _param("destination", "Port code or region slug; required, as destination or as dest_code",
               _PLACE, required=False, example="NLRTM"),
        _param("orig_code", "Alias of origin, for older clients", _PLACE, required=False),
        _param("dest_code", "Alias of destination, for older clients", _PLACE, required=False),
    ],
    "responses": {
        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/DailyAverage"}},
                     "One entry per day from date_from to date_to, ascending"),
        "400": _json(_ERROR, "Missing or malformed parameter, impossible date, reversed or too long range"),
        "404": _json(_ERROR, "Origin or destination is no known port or region"),
        "503": {**_json(_ERROR, "The database is unavailable, too slow or not migrated yet; retry later"),
                "headers": {"Retry-After": {"required": True, "description": "Seconds to wait before retrying",
                                            "schema": {"type": "integer", "minimum": 1}}}},
    },
}


INTERNAL = "internal"


def _internal(operation: dict) -> dict:
    return {**operation, "tags": [INTERNAL]}


def document(version: str) -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "Rates API", "version": version},
        "paths": {
            "/rates": {"get": _RATES},
            "/": {"get": {"summary": "Service identity and version", "responses": {
                "200": _json({"$ref": "#/components/schemas/Service"}, "Service identity")}}},
            "/healthz": {"get": _internal({"summary": "Liveness: the process answers and none of its requests "
                                                      "has hung (no database call)",
                                 "responses": {"200": _json({"$ref": "#/components/schemas/Status"}, "Alive"),
                                               "503": _json({"$ref": "#/components/schemas/Status"}, "Hung")}})},
            "/readyz": {"get": _internal({"summary": "Readiness: the database is reachable and migrated, and no shutdown has begun",
                                "responses": {
                                    "200": _json({"$ref": "#/components/schemas/Status"}, "Ready"),
                                    "503": _json({"$ref": "#/components/schemas/Status"}, "Not ready")}})},
            "/metrics": {"get": _internal({"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}})},
            "/openapi.json": {"get": {"summary": "This document", "responses": {
                "200": _json({"type": "object"}, "OpenAPI 3 document")}}},
        },
        "tags": [{"name": INTERNAL, "description": "For probes and Prometheus inside the cluster; "
                                                   "the load balancer does not forward them"}],
        "components": {"schemas": {
            "DailyAverage": {"type": "object", "required": ["day", "average_price"], "properties": {
                "day": _DATE, "average_price": {"type": "integer", "nullable": True}}},
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            "Service": {"type": "object", "properties": {
                "service": {"type": "string"}, "version": {"type": "string"}, "message": {"type": "string"}}},
            "Status": {"type": "object", "properties": {
                "status": {"type": "string"},
                "database": {"type": "string", "description": "busy: every pooled connection is in use"},
                "error": {"type": "string"},
                "oldest_request_s": {"type": "number", "description": "hung: seconds the oldest request has run"}}},
        }},
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document(runtime().settings.app_version))
