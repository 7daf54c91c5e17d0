"""The baseline service for the API benchmark: the same /rates contract, answered by
one straightforward SQL query over the raw prices table (bench/naive.py), a new
connection per request and no derived tables, as the original system did."""

import json
import os

import psycopg2
from flask import Flask, Response, request

from bench import naive


def create_app() -> Flask:
    app = Flask(__name__)
    dsn = os.environ["DATABASE_URL"]

    @app.get("/rates")
    def rates():
        args = request.args
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                rows = naive.daily_averages(cur, args["origin"], args["destination"],
                                            args["date_from"], args["date_to"])
        finally:
            conn.close()
        body = [{"day": day, "average_price": avg} for day, avg in rows]
        return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")

    return app
